"""OpenTelemetry traces (GenAI semantic conventions), exported over OTLP/HTTP.

``config/tracing.py`` reads the standard ``OTEL_*`` variables; ``spans`` is what the request
path calls (no OpenTelemetry import: with tracing off it does nothing); ``tracer`` is the SDK
edge (the only place the SDK's tracer and propagator are touched) and ``export`` the exporter
task the supervisor owns. Only this package imports ``opentelemetry``.
"""
