"""The OpenTelemetry SDK edge: spans made by the SDK's tracer (ids, sampling, limits), ended
spans handed to AILB's own exporter (:mod:`ailb.telemetry.export`), W3C trace context read
from the client and written for the upstream.

The provider is AILB's own object, never installed as the process-wide global (nothing else
in the process, chromadb included, emits spans through it), and it has no span processor
thread: a span that ends is offered to the exporter's bounded buffer, in the Trio thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, cast

from opentelemetry import trace
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider, sampling
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from ailb.config.tracing import TracingSettings
from ailb.keys.auth import HeaderSource
from ailb.telemetry.spans import Kind, Span, Value

_KINDS: Final = {"internal": SpanKind.INTERNAL, "client": SpanKind.CLIENT}


def sampler(settings: TracingSettings) -> sampling.Sampler:
    """The sampler OTEL_TRACES_SAMPLER (and _ARG) name."""
    name = settings.sampler.removeprefix("parentbased_")
    root: sampling.Sampler = (sampling.ALWAYS_ON if name == "always_on" else
                              sampling.ALWAYS_OFF if name == "always_off" else
                              sampling.TraceIdRatioBased(settings.sampler_arg))
    return sampling.ParentBased(root) if settings.sampler.startswith("parentbased_") else root


class _Headers(Getter[HeaderSource]):
    """The client's headers (or gRPC metadata) as the propagator reads them."""

    def get(self, carrier: HeaderSource, key: str) -> list[str] | None:
        value = carrier.get(key)
        return None if value is None else [value]

    def keys(self, carrier: HeaderSource) -> list[str]:
        return []  # the trace-context propagator asks for its two headers by name


class _ToExporter(SpanProcessor):
    def __init__(self, offer: Callable[[ReadableSpan], None]) -> None:
        self._offer = offer

    def on_end(self, span: ReadableSpan) -> None:
        self._offer(span)


class OtelTracer:
    """Spans for the request path (:class:`ailb.telemetry.spans.Tracer`)."""

    def __init__(self, settings: TracingSettings, version: str,
                 offer: Callable[[ReadableSpan], None]) -> None:
        """``offer``: takes each sampled span once it ended (must not block)."""
        resource = Resource({"service.version": version, **settings.resource,
                             "service.name": settings.service_name})
        self._provider = TracerProvider(sampler=sampler(settings), resource=resource,
                                        shutdown_on_exit=False)
        self._provider.add_span_processor(_ToExporter(offer))
        self._tracer = self._provider.get_tracer("ailb", version)
        self._propagator = TraceContextTextMapPropagator()
        self._getter = _Headers()

    def request(self, headers: HeaderSource) -> Span:
        """A request's SERVER span; a child of the client's span when its ``traceparent``
        (and ``tracestate``) is valid, else the root of a new trace."""
        parent = self._propagator.extract(headers, getter=self._getter)
        span: Span = self._tracer.start_span("ailb request", context=parent,
                                             kind=SpanKind.SERVER, record_exception=False,
                                             set_status_on_exception=False)
        return span

    def child(self, parent: Span, name: str, kind: Kind,
              attributes: dict[str, Value]) -> Span:
        span: Span = self._tracer.start_span(
            name, context=trace.set_span_in_context(_sdk(parent)), kind=_KINDS[kind],
            attributes=attributes, record_exception=False, set_status_on_exception=False)
        return span

    def inject(self, span: Span, headers: dict[str, str]) -> None:
        self._propagator.inject(headers, context=trace.set_span_in_context(_sdk(span)))

    def failed(self, span: Span, error_type: str) -> None:
        span.set_attribute("error.type", error_type)
        _sdk(span).set_status(Status(StatusCode.ERROR))


def _sdk(span: Span) -> trace.Span:
    """Our spans are the SDK's (this module made them)."""
    return cast(trace.Span, span)

