"""The memory writer: the one task that writes turns to the vector store.

Requests hand their turn to :meth:`MemoryWriter.record`, which waits only when the bounded
channel is full (backpressure). The writer takes what has queued, up to ``batch`` turns, embeds
them, writes them in one ChromaDB call (a write holds the GIL: small batches keep the event loop
responsive), then trims the sessions it touched to ``max_turns``. Forgetting a session goes
through the same channel, so it also removes turns queued before it. Every hour (and at start)
turns older than the retention age are forgotten.

:meth:`MemoryWriter.close` stops intake and returns once everything queued is written; if the
task is cancelled instead (a hurried exit), it still writes what it holds before it returns.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import trio

from ailb import logs
from ailb.errors import GatewayError
from ailb.memory.store import MemoryStore
from ailb.memory.turns import Turn
from ailb.vectors.embedders import Embedder

_log = logging.getLogger("ailb.memory")
EXPIRE_EVERY_S = 3600.0
_ATTEMPTS = 3


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


_Op = _Write | _Forget
Written = Callable[[str, Sequence[Turn]], None]


class MemoryWriter:
    def __init__(self, store: MemoryStore, embedder: Embedder, *, batch: int, capacity: int,
                 max_turns: int, max_age_s: float, on_written: Written,
                 on_forgotten: Callable[[str, str], None]) -> None:
        self._store = store
        self._embedder = embedder
        self._batch = batch
        self._max_turns = max_turns
        self._max_age_s = max_age_s
        self._on_written = on_written
        self._on_forgotten = on_forgotten
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
        removed once it is done."""
        op = _Forget(owner, session)
        await self._send.send(op)
        await op.done.wait()
        return op.removed

    def queued(self) -> int:
        return self._send.statistics().current_buffer_used

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.stored = await self._attempt(self._store.size)
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
        pending: list[_Op] = []
        try:
            async with self._receive:
                while True:
                    try:
                        pending.append(await self._receive.receive())
                    except trio.EndOfChannel:
                        return
                    while len(pending) < self._batch:  # whatever else is already queued
                        try:
                            pending.append(self._receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    await self._apply(pending)
                    pending = []
        finally:
            with trio.CancelScope(shield=True):  # cancelled: still write what was taken
                while True:
                    try:
                        pending.append(self._receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                        break
                if pending:
                    await self._apply(pending)

    async def _apply(self, ops: list[_Op]) -> None:
        writes: list[_Write] = []
        for op in ops:
            if isinstance(op, _Write):
                writes.append(op)
                continue
            await self._flush(writes)  # forget what was queued before the request, too
            writes = []
            op.removed = await self._attempt(partial(self._store.forget, op.owner, op.session))
            self.stored -= op.removed
            self._on_forgotten(op.owner, op.session)
            op.done.set()
        await self._flush(writes)

    async def _flush(self, writes: list[_Write]) -> None:
        if not writes:
            return
        by_owner: dict[str, list[Turn]] = defaultdict(list)
        for write in writes:
            by_owner[write.owner].append(write.turn)
        for owner, turns in by_owner.items():
            try:
                vectors = await self._embedder.embed([t.text for t in turns])
            except GatewayError as exc:
                logs.event(_log, "memory turns could not be embedded; they are not stored",
                           logging.ERROR, turns=len(turns), error=exc.message)
                continue
            await self._attempt(partial(self._store.write, owner, turns, vectors))
            self.stored += len(turns)
            for session in {t.session for t in turns}:
                self.stored -= await self._attempt(partial(self._store.trim, owner, session,
                                                           self._max_turns))
            self.written += len(turns)  # counted once trimmed and reported (tests wait on it)
            self._on_written(owner, turns)

    async def _attempt(self, call: Callable[[], int | None]) -> int:
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                result = await trio.to_thread.run_sync(call)
                return result or 0
            except GatewayError as exc:
                logs.event(_log, "memory store write failed", logging.ERROR,
                           attempt=attempt, error=exc.message)
                if attempt < _ATTEMPTS:
                    await trio.sleep(0.2 * attempt)
        return 0

    async def _expire_forever(self) -> None:
        while True:
            cutoff = time.time() - self._max_age_s
            removed = await self._attempt(partial(self._store.expire, cutoff))
            self.stored -= removed
            if removed:
                logs.event(_log, "memory retention: old turns forgotten", removed=removed)
            await trio.sleep(EXPIRE_EVERY_S)

    async def close(self) -> None:
        """Stop accepting turns and wait until every queued one is written."""
        await self._send.aclose()
        await self._done.wait()
