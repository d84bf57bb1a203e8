"""RAG ingest jobs: what one is, the seam of the store that keeps its status, and when a job
whose process is gone reads as interrupted. Pure.

A documents request too large to answer while the client waits (``RAG.sync_max_bytes``, or
``?async=true``) becomes a job: its documents stay in the memory of the process that accepted
it, which runs it (:mod:`ailb.rag.ingest_jobs`); its status lives in the store beside the keys
(SQLite in the data dir, or PostgreSQL with ``DATABASE_URL``), so every worker process and
every gateway sharing the store can answer ``GET /v1/rag/jobs/<id>``, and it survives a restart.

The process holding a job rewrites its row at least every :data:`HEARTBEAT_S` while it is
``queued`` or ``running``. A job in those states whose row has not moved for :data:`STALE_S`
belonged to a process that died (killed, crashed, the machine stopped): it reads as ``failed``
with the error code ``interrupted`` (:func:`as_seen`); its documents may be partly added (each
document is added whole or not at all), and sending them again replaces them.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, replace
from typing import Any, Final, Literal, Protocol

JobStatus = Literal["queued", "running", "succeeded", "failed"]
HEARTBEAT_S: Final = 5.0
STALE_S: Final = 60.0
RETENTION_S: Final = 7 * 86_400  # finished jobs are forgotten after a week
ID_PREFIX: Final = "job_"


def new_job_id() -> str:
    return ID_PREFIX + secrets.token_hex(12)


def is_job_id(value: str) -> bool:
    rest = value.removeprefix(ID_PREFIX)
    return value.startswith(ID_PREFIX) and len(rest) == 24 and \
        all(c in "0123456789abcdef" for c in rest)


@dataclass(frozen=True, slots=True)
class JobError:
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class IngestJob:
    id: str
    collection: str
    status: JobStatus
    documents_total: int
    documents_done: int
    chunks_done: int
    error: JobError | None
    created_at: float  # Unix seconds
    updated_at: float

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed")

    def data(self) -> str:
        """The JSON text a store keeps beside the id and the two times."""
        return json.dumps({
            "collection": self.collection, "status": self.status,
            "documents_total": self.documents_total, "documents_done": self.documents_done,
            "chunks_done": self.chunks_done,
            "error": None if self.error is None else
            {"code": self.error.code, "message": self.error.message}},
            separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_data(cls, id: str, created_at: float, updated_at: float,
                  data: str) -> IngestJob:
        """The job from a store's row."""
        value: dict[str, Any] = json.loads(data)
        error = value.get("error")
        return cls(id, value["collection"], value["status"], int(value["documents_total"]),
                   int(value["documents_done"]), int(value["chunks_done"]),
                   None if error is None else JobError(error["code"], error["message"]),
                   float(created_at), float(updated_at))


def as_seen(job: IngestJob, now: float) -> IngestJob:
    """``job`` as a reader should see it at ``now``: a queued or running job not updated for
    :data:`STALE_S` is failed (``interrupted``), its process gone."""
    if job.finished or now - job.updated_at <= STALE_S:
        return job
    return replace(job, status="failed", error=JobError(
        "interrupted", "The gateway process running this job stopped before it finished "
        "(documents added before that stay; send the rest again)."))


class RagJobStore(Protocol):
    """Where ingest jobs' status lives. Every call may fail: it then raises StoreUnavailable."""

    async def put_rag_job(self, job: IngestJob) -> None:
        """Insert or replace ``job``, durably, before returning (and forget jobs older than
        :data:`RETENTION_S`). Raises StoreUnavailable."""
        ...

    async def get_rag_job(self, job_id: str) -> IngestJob | None:
        """The job, or None. Raises StoreUnavailable."""
        ...
