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
* A call made with ``late`` may be given up by its caller (cancelled, or a deadline): the call
  still happens, and its outcome goes to ``late`` (on the Trio thread) instead of the caller.
* An error meant for several callers (a batch that failed as a whole) reaches each as an
  exception of its own (:func:`own_errors`): one object raised in many tasks would grow one
  traceback from all of them.
* If the thread's loop itself fails (a bug: an error outside any call's own), no caller waits
  forever: every call taken or queued hears ``StoreUnavailable``, so do later ones at once,
  and the failure is logged.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import outcome
import trio

from ailb.errors import StoreUnavailable

C = TypeVar("C")  # the connection the calls are given
T = TypeVar("T")
Work = Callable[[C], Any]
# runs several calls' works in one go (one transaction); one outcome per work, in order
Batch = Callable[[C, Sequence[Work[C]]], list[outcome.Outcome[Any]]]
# where the outcome of a call its caller gave up goes (on the Trio thread)
Late = Callable[[outcome.Outcome[Any]], None]
_Reply = Callable[[outcome.Outcome[Any]], None]
_Job = tuple[Work[C], "Batch[C] | None", _Reply]
_STOP: Any = object()
_log = logging.getLogger("ailb.store")


def own_errors(error: BaseException, n: int) -> list[outcome.Outcome[Any]]:
    """``error`` for ``n`` callers, each its own: the first the exception itself, the others
    clean copies of it (no traceback, cause or context), so that raising it in one caller's
    task does not add to what another's shows."""
    errors: list[outcome.Outcome[Any]] = [outcome.Error(error)]
    return errors + [outcome.Error(_copy(error)) for _ in range(n - 1)]


def _copy(error: BaseException) -> BaseException:
    try:
        twin = copy.copy(error)  # the type, its args and attributes (sqlite_errorcode...)
    except Exception:  # a type that cannot be rebuilt from its args
        return StoreUnavailable(f"{type(error).__name__}: {error}",
                                code="key_store_unavailable")
    twin.__traceback__ = twin.__cause__ = twin.__context__ = None
    return twin


class StoreThread(Generic[C]):
    """The thread, its queue and its connection (see the module docstring)."""

    def __init__(self, conn: C, name: str = "ailb-store", max_batch: int = 256) -> None:
        self._conn = conn
        self._name = name
        self._max_batch = max_batch
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._closed = False  # no new calls
        self._closing = False  # close() was called
        self._failure: str | None = None  # why the loop failed, once it has
        self._thread.start()

    async def call(self, work: Callable[[C], T], batch: Batch[C] | None = None,
                   late: Late | None = None) -> T:
        """``work(conn)`` on the thread; its result, or its exception raised here. With
        ``batch``, it may run together with the other calls queued with the same one. With
        ``late``, a cancelled caller stops waiting at once and the outcome goes to ``late``
        (on the Trio thread; it must not raise). Raises trio.ClosedResourceError once the
        thread is closing, StoreUnavailable once its loop has failed."""
        if late is None:  # with late, a cancellation is delivered while waiting, once queued
            await trio.lowlevel.checkpoint_if_cancelled()
        if self._closed:  # checked after the checkpoint: no job is queued behind the stop
            raise self._refusal()
        return await self._submit(work, batch, late)

    def _refusal(self) -> Exception:
        if self._failure is not None:
            return StoreUnavailable(f"The store's thread {self._name} failed: {self._failure}",
                                    code="key_store_unavailable")
        return trio.ClosedResourceError("the store is closed")

    async def _submit(self, work: Callable[[C], T], batch: Batch[C] | None,
                      late: Late | None) -> T:
        task = trio.lowlevel.current_task()
        token = trio.lowlevel.current_trio_token()
        answered = False  # on the thread: a failing loop may reply to a job again
        abandoned = False  # on the Trio thread: the caller gave up waiting (with late only)

        def deliver(result: outcome.Outcome[Any]) -> None:  # on the Trio thread
            if not abandoned:
                trio.lowlevel.reschedule(task, result)
                return
            try:
                if late is not None:  # abandoned only with a late
                    late(result)
            except Exception:  # a bug in late: raised here, it would end the Trio run
                _log.exception("a store call's late outcome failed")

        def reply(result: outcome.Outcome[Any]) -> None:  # on the thread
            nonlocal answered
            if answered:
                return
            try:
                token.run_sync_soon(deliver, result)
            except trio.RunFinishedError:  # nobody left to tell
                pass
            answered = True

        def abort(_: Any) -> trio.lowlevel.Abort:
            nonlocal abandoned
            if late is None:  # not abandoned: the call happens or not before its caller hears
                return trio.lowlevel.Abort.FAILED
            abandoned = True
            return trio.lowlevel.Abort.SUCCEEDED

        self._jobs.put((work, batch, reply))
        result: T = await trio.lowlevel.wait_task_rescheduled(abort)
        return result

    async def close(self, last: Callable[[C], object] | None = None) -> None:
        """Refuse new calls, finish those already queued, run ``last`` (closing the
        connection), stop and join the thread."""
        if self._closing:
            return
        self._closing = self._closed = True
        ran_last = last is None
        try:
            if last is not None and self._failure is None:
                try:
                    await self._submit(last, None, None)
                    ran_last = True
                except StoreUnavailable:
                    if self._failure is None:
                        raise
        finally:
            self._jobs.put(_STOP)
            await trio.to_thread.run_sync(self._thread.join)
        if not ran_last and last is not None:  # the loop failed: the connection still closes
            await trio.to_thread.run_sync(last, self._conn)

    # -- on the thread ---------------------------------------------------------------------
    def _loop(self) -> None:
        taken: list[Any] = []  # the jobs off the queue, not all answered yet
        try:
            self._serve(taken)
        except BaseException as exc:
            self._fail(exc, taken)

    def _serve(self, taken: list[Any]) -> None:
        held: Any = None  # a job taken from the queue that did not fit the last batch
        while True:
            taken.clear()
            job = held if held is not None else self._jobs.get()
            held = None
            taken.append(job)
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
                taken.append(more)
                if more is _STOP or more[1] is not batch:
                    held = more
                    break
                jobs.append(more)
            self._run_batch(batch, jobs)

    def _run_batch(self, batch: Batch[C], jobs: list[Any]) -> None:
        try:
            results = batch(self._conn, [work for work, _, _ in jobs])
            if len(results) != len(jobs):
                raise RuntimeError(f"a batch of {len(jobs)} calls gave {len(results)} outcomes")
        except BaseException as exc:  # each caller hears of it
            results = own_errors(exc, len(jobs))
        for (_, _, reply), result in zip(jobs, results, strict=True):
            reply(result)

    def _fail(self, exc: BaseException, taken: list[Any]) -> None:
        """The loop failed: refuse every call from now on, answer those taken and every one
        queued until the stop (a caller queueing as this happens is answered too)."""
        self._failure = f"{type(exc).__name__}: {exc}"
        self._closed = True
        _log.critical("the store's thread %s failed; the store refuses every call",
                      self._name, exc_info=exc)
        stopped = False
        for job in taken:
            if job is _STOP:
                stopped = True
            else:
                self._refuse(job)
        while not stopped:
            job = self._jobs.get()
            stopped = job is _STOP
            if not stopped:
                self._refuse(job)

    def _refuse(self, job: Any) -> None:
        try:
            job[2](outcome.Error(self._refusal()))
        except Exception:  # the next one is still answered
            _log.exception("a store call could not be refused")
