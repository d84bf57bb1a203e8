"""Closed-loop HTTP/1.1 keep-alive load generator on asyncio protocols (uvloop when present).

Each of ``concurrency`` connections sends one request, parses the response (Content-Length or
chunked), records latency and time to first body byte, and sends the next until the deadline.
Bounded: a fixed duration, a per-request timeout and a cap on reconnects. Given several
pre-encoded requests, the connections send them in turn (one shared round robin).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, cast

from httpwire import ResponseParser

# validate(body, full): None when fine, else what is wrong. ``full`` False: first and last bytes.
Validator = Callable[[bytes, bool], str | None]
REQUEST_TIMEOUT_S = 30.0
MAX_ERRORS = 200


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    ttfbs: list[float] = field(default_factory=list)
    ok: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    reconnects: int = 0

    def error(self, msg: str) -> None:
        self.errors += 1
        if len(self.error_samples) < 5:
            self.error_samples.append(msg)


class Client(asyncio.Protocol):
    def __init__(self, next_request: Callable[[], bytes], deadline: float, tally: Tally,
                 validate: Validator, on_closed: Callable[[Client], None]
                 ) -> None:
        self.next_request = next_request
        self.deadline = deadline
        self.tally = tally
        self.validate = validate
        self.on_closed = on_closed
        self.parser = ResponseParser()
        self.transport: asyncio.Transport | None = None
        self.t0 = 0.0
        self.busy = False
        self.validated = 0
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self._send()

    def _send(self) -> None:
        assert self.transport is not None
        # The first 3 responses of each connection are checked in full, the rest by tail.
        self.parser.reset(keep_body=self.validated < 3)
        self.busy = True
        self.t0 = time.perf_counter()
        self.transport.write(self.next_request())
        loop = asyncio.get_running_loop()
        self.timer = loop.call_later(REQUEST_TIMEOUT_S, self._timeout)

    def _timeout(self) -> None:
        self.tally.error(f"no complete answer within {REQUEST_TIMEOUT_S:.0f}s")
        self.busy = False
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        p = self.parser
        try:
            done = p.feed(data)
        except ValueError as exc:
            self.tally.error(f"bad HTTP: {exc}")
            self.busy = False
            assert self.transport is not None
            self.transport.abort()
            return
        if done:
            self._complete(time.perf_counter())

    def _complete(self, now: float) -> None:
        assert self.transport is not None and self.timer is not None
        self.timer.cancel()
        self.busy = False
        p = self.parser
        problem = p.problem() or self.validate(p.body_bytes(), p.kept_body)
        if problem is None:
            self.tally.ok += 1
            self.tally.latencies.append(now - self.t0)
            self.tally.ttfbs.append((p.first_body_at or now) - self.t0)
        else:
            self.tally.error(problem)
        self.validated += 1
        if p.close:
            self.transport.close()
        elif now < self.deadline:
            self._send()
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
        if self.busy:
            self.tally.error(f"connection lost mid-request: {exc!r}")
        self.on_closed(self)


@dataclass(frozen=True, slots=True)
class LoadResult:
    concurrency: int
    seconds: float
    ok: int
    errors: int
    error_samples: list[str]
    reconnects: int
    latencies: list[float]
    ttfbs: list[float]


def merge(parts: list[LoadResult]) -> LoadResult:
    """Several runs at one concurrency as one: counts and times added, samples pooled."""
    return LoadResult(
        concurrency=parts[0].concurrency if parts else 0,
        seconds=sum(p.seconds for p in parts), ok=sum(p.ok for p in parts),
        errors=sum(p.errors for p in parts),
        error_samples=[e for p in parts for e in p.error_samples][:5],
        reconnects=sum(p.reconnects for p in parts),
        latencies=[v for p in parts for v in p.latencies],
        ttfbs=[v for p in parts for v in p.ttfbs],
    )


async def _run(host: str, port: int, request: bytes | Sequence[bytes], concurrency: int,
               duration: float, validate: Validator) -> LoadResult:
    loop = asyncio.get_running_loop()
    requests = [request] if isinstance(request, bytes) else list(request)
    if not requests:
        raise ValueError("no request to send")
    turn = 0

    def next_request() -> bytes:
        nonlocal turn
        turn += 1
        return requests[turn % len(requests)]
    tally = Tally()
    live = 0
    tasks: set[asyncio.Task[None]] = set()
    all_done = asyncio.Event()
    start = time.perf_counter()
    deadline = start + duration

    def closed(_: Client) -> None:
        nonlocal live
        live -= 1
        if time.perf_counter() < deadline and tally.errors < MAX_ERRORS:
            tally.reconnects += 1
            task = loop.create_task(connect())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        elif live == 0:
            all_done.set()

    async def connect() -> None:
        nonlocal live
        live += 1
        try:
            await loop.create_connection(
                lambda: Client(next_request, deadline, tally, validate, closed), host, port)
        except OSError as exc:
            tally.error(f"connect failed: {exc!r}")
            closed(cast(Client, None))

    for _ in range(concurrency):
        await connect()
    try:
        await asyncio.wait_for(all_done.wait(), duration + REQUEST_TIMEOUT_S + 5)
    except TimeoutError:
        tally.error("load run did not drain in time")
    elapsed = time.perf_counter() - start
    return LoadResult(concurrency, elapsed, tally.ok, tally.errors, tally.error_samples,
                      tally.reconnects, tally.latencies, tally.ttfbs)


def run_load(host: str, port: int, request: bytes | Sequence[bytes], *, concurrency: int,
             duration: float, validate: Validator) -> LoadResult:
    """One closed-loop run; returns after every connection finished its last request.
    ``request``: one pre-encoded request, or several sent in turn."""
    coro = _run(host, port, request, concurrency, duration, validate)
    runner: Any
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    return cast(LoadResult, runner(coro))


def loop_name() -> str:
    try:
        return f"uvloop {metadata.version('uvloop')}"
    except metadata.PackageNotFoundError:
        return "asyncio"
