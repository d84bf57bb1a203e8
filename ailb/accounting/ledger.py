"""The spend ledger's writer: rows go through a bounded channel to one task the supervisor owns,
which writes them in batches. Closing the writer flushes what is queued.

If the channel is full (the database is slower than the traffic), the row is written at once
on the caller's thread instead: backpressure never drops a row.
"""

from __future__ import annotations

import logging

import trio

from ailb import logs
from ailb.keys.store import LedgerRow, Store

_log = logging.getLogger("ailb.ledger")


class Ledger:
    def __init__(self, store: Store, flush_s: float = 0.5, batch: int = 200,
                 capacity: int = 10_000) -> None:
        self._store = store
        self._flush_s = flush_s
        self._batch = batch
        self._send, self._receive = trio.open_memory_channel[LedgerRow](capacity)
        self._done = trio.Event()

    def record(self, row: LedgerRow) -> None:
        try:
            self._send.send_nowait(row)
        except (trio.WouldBlock, trio.ClosedResourceError):
            self._store.append_ledger([row])

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write batches until closed; then flush the rest and return."""
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
                        self._write(pending)
                        pending = []
                finally:  # cancelled (the process is stopping in a hurry): write what we have
                    while True:
                        try:
                            pending.append(self._receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                            break
                    self._write(pending)
        finally:
            self._done.set()

    def _write(self, rows: list[LedgerRow]) -> None:
        if rows:
            self._store.append_ledger(rows)
            logs.event(_log, "ledger rows written", logging.DEBUG, rows=len(rows))

    async def close(self) -> None:
        """Stop accepting rows and wait until every queued row is written."""
        self._send.close()
        await self._done.wait()
