"""The spend ledger's writer: rows go through a bounded channel to one task the supervisor owns,
which writes them in batches through the store (off the event loop). Closing the writer flushes
what is queued.

The bound is backpressure: ``record`` waits while the channel is full (the database is slower
than the traffic), so nothing is dropped and no row is written on the caller's task. A batch the
store refuses is kept and retried; only a stop that cannot write within ``final_s`` loses rows,
and says so in the log (with their request ids).
"""

from __future__ import annotations

import logging

import trio

from ailb import logs
from ailb.accounting.store import LedgerRow, Store
from ailb.errors import StoreUnavailable

_log = logging.getLogger("ailb.ledger")


class Ledger:
    def __init__(self, store: Store, flush_s: float = 0.5, batch: int = 200,
                 capacity: int = 10_000, retry_s: float = 1.0, final_s: float = 10.0) -> None:
        self._store = store
        self._flush_s = flush_s
        self._batch = batch
        self._retry_s = retry_s
        self._final_s = final_s
        self._send, self._receive = trio.open_memory_channel[LedgerRow](capacity)
        self._done = trio.Event()

    async def record(self, row: LedgerRow) -> None:
        """Queue a row for the writer; waits while the queue is full. Once the writer is
        closed, the row is written at once (and logged as lost if the store refuses it)."""
        try:
            await self._send.send(row)
        except (trio.ClosedResourceError, trio.BrokenResourceError):  # the writer is gone
            try:
                await self._store.append_ledger([row])
            except StoreUnavailable as exc:
                self._lost([row], exc.message)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write batches until closed; then flush the rest and return. Cancelled, it still
        writes what it holds (shielded, for at most ``final_s``)."""
        task_status.started()
        try:
            async with self._receive:
                closed = False
                pending: list[LedgerRow] = []
                try:
                    while not closed:
                        with trio.CancelScope() as scope:  # the first row waits <= flush_s
                            while len(pending) < self._batch:
                                try:
                                    pending.append(await self._receive.receive())
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
            self._done.set()

    async def _write(self, rows: list[LedgerRow]) -> None:
        """Write ``rows``, retrying every ``retry_s`` while the store is unavailable. Returns
        once they are written."""
        while rows:
            try:
                await self._store.append_ledger(rows)
            except StoreUnavailable as exc:
                logs.event(_log, "ledger rows not written yet; retrying", logging.ERROR,
                           rows=len(rows), error=exc.message, retry_s=self._retry_s)
                await trio.sleep(self._retry_s)
                continue
            logs.event(_log, "ledger rows written", logging.DEBUG, rows=len(rows))
            return

    def _lost(self, rows: list[LedgerRow], why: str) -> None:
        logs.event(_log, "ledger rows lost", logging.ERROR, rows=len(rows), error=why,
                   request_ids=[r.request_id for r in rows])

    async def close(self) -> None:
        """Stop accepting rows and wait until every queued row is written."""
        self._send.close()
        await self._done.wait()
