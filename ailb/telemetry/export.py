"""The OTLP/HTTP span exporter: a task of the supervisor's nursery, not the SDK's
BatchSpanProcessor.

The SDK's processor runs its own daemon thread with its own queue and its own shutdown hook
(atexit): a task nobody in the nursery tree owns, exporting with blocking I/O beside the event
loop, and at shutdown either waiting without our deadline or not at all. Here ended spans go
into a bounded memory channel (``OTEL_BSP_MAX_QUEUE_SIZE``) without blocking the request; when
it is full the span is dropped and counted (``ailb_trace_spans_total{outcome=...}``), the
request never waits for telemetry. The task takes up to ``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``
spans, or what came within ``OTEL_BSP_SCHEDULE_DELAY``, encodes them (in a worker thread) with
the OTLP protobuf encoder (opentelemetry-exporter-otlp-proto-common) and POSTs them with
httpx. At shutdown the supervisor closes the buffer once every request has ended, and what is
left is sent within the graceful deadline.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import httpx
import trio
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan

from ailb import logs
from ailb.config.tracing import TracingSettings
from ailb.config.view import without_password
from ailb.metrics import Metrics

_log = logging.getLogger("ailb.telemetry")
RETRYABLE = (429, 502, 503, 504)  # OTLP/HTTP: the collector may take the same batch later
RETRY_DELAYS_S = (0.5, 1.0)


class SpanExporter:
    def __init__(self, settings: TracingSettings, metrics: Metrics,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._settings = settings
        self._spans = metrics.trace_spans
        self._transport = transport
        self._send, self._receive = trio.open_memory_channel[ReadableSpan](settings.max_queue)
        self._headers = {"content-type": "application/x-protobuf",
                         **{k: v.value for k, v in settings.headers.items()}}
        self._done = trio.Event()

    def offer(self, span: ReadableSpan) -> None:
        """Take an ended span; never blocks (a full buffer drops it, counted)."""
        try:
            self._send.send_nowait(span)
        except trio.WouldBlock:
            self._spans.labels(outcome="dropped_buffer_full").inc()
        except trio.ClosedResourceError:  # ended after the shutdown's flush began
            self._spans.labels(outcome="dropped_shutdown").inc()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Export until :meth:`close`, then what is left. Returns when the buffer is empty."""
        try:
            async with httpx.AsyncClient(timeout=self._settings.timeout_s, trust_env=False,
                                         transport=self._transport) as client:
                task_status.started()
                while (batch := await self._next_batch()):
                    await self._post(client, batch)
        finally:
            self._done.set()

    async def _next_batch(self) -> list[ReadableSpan]:
        """Up to a batch of spans: the first one waited for, the rest for up to the schedule
        delay. Empty once the buffer is closed and empty."""
        batch: list[ReadableSpan] = []
        try:
            batch.append(await self._receive.receive())
            with trio.move_on_after(self._settings.schedule_delay_s):
                while len(batch) < self._settings.max_batch:
                    batch.append(await self._receive.receive())
        except trio.EndOfChannel:
            pass
        return batch

    async def _post(self, client: httpx.AsyncClient, batch: Sequence[ReadableSpan]) -> None:
        # ~25 us a span, in Python: a full batch would hold the event loop ~13 ms; in a thread
        # the loop keeps its turns (the GIL's switch interval). Ended spans no longer change.
        try:
            body = await trio.to_thread.run_sync(_encode, batch)
        except (ValueError, TypeError) as exc:  # a value OTLP cannot carry: never a reason
            # to stop the exporter (its task failing would stop the gateway)
            self._spans.labels(outcome="dropped_export_failed").inc(len(batch))
            logs.event(_log, "spans could not be encoded", logging.ERROR, spans=len(batch),
                       error=f"{type(exc).__name__}: {exc}")
            return
        problem = ""
        for delay in (*RETRY_DELAYS_S, None):
            try:
                response = await client.post(self._settings.endpoint, content=body,
                                             headers=self._headers)
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code < 300:
                    self._spans.labels(outcome="exported").inc(len(batch))
                    return
                problem = f"HTTP {response.status_code}"
                if response.status_code not in RETRYABLE:
                    break
            if delay is not None:
                await trio.sleep(delay)
        self._spans.labels(outcome="dropped_export_failed").inc(len(batch))
        logs.event(_log, "spans not exported", logging.WARNING, spans=len(batch),
                   endpoint=without_password(self._settings.endpoint), error=problem)

    async def close(self, deadline_s: float) -> None:
        """Take no more spans; wait up to ``deadline_s`` for the ones buffered to be sent."""
        self._send.close()
        with trio.move_on_after(deadline_s):
            await self._done.wait()


def _encode(batch: Sequence[ReadableSpan]) -> bytes:
    body: bytes = encode_spans(batch).SerializeToString()
    return body
