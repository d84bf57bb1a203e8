"""The spans of a request, as the request path sees them (no OpenTelemetry import here).

Everything takes the request's :class:`Trace`, which is None when tracing is off, and then does
nothing and allocates nothing: a step is entered through a shared no-op context manager, and
the upstream call finds no attempt in its context. The span tree of one request::

    chat gpt-4o                      SERVER   one per request (ailb.pipeline.frame)
    ├── ailb.memory.load             INTERNAL the session's memory (ailb.pipeline.augment)
    ├── ailb.rag.retrieve            INTERNAL passages from a collection
    ├── ailb.admission               INTERNAL runtime limits, the key's limits and budget
    ├── ailb.attempt                 INTERNAL one per deployment tried (retries, the hedge)
    │   └── POST                     CLIENT   the upstream HTTP call (ailb.providers.http),
    │                                         which carries its traceparent upstream
    └── ailb.memory.save             INTERNAL the turn queued for the memory writer

The attempt in progress is found by the upstream call through a context variable: a hedged
attempt runs in its own task (with its own copy of the context), so two attempts in flight
each see their own. The variable is a key, not state: its value lives in each task's context.
"""

from __future__ import annotations

import re
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol
from urllib.parse import urlsplit

import trio

from ailb.errors import GatewayError, UpstreamError

if TYPE_CHECKING:
    from ailb.keys.auth import HeaderSource
    from ailb.model import StreamChunk
    from ailb.pipeline.exchange import Exchange
    from ailb.routing.table import Target

Value = str | bool | int | float | tuple[str, ...]
Kind = Literal["internal", "client"]


class Span(Protocol):
    """What the request path does with a span (the SDK's spans have it)."""

    def set_attribute(self, key: str, value: Value) -> None: ...

    def update_name(self, name: str) -> None: ...

    def end(self, end_time: int | None = None) -> None: ...


class Tracer(Protocol):
    """Makes spans (:class:`ailb.telemetry.tracer.OtelTracer`)."""

    def request(self, headers: HeaderSource) -> Span: ...

    def child(self, parent: Span, name: str, kind: Kind,
              attributes: dict[str, Value]) -> Span: ...

    def inject(self, span: Span, headers: dict[str, str]) -> None: ...

    def failed(self, span: Span, error_type: str) -> None: ...


@dataclass(slots=True)
class Trace:
    """One request's tracing: its tracer, its SERVER span, and what the span says at its end."""

    tracer: Tracer
    span: Span
    operation: str = ""  # gen_ai.operation.name; empty for a request that is no model call
    finish_reasons: list[str] = field(default_factory=list)


def request_trace(tracer: Tracer | None, headers: HeaderSource) -> Trace | None:
    """A request's trace, its span a child of the client's ``traceparent`` (None when off)."""
    return None if tracer is None else Trace(tracer, tracer.request(headers))


def error_type(exc: BaseException) -> str:
    if isinstance(exc, UpstreamError):
        return exc.kind
    if isinstance(exc, GatewayError):
        return exc.type
    return "cancelled" if _is_cancelled(exc) else type(exc).__qualname__


def _is_cancelled(exc: BaseException) -> bool:
    return isinstance(exc, trio.Cancelled)


class _Nothing:
    """The step of a request that is not traced."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


NOTHING: Final = _Nothing()


class _Step:
    __slots__ = ("_span", "_tracer")

    def __init__(self, tracer: Tracer, span: Span) -> None:
        self._tracer, self._span = tracer, span

    def __enter__(self) -> Span:
        return self._span

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc is not None:
            self._tracer.failed(self._span, error_type(exc))
        self._span.end()


def step(trace: Trace | None, name: str,
         attributes: dict[str, Value] | None = None) -> _Step | _Nothing:
    """``with step(trace, "ailb.admission"):`` a child span of the request around a step;
    an error leaving it is recorded (``error.type``). Nothing when ``trace`` is None."""
    if trace is None:
        return NOTHING
    return _Step(trace.tracer, trace.tracer.child(trace.span, name, "internal",
                                                  attributes or {}))


_ATTEMPT: ContextVar[_Attempt | None] = ContextVar("ailb_attempt", default=None)


class _Attempt(_Step):
    """An attempt's span, the parent of the upstream calls made inside it."""

    __slots__ = ("_token",)

    def __init__(self, tracer: Tracer, span: Span) -> None:
        super().__init__(tracer, span)
        self._token: Token[_Attempt | None] | None = None

    def __enter__(self) -> Span:
        self._token = _ATTEMPT.set(self)
        return self._span

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._token is not None:
            _ATTEMPT.reset(self._token)
        outcome = "ok" if exc is None else "cancelled" if _is_cancelled(exc) else "error"
        self._span.set_attribute("ailb.outcome", outcome)
        super().__exit__(kind, exc, tb)


def attempt(exchange: Exchange, target: Target) -> _Attempt | _Nothing:
    """``with attempt(exchange, target):`` the span of one routing attempt (number, deployment,
    whether it is the hedge); the upstream calls inside it are its children."""
    trace = exchange.trace
    if trace is None:
        return NOTHING
    hedge = exchange.hedged and exchange.hedge_target == target.deployment
    span = trace.tracer.child(trace.span, "ailb.attempt", "internal", {
        "ailb.attempt": exchange.attempts, "ailb.deployment": target.deployment,
        "ailb.hedge": hedge, "gen_ai.provider.name": target.provider,
        "gen_ai.request.model": target.model})
    return _Attempt(trace.tracer, span)


class UpstreamCall:
    """The span of one upstream HTTP call (CLIENT), made inside an attempt."""

    __slots__ = ("_failed", "_span", "_tracer")

    def __init__(self, tracer: Tracer, span: Span) -> None:
        self._tracer, self._span = tracer, span
        self._failed = False

    def headers(self, headers: dict[str, str]) -> dict[str, str]:
        """``headers`` with this call's ``traceparent`` (and ``tracestate``) added."""
        self._tracer.inject(self._span, headers)
        return headers

    def answered(self, status: int) -> None:
        self._span.set_attribute("http.response.status_code", status)
        if status >= 400:
            self._tracer.failed(self._span, str(status))
            self._failed = True

    def end(self, exc: BaseException | None = None) -> None:
        """End the span; ``exc`` is why the call failed (unless its status said so)."""
        if exc is not None and not self._failed:
            self._tracer.failed(self._span, error_type(exc))
        self._span.end()


def upstream_call(method: str, url: object) -> UpstreamCall | None:
    """The span of an upstream call made now, or None (no traced attempt is in progress)."""
    scope = _ATTEMPT.get()
    if scope is None:
        return None
    parts = urlsplit(str(url))  # a str, or an httpx.URL
    attributes: dict[str, Value] = {
        "http.request.method": method,
        # without the query: some providers take their key there
        "url.full": f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}{parts.path}",
        "server.address": parts.hostname or "",
    }
    if parts.port is not None:
        attributes["server.port"] = parts.port
    tracer = scope._tracer
    return UpstreamCall(tracer, tracer.child(scope._span, method, "client", attributes))


# -- what the request span says -------------------------------------------------------------------
def asked(trace: Trace, operation: str, body: Any, stream: bool) -> None:
    """What the request asked for (the request span's gen_ai.request.* attributes)."""
    trace.operation = operation
    span = trace.span
    span.set_attribute("ailb.stream", stream)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
    if isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and \
            0 <= max_tokens < 2**63:  # OTLP's int is 64 bits; a client may send any number
        span.set_attribute("gen_ai.request.max_tokens", max_tokens)
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        try:
            span.set_attribute("gen_ai.request.temperature", float(temperature))
        except OverflowError:  # an int beyond a float: not a temperature worth recording
            pass


def answered(trace: Trace, body: Any) -> None:
    """A whole answer's finish reasons (an OpenAI ``chat.completion``)."""
    choices = body.get("choices") if isinstance(body, dict) else None
    for choice in choices if isinstance(choices, list) else ():
        reason = choice.get("finish_reason") if isinstance(choice, dict) else None
        if isinstance(reason, str):
            trace.finish_reasons.append(reason)


_REASON: Final = re.compile(r'"(?:finish|stop)_reason"\s*:\s*"([^"]{1,64})"')
_NATIVE_REASON: Final = re.compile(_REASON.pattern.encode())


def chunk_seen(trace: Trace, chunk: StreamChunk) -> None:
    """A stream chunk's finish reason, if it has one (OpenAI chunks, Anthropic events)."""
    raw = chunk.native if chunk.native is not None else chunk.raw  # an event or a block
    if raw is not None:
        if b"_reason" in raw:
            trace.finish_reasons.extend(m.decode() for m in _NATIVE_REASON.findall(raw))
    elif "_reason" in chunk.data:
        trace.finish_reasons.extend(_REASON.findall(chunk.data))


def finish_request(trace: Trace, exchange: Exchange, status: int, error_kind: str,
                   key_id: str) -> None:
    """Name the request span and set what the request did; end it."""
    span = trace.span
    model = exchange.model
    if trace.operation:
        span.update_name(f"{trace.operation} {model}" if model else trace.operation)
        span.set_attribute("gen_ai.operation.name", trace.operation)
    if model:
        span.set_attribute("gen_ai.request.model", model)
    if exchange.provider:
        span.set_attribute("gen_ai.provider.name", exchange.provider)
        span.set_attribute("gen_ai.system", exchange.provider)  # the older name of it
    if exchange.upstream_model:
        span.set_attribute("gen_ai.response.model", exchange.upstream_model)
    if exchange.deployment:
        span.set_attribute("ailb.deployment", exchange.deployment)
    if exchange.attempts:
        span.set_attribute("ailb.attempts", exchange.attempts)
    usage = exchange.usage
    if usage is not None:
        span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
        span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
    if trace.finish_reasons:
        span.set_attribute("gen_ai.response.finish_reasons", tuple(trace.finish_reasons))
    span.set_attribute("http.response.status_code", status)
    span.set_attribute("ailb.request_id", exchange.request_id)
    span.set_attribute("ailb.key_id", key_id)
    if status >= 400 or error_kind:
        kind = error_kind or ("cancelled" if status == 499 else str(status))
        span.set_attribute("error.type", kind)
        if status >= 500:  # a server span's 4xx is the client's error, not ours
            trace.tracer.failed(span, kind)
    span.end()
