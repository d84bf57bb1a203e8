"""The httpx edge: pooled clients per deployment, the three kinds of upstream call providers make
(a JSON POST, a streamed POST, a health GET), and the one translation of httpx's errors into
ours. Providers call upstreams only through these functions and never see an httpx exception.
"""

from __future__ import annotations

import email.utils
import json
import logging
import time
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

import httpx
import trio

from ailb import logs
from ailb.config.schema import DeploymentSettings, UpstreamSettings
from ailb.errors import (
    UpstreamError,
    UpstreamStatusError,
    UpstreamStreamCut,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ailb.providers.abort import Abort, closer
from ailb.providers.base import ProbeResult
from ailb.providers.http_lean import Cookies, body_of, decode, json_request
from ailb.providers.http_lean import Url as Url  # for providers
from ailb.providers.http_lean import url as url
from ailb.providers.transport import LeanTransport
from ailb.telemetry.spans import UpstreamCall, upstream_call

_log = logging.getLogger("ailb.upstream")
Client = httpx.AsyncClient  # what providers are given (by name, so they need not import httpx)


def make_client(
    deployment: DeploymentSettings,
    upstream: UpstreamSettings,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """One pooled keep-alive client for one deployment. The caller closes it (``aclose``),
    which closes its transport: by default AILB's lean one (``upstream.transport``), a test's
    own when given."""
    pool = deployment.pool_size or upstream.pool_size
    if transport is None and upstream.transport == "lean":
        transport = LeanTransport(pool)
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(
            connect=upstream.connect_timeout_s,
            read=upstream.read_timeout_s,
            write=upstream.read_timeout_s,
            pool=upstream.connect_timeout_s,
        ),
        limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
        transport=transport,
        follow_redirects=False,
        trust_env=False,
    )
    client._cookies = Cookies()  # where httpx keeps the client's jar (no public way to subclass)
    return client



def translate(exc: httpx.HTTPError, deployment: str, *, streaming: bool = False) -> UpstreamError:
    """Map an httpx exception to the error tree. ``streaming`` means bytes had already arrived.
    The error's message (which tenants see) names the kind of failure only: httpx's own words
    often hold the upstream's address ("all attempts to connect to 10.0.0.7:8000 failed").
    They go to the log, for the operator."""
    logs.event(_log, "upstream call failed", logging.WARNING, deployment=deployment,
               error=f"{type(exc).__name__}: {str(exc).strip()}")
    if isinstance(exc, httpx.TimeoutException):
        what = "connect" if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout) else "read"
        return UpstreamTimeout(f"upstream {deployment} timed out ({what})")
    if streaming:
        return UpstreamStreamCut(f"upstream {deployment} broke off the stream ({_name(exc)})")
    return UpstreamUnavailable(f"upstream {deployment} is unreachable ({_name(exc)})")


def _name(exc: BaseException) -> str:
    return type(exc).__name__


def retry_after_s(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds from ``retry-after-ms`` or ``retry-after`` (seconds or an HTTP date), else None."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def status_error(
    status: int, body: bytes, headers: Mapping[str, str], deployment: str
) -> UpstreamStatusError:
    """Build the error for an upstream error response, keeping its message, type and code."""
    message, error_type, code, param = _error_fields(body)
    if status in (401, 403):
        # The upstream refused *AILB's* credential: the client's own key is fine, and the
        # upstream's message may quote a fragment of AILB's key. Say so without the details.
        logs.event(_log, "upstream refused the deployment's credential", logging.WARNING,
                   deployment=deployment, upstream_status=status, upstream_type=error_type,
                   upstream_code=code)
        return UpstreamStatusError(
            f"The upstream provider refused this gateway's credentials for deployment "
            f"{deployment}. The operator must check its API key.", status=502,
            upstream_status=status, error_type="upstream_error", code="upstream_auth_error")
    if not message:
        message = f"upstream {deployment} answered HTTP {status}"
    # A client error is the client's to fix: same status, upstream's words. A server error of the
    # upstream is a bad gateway from the client's point of view.
    return UpstreamStatusError(
        message,
        status=status if status < 500 else 502,
        upstream_status=status,
        error_type=error_type,
        code=code,
        param=param,
        retry_after_s=retry_after_s(headers),
    )


def _error_fields(body: bytes) -> tuple[str, str | None, str | None, str | None]:
    try:
        parsed: Any = json.loads(body)
    except ValueError:
        return body[:500].decode("utf-8", "replace").strip(), None, None, None
    err = parsed.get("error") if isinstance(parsed, dict) else None
    if isinstance(err, dict):
        return (
            str(err.get("message") or ""),
            _opt(err.get("type")),
            _opt(err.get("code")),
            _opt(err.get("param")),
        )
    if isinstance(err, str):  # Ollama: {"error": "model not found"}
        return err, None, None, None
    return "", None, None, None


def _opt(value: Any) -> str | None:
    return None if value is None else str(value)


StatusErrorFactory = Callable[[int, bytes, Mapping[str, str]], UpstreamStatusError]


async def post_json(
    client: httpx.AsyncClient,
    url: Url,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    deployment: str,
    status_error_of: StatusErrorFactory,
) -> tuple[Any, bytes]:
    """POST ``body`` and return the parsed JSON answer with its raw bytes.

    Raises the factory's error for an error status, UpstreamUnavailable for an answer that is
    not JSON, and the translated httpx error (UpstreamTimeout, UpstreamUnavailable) otherwise.
    Traced (inside a traced attempt): a CLIENT span, whose traceparent the upstream receives.
    """
    span = upstream_call("POST", url)
    if span is None:
        return await _post_json(client, url, body, headers, deployment, status_error_of, None)
    try:
        answer = await _post_json(client, url, body, span.headers(dict(headers)), deployment,
                                  status_error_of, span)
    except BaseException as exc:
        span.end(exc)
        raise
    span.end()
    return answer


async def _post_json(client: httpx.AsyncClient, url: Url, body: Mapping[str, Any],
                     headers: Mapping[str, str], deployment: str,
                     status_error_of: StatusErrorFactory,
                     span: UpstreamCall | None) -> tuple[Any, bytes]:
    try:
        response = await client.send(json_request(client, url, body, headers))
    except httpx.HTTPError as exc:
        raise translate(exc, deployment) from exc
    if span is not None:
        span.answered(response.status_code)
    if response.status_code >= 400:
        raise status_error_of(response.status_code, response.content, response.headers)
    raw = response.content
    try:
        return decode(raw), raw
    except ValueError:
        raise UpstreamUnavailable(f"upstream {deployment} answered with invalid JSON") from None


async def stream_bytes(
    client: httpx.AsyncClient,
    url: Url,
    body: Mapping[str, Any],
    headers: Mapping[str, str],
    deployment: str,
    status_error_of: StatusErrorFactory,
    abort: Abort | None = None,
) -> AsyncGenerator[bytes, None]:
    """POST ``body`` and yield the answer's bytes as they arrive. ``abort``, when given, is
    armed once the response is open, on AILB's own transport (see :mod:`ailb.providers.abort`);
    on any other it stays unarmed, and the drain cuts the stream with a cancel scope.

    Raises the factory's error for an error status, and the translated httpx error otherwise
    (a stream that broke after bytes arrived is UpstreamStreamCut). Closing the generator closes
    the connection. Traced like :func:`post_json`; the span lasts until the stream ends.
    """
    started = False
    span = upstream_call("POST", url)  # read when the first chunk is asked for: in the attempt
    if span is not None:
        headers = span.headers(dict(headers))
    failure: BaseException | None = None
    try:
        response = await client.send(json_request(client, url, body, headers), stream=True)
        try:
            if span is not None:
                span.answered(response.status_code)
            if response.status_code >= 400:
                raise status_error_of(response.status_code, await response.aread(),
                                      response.headers)
            if abort is not None:
                abort.arm(closer(response.extensions))
            try:
                async for raw in body_of(response):
                    started = True
                    yield raw
            finally:  # the body is over: nothing left for the drain to close
                if abort is not None:
                    abort.arm(None)
        finally:
            await response.aclose()
    except httpx.HTTPError as exc:
        failure = translate(exc, deployment, streaming=started)
        raise failure from exc
    except BaseException as exc:
        failure = exc
        raise
    finally:
        if span is not None:
            span.end(failure if not isinstance(failure, GeneratorExit) else None)


DRAIN_S = 1.0


async def finish_body(raws: AsyncGenerator[bytes, None]) -> None:
    """Read what is left of a response after its end marker (the chunked terminator), so the
    connection goes back to the pool instead of being closed: a new connection (and TLS
    handshake) per stream otherwise. Bounded: an upstream that keeps the body open is dropped."""
    with trio.move_on_after(DRAIN_S):
        async for _ in raws:
            pass


async def probe_get(
    client: httpx.AsyncClient, url: str, headers: Mapping[str, str]
) -> tuple[ProbeResult, httpx.Response | None]:
    """One health GET: a failed result for a transport error or an error status, else an ok
    result and the response (for callers that read it)."""
    start = time.perf_counter()
    try:
        response = await client.get(url, headers=headers)
    except httpx.HTTPError as exc:
        return ProbeResult(False, time.perf_counter() - start, type(exc).__name__), None
    elapsed = time.perf_counter() - start
    if response.status_code >= 400:
        return ProbeResult(False, elapsed, f"HTTP {response.status_code}"), None
    return ProbeResult(True, elapsed), response
