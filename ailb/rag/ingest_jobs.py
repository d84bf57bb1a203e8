"""Running RAG ingest jobs (:mod:`ailb.rag.jobs`) in this process.

:meth:`IngestJobs.run` is a task of the supervisor's nursery: ``RAG.job_workers`` jobs run at
once, and at most ``RAG.job_queue`` more wait; one more is refused at once (RateLimited, 429
with Retry-After) rather than queued without bound. A job holds its documents' text in memory
until it ends, so what the held jobs hold together is bounded too: a job that would take it
over ``RAG.job_queue_bytes`` is refused the same way (unless it is the only one: a job larger
than the bound runs alone, else it could never run). The chunking, embedding and ChromaDB
writes are :meth:`ailb.rag.service.Rag.add`'s, which keeps the event loop turning (worker
threads, small writes).

Each job's row is written when it is accepted, when it starts, after each document (at most
once per :data:`SAVE_EVERY_S`; and every :data:`~ailb.rag.jobs.HEARTBEAT_S` anyway, so the
row shows its process alive), and when it ends.

Shutdown: a job counts in the drain like a request. A job accepted before the drain began runs
on (queued ones start) for the grace period (``SERVER.grace_s``); one still queued or running
when the grace period is over is cancelled and marked ``failed`` with the code ``shutdown``
(the documents added so far stay).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Final

import trio

from ailb import logs
from ailb.errors import GatewayError, RateLimited
from ailb.pipeline.drain import Drain
from ailb.rag.jobs import HEARTBEAT_S, IngestJob, JobError, RagJobStore, as_seen, new_job_id
from ailb.rag.service import Added, NewDocument, Rag

_log = logging.getLogger("ailb.rag")
SAVE_EVERY_S: Final = 1.0
_FINAL_SAVE_S: Final = 10.0  # the most a job's last write waits once it was cancelled
_SHUTDOWN: Final = JobError("shutdown", "AILB shut down before this job finished (documents "
                            "added before that stay; send the rest again).")


@dataclass(slots=True, eq=False)
class _Held:
    """A job this process holds: its latest status, its documents, and its cancel scope."""

    job: IngestJob
    documents: Sequence[NewDocument]
    size: int  # bytes its documents hold (see held_bytes)
    saved_at: float = 0.0
    cut_asked: bool = False
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    saving: trio.Lock = field(default_factory=trio.Lock)  # rows written in the order made

    def cut(self) -> None:
        """The grace period is over (the drain's :class:`~ailb.pipeline.drain.Cuttable`)."""
        self.cut_asked = True
        self.scope.cancel()


def held_bytes(documents: Sequence[NewDocument]) -> int:
    """About what ``documents`` hold in memory: their strings' own sizes (a text of non-Latin
    characters takes 2 or 4 bytes a character), metadata counted roughly."""
    return sum(sys.getsizeof(d.text) + sys.getsizeof(d.id) + sys.getsizeof(d.source)
               + sys.getsizeof(d.title) + 100 * len(d.metadata) for d in documents)


class IngestJobs:
    def __init__(self, rag: Rag, store: RagJobStore, drain: Drain, *, workers: int,
                 queue: int, queue_bytes: int = 256 * 1024 * 1024,
                 clock: Callable[[], float] = time.time) -> None:
        self._rag = rag
        self._store = store
        self._drain = drain
        self._workers = workers
        self._most = workers + queue  # jobs held at once: running plus waiting
        self._most_bytes = queue_bytes  # and the bytes their documents hold together
        self._bytes = 0
        self._clock = clock
        self._held: dict[str, _Held] = {}
        self._send, self._receive = trio.open_memory_channel[_Held](math.inf)

    async def submit(self, collection: str, documents: Sequence[NewDocument]) -> IngestJob:
        """Accept a job adding ``documents`` to ``collection`` (its row written before this
        returns). Raises RateLimited when ``RAG.job_workers + RAG.job_queue`` jobs are held
        already, or their documents and these would hold more than ``RAG.job_queue_bytes``;
        StoreUnavailable."""
        if len(self._held) >= self._most:
            raise RateLimited("Too many RAG ingest jobs are running or waiting on this "
                              "gateway; try again later (RAG.job_queue).",
                              code="ingest_queue_full", retry_after_s=30.0)
        size = held_bytes(documents)
        if self._held and self._bytes + size > self._most_bytes:
            raise RateLimited("The RAG ingest jobs running or waiting on this gateway hold "
                              "too much document text to take this one now; try again later "
                              "(RAG.job_queue_bytes).",
                              code="ingest_queue_full", retry_after_s=30.0)
        now = self._clock()
        held = _Held(IngestJob(new_job_id(), collection, "queued", len(documents), 0, 0, None,
                               now, now), documents, size)
        self._held[held.job.id] = held  # taken before the await: the bounds hold
        self._bytes += size
        self._drain.enter()
        self._drain.add_stream(held)
        try:
            await self._save(held)
        except BaseException:
            self._let_go(held)
            raise
        self._send.send_nowait(held)
        return held.job

    async def get(self, job_id: str) -> IngestJob | None:
        """A job's status, from the store (any process's job). Raises StoreUnavailable."""
        job = await self._store.get_rag_job(job_id)
        return None if job is None else as_seen(job, self._clock())

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                  ) -> None:
        """Run jobs until cancelled (a task of the supervisor's nursery)."""
        async with trio.open_nursery() as nursery:
            for _ in range(self._workers):
                nursery.start_soon(self._work)
            nursery.start_soon(self._heartbeat)
            task_status.started()

    async def _work(self) -> None:
        async for held in self._receive:
            try:
                await self._run_one(held)
            finally:
                self._let_go(held)

    async def _heartbeat(self) -> None:
        while True:
            await trio.sleep(HEARTBEAT_S)
            for held in list(self._held.values()):
                if not held.job.finished:
                    try:
                        await self._save(held)
                    except GatewayError as exc:
                        logs.event(_log, "an ingest job's status could not be saved",
                                   logging.WARNING, job=held.job.id, error=exc.message)

    async def _run_one(self, held: _Held) -> None:
        final: IngestJob | None = None
        try:
            with held.scope:
                if held.cut_asked:
                    held.scope.cancel()
                held.job = replace(held.job, status="running")
                await self._save(held)
                await self._rag.add(held.job.collection, held.documents,
                                    partial(self._progress, held))
                final = replace(held.job, status="succeeded")
            if held.scope.cancelled_caught:
                final = replace(held.job, status="failed", error=_SHUTDOWN)
        except GatewayError as exc:
            final = replace(held.job, status="failed",
                            error=JobError(exc.code or "error", exc.message))
        except Exception:  # a bug of ours: the job fails, the traceback goes to the log
            _log.exception("an ingest job failed")
            final = replace(held.job, status="failed",
                            error=JobError("internal_error", "The server had an error while "
                                           "running this job."))
        finally:
            # cancelled from outside (the supervisor ends): failed too, said so in the store
            held.job = final or replace(held.job, status="failed", error=_SHUTDOWN)
            with trio.move_on_after(_FINAL_SAVE_S, shield=True):
                try:
                    await self._save(held)
                except GatewayError as exc:
                    logs.event(_log, "an ingest job's status could not be saved",
                               logging.ERROR, job=held.job.id, error=exc.message)
        logs.event(_log, "RAG ingest job ended", job=held.job.id, status=held.job.status,
                   collection=held.job.collection, documents=held.job.documents_done,
                   chunks=held.job.chunks_done)

    async def _progress(self, held: _Held, added: Added) -> None:
        held.job = replace(held.job, documents_done=held.job.documents_done + 1,
                           chunks_done=held.job.chunks_done + added.chunks)
        if self._clock() - held.saved_at >= SAVE_EVERY_S:
            try:
                await self._save(held)
            except GatewayError as exc:  # the heartbeat tries again; the job goes on
                logs.event(_log, "an ingest job's status could not be saved",
                           logging.WARNING, job=held.job.id, error=exc.message)

    async def _save(self, held: _Held) -> None:
        async with held.saving:
            now = self._clock()
            held.job = replace(held.job, updated_at=now)
            held.saved_at = now
            await self._store.put_rag_job(held.job)

    def _let_go(self, held: _Held) -> None:
        if self._held.pop(held.job.id, None) is not None:
            self._bytes -= held.size
            self._drain.discard_stream(held)
            self._drain.leave()
