"""In-process fake upstream providers for AILB's end-to-end tests."""
