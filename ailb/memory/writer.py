"""The memory writer: the one task that writes turns to the vector store.

Requests hand their turn to :meth:`MemoryWriter.record`, which waits only when the bounded
channel is full (backpressure). The writer takes what has queued, up to ``batch`` turns, embeds
them, writes them in one ChromaDB call (a write holds the GIL: small batches keep the event loop
responsive), then trims the sessions it touched to ``max_turns``. Forgetting a session goes
through the same channel, so it also removes turns queued before it. Every hour (and at start)
turns older than the retention age are forgotten.

Every turn taken from the queue is reported once: written (``on_written``) or dropped
(``on_dropped``: it could not be embedded or written after :data:`ATTEMPTS` tries, logged as an
error). A failure is contained to its batch: the writer goes on with the next one.

:meth:`MemoryWriter.close` stops intake and returns once everything queued is written; if the
task is cancelled instead (a hurried exit), it still writes what is queued, for at most
:data:`HURRIED_FLUSH_S`, before it returns.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

import trio

from ailb import logs
from ailb.errors import GatewayError, StoreUnavailable
from ailb.memory.store import MemoryStore
from ailb.memory.turns import Turn
from ailb.vectors.embedders import Embedder

_log = logging.getLogger("ailb.memory")
EXPIRE_EVERY_S = 3600.0
ATTEMPTS = 3
HURRIED_FLUSH_S = 5.0
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class _Write:
    owner: str
    turn: Turn


@dataclass(slots=True)
class _Forget:
    owner: str
    session: str
    done: trio.Event = field(default_factory=trio.Event)
    removed: int = 0
    error: GatewayError | None = None
    asked_ns: int = field(default_factory=time.time_ns)  # turns remembered later are kept


_Op = _Write | _Forget
Report = Callable[[str, Sequence[Turn]], None]


class MemoryWriter:
    def __init__(self, store: MemoryStore, embedder: Embedder, *, batch: int, capacity: int,
                 max_turns: int, max_age_s: float, on_written: Report, on_dropped: Report,
                 on_forgotten: Callable[[str, str, int], None],
                 on_expired: Callable[[], None]) -> None:
        self._store = store
        self._embedder = embedder
        self._batch = batch
        self._max_turns = max_turns
        self._max_age_s = max_age_s
        self._on_written = on_written
        self._on_dropped = on_dropped
        self._on_forgotten = on_forgotten
        self._on_expired = on_expired
        self._send, self._receive = trio.open_memory_channel[_Op](capacity)
        self._done = trio.Event()
        self.written = 0
        self.stored = 0  # turns in the store, as far as this writer knows

    async def record(self, owner: str, turn: Turn) -> None:
        """Queue a turn; waits while the queue is full. Raises trio.ClosedResourceError after
        :meth:`close`."""
        await self._send.send(_Write(owner, turn))

    async def forget(self, owner: str, session: str) -> int:
        """Forget a session, turns still queued included; returns the number of stored turns
        removed once it is done. Raises StoreUnavailable if the store refused."""
        op = _Forget(owner, session)
        await self._send.send(op)
        await op.done.wait()
        if op.error is not None:
            raise op.error
        return op.removed

    def queued(self) -> int:
        return self._send.statistics().current_buffer_used

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            self.stored = await self._attempt(self._store.size)
        except GatewayError:
            self.stored = 0  # only a metric: the writer itself can work on
        task_status.started()
        try:
            async with trio.open_nursery() as nursery:
                if self._max_age_s > 0:
                    nursery.start_soon(self._expire_forever)
                await self._write_forever()
                nursery.cancel_scope.cancel()
        finally:
            self._done.set()

    async def _write_forever(self) -> None:
        taken: list[_Op] = []
        try:
            while True:
                try:
                    taken.append(await self._receive.receive())
                except trio.EndOfChannel:
                    return
                while len(taken) < self._batch:  # whatever else is already queued
                    try:
                        taken.append(self._receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                await self._apply(taken)  # cancelled half-way: applied again below (upserts
                taken = []  # and deletes by id are idempotent; reports are merged by id)
        finally:
            # Cancelled (a hurried exit): still write what was taken and what is queued.
            with trio.CancelScope(shield=True) as flush:
                flush.deadline = trio.current_time() + HURRIED_FLUSH_S
                while True:
                    try:
                        taken.append(self._receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                        break
                if taken:
                    await self._apply(taken)
            self._receive.close()

    async def _apply(self, ops: list[_Op]) -> None:
        writes: list[_Write] = []
        for op in ops:
            if isinstance(op, _Write):
                writes.append(op)
                continue
            await self._flush(writes)  # forget what was queued before the request, too
            writes = []
            try:
                op.removed = await self._attempt(partial(self._store.forget, op.owner,
                                                         op.session))
                self.stored -= op.removed
            except GatewayError as exc:
                op.error = exc
            finally:
                self._on_forgotten(op.owner, op.session, op.asked_ns)
                op.done.set()
        await self._flush(writes)

    async def _flush(self, writes: list[_Write]) -> None:
        by_owner: dict[str, list[Turn]] = defaultdict(list)
        for write in writes:
            by_owner[write.owner].append(write.turn)
        for owner, turns in by_owner.items():
            try:
                await self._write(owner, turns)
            except GatewayError as exc:
                logs.event(_log, "memory turns lost: they could not be stored", logging.ERROR,
                           turns=len(turns), error=exc.message)
                self._on_dropped(owner, turns)
            except Exception:  # a bug, or a foreign error: lose this batch, not the writer
                _log.exception("memory turns lost: unexpected error while storing them")
                self._on_dropped(owner, turns)

    async def _write(self, owner: str, turns: list[Turn]) -> None:
        vectors = await self._embedder.embed([t.text for t in turns])
        await self._attempt(partial(self._store.write, owner, turns, vectors))
        self.stored += len(turns)
        for session in {t.session for t in turns}:
            try:
                self.stored -= await self._attempt(partial(self._store.trim, owner, session,
                                                           self._max_turns))
            except GatewayError as exc:  # the turns are stored; the next write trims again
                logs.event(_log, "memory retention: trimming failed", logging.WARNING,
                           error=exc.message)
        self.written += len(turns)  # counted once trimmed and reported (tests wait on it)
        self._on_written(owner, turns)

    async def _attempt(self, call: Callable[[], T]) -> T:
        """Run a blocking store call in a thread, up to ATTEMPTS times. Raises the last
        StoreUnavailable."""
        for attempt in range(1, ATTEMPTS + 1):
            try:
                return await trio.to_thread.run_sync(call)
            except StoreUnavailable as exc:
                logs.event(_log, "memory store call failed", logging.WARNING,
                           attempt=attempt, error=exc.message)
                if attempt == ATTEMPTS:
                    raise
                await trio.sleep(0.2 * attempt)
        raise AssertionError("unreachable")

    async def _expire_forever(self) -> None:
        while True:
            cutoff = time.time() - self._max_age_s
            try:
                removed = await self._attempt(partial(self._store.expire, cutoff))
            except GatewayError as exc:
                logs.event(_log, "memory retention: expiry failed; retried in an hour",
                           logging.ERROR, error=exc.message)
                removed = 0
            if removed:
                self.stored -= removed
                self._on_expired()
                logs.event(_log, "memory retention: old turns forgotten", removed=removed)
            await trio.sleep(EXPIRE_EVERY_S)

    async def close(self) -> None:
        """Stop accepting turns and wait until every queued one is written."""
        await self._send.aclose()
        await self._done.wait()
