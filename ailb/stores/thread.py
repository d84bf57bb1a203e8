"""One long-lived OS thread that runs a store's blocking calls in order, fed by a queue: the
embedded store's alternative to a ``trio.to_thread.run_sync`` per call.

Why: a virtual key's request makes two store calls on its path (the write-ahead reservation,
and the acknowledged ledger row), one after the other. ``to_thread.run_sync`` costs about
60 us of CPU each on top of the database's own work (a job for the thread cache, the thread's
name set and reset, a capacity limiter, checkpoints); a thread that stays, a queue and a
direct reschedule of the waiting task cost a third of that. And a thread that sees every call
queued can run a run of them in one transaction (:meth:`StoreThread.call` with ``batch``: one
commit for many reservations or settlements, a group commit).

Rules:

* Calls run in the order they were made, one at a time, on the one thread.
* A call is not abandoned when its caller is cancelled: the caller hears of it once the call
  has happened (a write has happened or not), and the cancellation is delivered at its next
  checkpoint, as with ``to_thread.run_sync(abandon_on_cancel=False)``.
* A call made with a ``batch`` (a callable that takes the connection and calls' works, and
  returns one outcome per work) is run by it, together with the calls queued right behind it
  with the same ``batch`` (up to ``max_batch``); a call without one runs alone.
* ``close`` lets the calls already queued finish, stops the thread and joins it (owned by the
  store, closed with it: nothing outlives the store).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import outcome
import trio

C = TypeVar("C")  # the connection the calls are given
T = TypeVar("T")
Work = Callable[[C], Any]
# runs several calls' works in one go (one transaction); one outcome per work, in order
Batch = Callable[[C, Sequence[Work[C]]], list[outcome.Outcome[Any]]]
_Reply = Callable[[outcome.Outcome[Any]], None]
_Job = tuple[Work[C], "Batch[C] | None", _Reply]
_STOP: Any = object()


class StoreThread(Generic[C]):
    """The thread, its queue and its connection (see the module docstring)."""

    def __init__(self, conn: C, name: str = "ailb-store", max_batch: int = 256) -> None:
        self._conn = conn
        self._max_batch = max_batch
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._closed = False
        self._thread.start()

    async def call(self, work: Callable[[C], T], batch: Batch[C] | None = None) -> T:
        """``work(conn)`` on the thread; its result, or its exception raised here. With
        ``batch``, it may run together with the other calls queued with the same one. Raises
        trio.ClosedResourceError once the thread is closing."""
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:  # checked after the checkpoint: no job is queued behind the stop
            raise trio.ClosedResourceError("the store is closed")
        return await self._submit(work, batch)

    async def _submit(self, work: Callable[[C], T], batch: Batch[C] | None) -> T:
        task = trio.lowlevel.current_task()
        token = trio.lowlevel.current_trio_token()

        def reply(result: outcome.Outcome[Any]) -> None:  # on the thread
            try:
                token.run_sync_soon(trio.lowlevel.reschedule, task, result)
            except trio.RunFinishedError:  # nobody left to tell
                pass

        self._jobs.put((work, batch, reply))
        # not abandoned: the call happens or not before its caller hears of it
        result: T = await trio.lowlevel.wait_task_rescheduled(
            lambda _: trio.lowlevel.Abort.FAILED)
        return result

    async def close(self, last: Callable[[C], object] | None = None) -> None:
        """Refuse new calls, finish those already queued, run ``last`` (closing the
        connection), stop and join the thread."""
        if self._closed:
            return
        self._closed = True
        try:
            if last is not None:
                await self._submit(last, None)
        finally:
            self._jobs.put(_STOP)
            await trio.to_thread.run_sync(self._thread.join)

    # -- on the thread ---------------------------------------------------------------------
    def _loop(self) -> None:
        held: Any = None  # a job taken from the queue that did not fit the last batch
        while True:
            job = held if held is not None else self._jobs.get()
            held = None
            if job is _STOP:
                return
            work, batch, reply = job
            if batch is None:
                reply(outcome.capture(work, self._conn))
                continue
            jobs = [job]
            while len(jobs) < self._max_batch:
                try:
                    more = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP or more[1] is not batch:
                    held = more
                    break
                jobs.append(more)
            self._run_batch(batch, jobs)

    def _run_batch(self, batch: Batch[C], jobs: list[Any]) -> None:
        try:
            results = batch(self._conn, [work for work, _, _ in jobs])
        except BaseException as exc:  # each caller hears of it
            results = [outcome.Error(exc)] * len(jobs)
        for (_, _, reply), result in zip(jobs, results, strict=True):
            reply(result)
