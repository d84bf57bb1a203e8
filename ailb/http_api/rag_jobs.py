"""RAG ingest on the wire: the documents route's own body limit (``RAG.max_upload_bytes``),
when a documents request becomes a job (202), and ``GET /v1/rag/jobs/<job_id>``. What a job is
and how it runs: :mod:`ailb.rag.jobs`, :mod:`ailb.rag.ingest_jobs`.

A documents request runs as a job when it asks (``?async=true``) or when its body is larger
than ``RAG.sync_max_bytes`` (``?async=false`` keeps it synchronous whatever its size). A job's
status may be read by the keys that may change its collection, and the admin key.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from quart import Response, request

from ailb.errors import InvalidRequest, NotFound
from ailb.http_api.handling import HandOff, run_request
from ailb.keys.auth import Principal
from ailb.pipeline.frame import Frame
from ailb.pipeline.services import Services
from ailb.rag.ingest_jobs import IngestJobs
from ailb.rag.jobs import IngestJob, is_job_id
from ailb.rag.service import NewDocument, require_ingest
from ailb.routing.router import Hints

View = Callable[..., Awaitable[Response]]


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


def job_view(job: IngestJob) -> dict[str, Any]:
    return {"object": "rag.ingest_job", "id": job.id, "status": job.status,
            "collection": job.collection, "documents_total": job.documents_total,
            "documents_done": job.documents_done, "chunks_done": job.chunks_done,
            "error": None if job.error is None else
            {"code": job.error.code, "message": job.error.message},
            "created_at": _iso(job.created_at), "updated_at": _iso(job.updated_at)}


def _jobs(services: Services) -> IngestJobs:
    if services.rag_jobs is None:
        raise NotFound("RAG is not enabled on this gateway (ENABLE_RAG).", code="rag_disabled")
    return services.rag_jobs


def wants_job(services: Services, documents: Sequence[NewDocument]) -> bool:
    """Whether this documents request runs as a job (see the module docstring). Raises
    InvalidRequest for an ``async`` parameter other than true/false."""
    asked = request.args.get("async")
    if asked is not None:
        if asked.lower() not in ("true", "false"):
            raise InvalidRequest("'async' must be true or false.", param="async")
        return asked.lower() == "true"
    size = request.content_length
    if size is None:  # chunked: the text is what it carried
        size = sum(len(d.text) for d in documents)
    return size > services.settings.rag.sync_max_bytes


async def start_job(services: Services, collection: str, documents: Sequence[NewDocument],
                    headers: Mapping[str, str]) -> Response:
    """Accept the documents as a job: 202 with its status and ``Location``. Raises
    RateLimited (the queue is full), StoreUnavailable."""
    job = await _jobs(services).submit(collection, documents)
    return Response(json.dumps(job_view(job), separators=(",", ":")), status=202,
                    content_type="application/json",
                    headers={**headers, "location": f"/v1/rag/jobs/{job.id}"})


def body_limits(services: Services) -> dict[str, int]:
    """The routes whose body may pass SERVER.max_body_bytes: RAG documents, to
    RAG.max_upload_bytes (see :mod:`ailb.http_api.connection`), when RAG is on."""
    if not services.settings.enable_rag:
        return {}
    return {"rag_add_documents": services.settings.rag.max_upload_bytes}


def routes(services: Services) -> list[tuple[str, str, View, list[str]]]:
    """(rule, endpoint, view, methods) for the app factory."""

    async def get_job(job_id: str) -> Response:
        async def step(frame: Frame, body: dict[str, Any], principal: Principal,
                       hints: Hints) -> Response | HandOff:
            jobs = _jobs(services)
            job = await jobs.get(job_id) if is_job_id(job_id) else None
            if job is None:
                raise NotFound(f"No RAG ingest job '{job_id}'.", param="job_id",
                               code="job_not_found")
            require_ingest(principal, job.collection)
            return Response(json.dumps(job_view(job), separators=(",", ":")),
                            content_type="application/json")
        return await run_request(services, step)

    return [("/v1/rag/jobs/<job_id>", "rag_get_job", get_job, ["GET"])]
