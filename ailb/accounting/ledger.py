"""The spend ledger's writer: each settled request's row, with the settlement of its reservation
(the actual cost replacing the worst case reserved), goes through a bounded channel to one task
the supervisor owns, which writes them in batches through the store (off the event loop): one
transaction settles and records many requests. Closing the writer flushes what is queued.

Acknowledged rows (``ack``, the default): ``record`` returns once its row is committed, and the
pipeline settles before the answer's last byte (a JSON body, a stream's final event), so a
gateway killed at any moment has the row of every request it answered. The writer then
commits what is queued at once (a group commit: the rows that arrive during one commit form the
next), instead of waiting ``flush_s`` to batch. A store slower than ``ack_s`` does not hold the
answer longer: the row stays queued and is written when the store answers.

``direct`` (the embedded store, whose own thread commits the calls queued together in one
transaction): an acknowledged row is written by its caller, one hand-off less per request than
through the writer task, and bounded the same way: a write the store refuses within ``ack_s``
goes to the writer, which retries it; a write the store has not finished within ``ack_s``
(another process holding SQLite's write lock: its busy timeout is 5 s) is no longer waited
for. It cannot be stopped once queued on the store's thread, so it goes on, and its end is
told to the ledger (``late``): committed, nothing more to do; refused, the writer retries it
like any other (or, if the writer is full or closed by then, it is logged as lost). The
credit is counted accordingly: forgotten when the write starts, given back if it fails. As on
the writer's path, an answer sent before its row is committed is not SIGKILL-safe for that
row: the key's spend then stays at the worst case reserved (its reservation was committed
before the call), never below what was served.

A settlement only lowers a key's spend towards what it was actually charged: one that is late
(queued, or retried) or lost in a crash leaves the spend at the worst case reserved, never below
what was served.

The bound is backpressure: ``record`` waits while the channel is full (the database is slower
than the traffic), so nothing is dropped and no row is written on the caller's task. A batch the
store refuses is kept and retried; only a stop that cannot write within ``final_s`` loses rows,
and says so in the log (with their request ids).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Protocol

import trio

from ailb import logs
from ailb.accounting.store import LedgerRow, Settlement, Store
from ailb.errors import StoreUnavailable

_log = logging.getLogger("ailb.ledger")


@dataclass(frozen=True, slots=True)
class Entry:
    """A settled request's row, and its reservation's settlement (for ``period``), which gives
    ``credit_usd`` back to the key's spend (reserved minus actual; negative if it cost more).
    A key in a team has a second reservation, the team's (under ``team_subject``): it settles
    with the same cost, and gives the same credit back to the team's spend."""

    row: LedgerRow
    settlement: Settlement | None = None
    period: str = ""
    credit_usd: float = 0.0
    team_subject: str = ""
    team_settlement: Settlement | None = None
    written: trio.Event | None = field(default=None, compare=False)  # set once committed


class DirectStore(Protocol):
    """A store that group-commits the calls queued together itself (the embedded store,
    :class:`ailb.keys.store.SqliteStore`), and lets a caller stop waiting for a write that
    goes on (``late``: how it ended, on the Trio thread; see its ``settle``)."""

    async def settle(self, settlements: Sequence[Settlement], rows: Sequence[LedgerRow],
                     late: Callable[[StoreUnavailable | None], None] | None = None) -> None:
        ...


class Ledger:
    def __init__(self, store: Store, flush_s: float = 0.5, batch: int = 200,
                 capacity: int = 10_000, retry_s: float = 1.0, final_s: float = 10.0,
                 queue_wait_s: float = 30.0, ack: bool = False, ack_s: float = 5.0,
                 direct: DirectStore | None = None) -> None:
        """``direct``: the store again, when acknowledged rows are written by their caller
        (see the module docstring), not handed to the writer task first."""
        self._store = store
        self._ack = ack
        self._direct = direct if ack else None
        self._running = False  # the writer task runs (a direct write that fails goes to it)
        self._ack_s = ack_s
        self._flush_s = flush_s
        self._batch = batch
        self._retry_s = retry_s
        self._final_s = final_s
        self._queue_wait_s = queue_wait_s
        self._send, self._receive = trio.open_memory_channel[Entry](capacity)
        self._done = trio.Event()
        self._credit: dict[tuple[str, str], float] = {}  # (key, period) -> not yet in the store

    def credit(self, key_id: str, period: str) -> float:
        """What the settlements of ``key_id`` (a key, or a team's subject) for ``period`` not
        yet in the store will give back to its spend there: the store's spend minus this is
        the key's spend."""
        return self._credit.get((key_id, period), 0.0)

    async def record(self, entry: Entry) -> None:
        """Queue a row (and its reservation's settlement) for the writer; waits while the
        queue is full, ``queue_wait_s`` at most (a store down for that long: the entry is
        logged as lost, its key stays charged the reservation, and requests are not held
        forever). Once the writer is closed, they are written at once (and logged as lost if
        the store refuses them)."""
        if self._direct is not None and self._running:
            await self._direct_write(self._direct, entry)
            return
        self._add_credit([entry])
        if self._ack:
            entry = replace(entry, written=trio.Event())
        await self._queue(entry)
        if entry.written is not None:
            with trio.move_on_after(self._ack_s):
                await entry.written.wait()

    async def _direct_write(self, store: DirectStore, entry: Entry) -> None:
        """Committed with the rows of the other requests queued beside it; or refused, and
        then the writer retries it; or not done within ``ack_s``, and then ``_late`` hears how
        it ends (as it does if the caller is cancelled meanwhile)."""
        # no credit while the write is under way (as _store_write forgets it when it starts)
        try:
            with trio.move_on_after(self._ack_s):
                await store.settle(_settlements(entry), [entry.row],
                                   late=partial(self._late, entry))
        except StoreUnavailable:  # refused in time: the writer retries the row
            self._add_credit([entry])
            await self._queue(entry)

    def _late(self, entry: Entry, error: StoreUnavailable | None) -> None:
        """How a direct write its caller stopped waiting for ended (called on the Trio thread,
        synchronously: it may not wait, and must not raise)."""
        if error is None:
            logs.event(_log, "a late ledger row written", logging.DEBUG,
                       request_id=entry.row.request_id)
            return
        self._add_credit([entry])
        try:
            self._send.send_nowait(entry)  # the writer retries it
        except trio.WouldBlock:
            self._lost([entry], f"{error.message}; and the ledger queue was full")
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            self._lost([entry], f"{error.message}; and the ledger was closed")

    async def _queue(self, entry: Entry) -> None:
        try:
            with trio.move_on_after(self._queue_wait_s) as waited:
                await self._send.send(entry)
            if waited.cancelled_caught:
                self._lost([entry], f"the ledger queue stayed full for {self._queue_wait_s}s")
        except (trio.ClosedResourceError, trio.BrokenResourceError):  # the writer is gone
            try:
                await self._store_write([entry])
            except StoreUnavailable as exc:
                self._lost([entry], exc.message)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write batches until closed; then flush the rest and return. Cancelled, it still
        writes what it holds (shielded, for at most ``final_s``)."""
        task_status.started()
        self._running = True
        try:
            async with self._receive:
                closed = False
                pending: list[Entry] = []
                try:
                    while not closed:
                        with trio.CancelScope() as scope:  # the first row waits <= flush_s
                            while len(pending) < self._batch:
                                try:
                                    if pending and self._ack:  # group commit: what is here
                                        pending.append(self._receive.receive_nowait())
                                        continue
                                    pending.append(await self._receive.receive())
                                except trio.WouldBlock:
                                    break
                                except trio.EndOfChannel:
                                    closed = True
                                    break
                                if len(pending) == 1:
                                    scope.deadline = trio.current_time() + self._flush_s
                        await self._write(pending)
                        pending = []
                finally:  # cancelled (the process is stopping in a hurry): write what we have
                    while True:
                        try:
                            pending.append(self._receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                            break
                    with trio.move_on_after(self._final_s, shield=True):
                        await self._write(pending)
                        pending = []
                    if pending:
                        self._lost(pending, f"not written within {self._final_s}s at stop")
        finally:
            self._running = False
            self._done.set()

    async def _write(self, rows: list[Entry]) -> None:
        """Write ``rows``, retrying every ``retry_s`` while the store is unavailable. Returns
        once they are written."""
        while rows:
            try:
                await self._store_write(rows)
            except StoreUnavailable as exc:
                logs.event(_log, "ledger rows not written yet; retrying", logging.ERROR,
                           rows=len(rows), error=exc.message, retry_s=self._retry_s)
                await trio.sleep(self._retry_s)
                continue
            logs.event(_log, "ledger rows written", logging.DEBUG, rows=len(rows))
            return

    async def _store_write(self, entries: list[Entry]) -> None:
        """One transaction: the settlements and the rows. Raises StoreUnavailable.

        Their credit is forgotten before the write starts, not after it commits: a budget
        check made while the write is under way (it may even wait for the write's row lock)
        must not count a give-back that the store's spend may already hold; counted on
        neither side, the check errs towards refusing. A failed write gives it back."""
        self._forget_credit(entries)
        try:
            await self._store.settle([s for e in entries for s in _settlements(e)],
                                     [e.row for e in entries])
        except BaseException:
            self._add_credit(entries)
            raise
        _acknowledge(entries)

    def _add_credit(self, entries: list[Entry]) -> None:
        for entry in entries:
            for subject in _subjects(entry):
                where = (subject, entry.period)
                self._credit[where] = self._credit.get(where, 0.0) + entry.credit_usd

    def _forget_credit(self, entries: list[Entry]) -> None:
        for entry in entries:
            for subject in _subjects(entry):
                where = (subject, entry.period)
                left = self._credit.get(where, 0.0) - entry.credit_usd
                if abs(left) < 1e-12:
                    self._credit.pop(where, None)
                else:
                    self._credit[where] = left

    def _lost(self, rows: list[Entry], why: str) -> None:
        self._forget_credit(rows)  # they will not reach the store: their keys stay charged
        _acknowledge(rows)  # no request waits for them any longer
        logs.event(_log, "ledger rows lost (their keys stay charged the worst case reserved)",
                   logging.ERROR, rows=len(rows), error=why,
                   request_ids=[entry.row.request_id for entry in rows])

    async def close(self) -> None:
        """Stop accepting rows and wait until every queued row is written."""
        self._running = False  # from here, rows go through the queue (or are written at once)
        self._send.close()
        await self._done.wait()


def _settlements(entry: Entry) -> list[Settlement]:
    return [s for s in (entry.settlement, entry.team_settlement) if s is not None]


def _subjects(entry: Entry) -> list[str]:
    """Whose spend the entry's settlements give credit back to."""
    return ([entry.row.key_id] if entry.settlement is not None else []) + \
        ([entry.team_subject] if entry.team_settlement is not None else [])


def _acknowledge(entries: list[Entry]) -> None:
    for entry in entries:
        if entry.written is not None:
            entry.written.set()
