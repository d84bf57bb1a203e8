"""Upstream providers: one class per wire format, each built around an injected HTTP client."""
