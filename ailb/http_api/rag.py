"""The RAG API (``/v1/rag/collections``): collections, their documents, and a query endpoint to
see what retrieval finds. Who may read and who may ingest: :mod:`ailb.rag.service`.

Documents come as JSON (``{"documents": [{"id", "text", "metadata", "source", "format",
"title"}]}``) or as uploads (multipart/form-data: one or more ``file`` parts, plain text,
Markdown or HTML; optional fields ``metadata``, a JSON object for every file, and ``id``, one
per file in the files' order). An upload's id is its file name unless given; a JSON document
without an id gets one from its text (``doc-<sha256 prefix>``), so sending the same text twice
replaces it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import trio
from quart import Response, request

from ailb.errors import InvalidRequest, NotFound
from ailb.http_api.handling import Form, HandOff, run_request
from ailb.http_api.rag_jobs import start_job, wants_job
from ailb.keys.auth import Principal
from ailb.pipeline.frame import Frame
from ailb.pipeline.notes import ailb_headers
from ailb.pipeline.services import Services
from ailb.rag.documents import extract_text
from ailb.rag.options import (
    check_collection_name,
    check_text,
    flat_metadata,
)
from ailb.rag.service import (
    NewDocument,
    Passage,
    Rag,
    may_read,
    require_ingest,
    require_read,
)
from ailb.rag.store import CollectionInfo, DocumentInfo
from ailb.routing.router import Hints
from ailb.schemas.check import conform
from ailb.schemas.rag import MAX_QUERY_CHARS, CollectionCreate, DocumentsAdd, QueryRequest

View = Callable[..., Awaitable[Response]]
_DOCUMENT_ID: Final = re.compile(r"[^\x00-\x1f\x7f/]{1,200}")
_FORMATS: Final = {"text": "text/plain", "markdown": "text/markdown", "html": "text/html"}


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":"), ensure_ascii=False),
                    status=status, content_type="application/json", headers=dict(headers or {}))


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


def _rag(services: Services) -> Rag:
    if services.rag is None:
        raise NotFound("RAG is not enabled on this gateway (ENABLE_RAG).", code="rag_disabled")
    return services.rag


def _collection_view(info: CollectionInfo) -> dict[str, Any]:
    return {"id": info.name, "object": "rag.collection", "name": info.name,
            "documents": info.documents, "chunks": info.chunks, "embedder": info.embedder,
            "created_at": _iso(info.created_at), "metadata": dict(info.metadata)}


def _document_view(info: DocumentInfo) -> dict[str, Any]:
    return {"id": info.id, "object": "rag.document", "source": info.source,
            "title": info.title, "kind": info.kind, "chunks": info.chunks,
            "added_at": _iso(info.added_at), "metadata": dict(info.metadata)}


def _passage_view(passage: Passage) -> dict[str, Any]:
    return {"id": passage.id, "document_id": passage.document_id, "text": passage.text,
            "score": round(passage.score, 6), "source": passage.source,
            "section": passage.section, "metadata": dict(passage.metadata)}


def _document_id(value: Any, param: str) -> str:
    if not isinstance(value, str) or not _DOCUMENT_ID.fullmatch(value) or value in (".", ".."):
        raise InvalidRequest("A document id is 1-200 characters, without '/' or control "
                             "characters.", param=param)
    return value


def _checked(parse: Callable[[], list[NewDocument]]) -> list[NewDocument]:
    """The documents ``parse`` makes, every text in them storable. Raises InvalidRequest."""
    documents = parse()
    for n, document in enumerate(documents):
        check_text({"id": document.id, "text": document.text, "source": document.source,
                    "title": document.title, "metadata": dict(document.metadata)},
                   f"documents[{n}]")
    return documents


def _json_documents(body: Mapping[str, Any]) -> list[NewDocument]:
    """Documents from a JSON body, held to :class:`DocumentsAdd` (types, lengths, formats and
    ids checked there). Raises InvalidRequest naming the field."""
    documents: list[NewDocument] = []
    for n, item in enumerate(conform(body, DocumentsAdd).documents):
        where = f"documents[{n}]"
        if not item.text.strip():
            raise InvalidRequest(f"'{where}.text' must be a non-empty string.",
                                 param=f"{where}.text")
        doc_id = item.id if item.id is not None else \
            "doc-" + hashlib.sha256(item.text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
        try:
            extracted = extract_text(item.text, content_type=_FORMATS.get(item.format or "", ""))
        except InvalidRequest as exc:
            raise InvalidRequest(exc.message, param=f"{where}.text") from None
        documents.append(NewDocument(
            id=doc_id, text=extracted.text, source=item.source or doc_id,
            title=item.title or extracted.title, kind=extracted.kind,
            metadata=flat_metadata(item.metadata, f"{where}.metadata")))
    return _unique(documents)


def _uploaded_documents(form: Form) -> list[NewDocument]:
    """Documents from uploaded files. Raises InvalidRequest naming the field."""
    for name, _ in form.fields:
        if name not in ("metadata", "id"):
            raise InvalidRequest(f"Unknown form field '{name}'. Known: file, metadata, id.",
                                 param=name)
    files = [f for f in form.files if f.field == "file"]
    strays = [f.field for f in form.files if f.field != "file"]
    if strays or not files:
        raise InvalidRequest("Upload documents as one or more 'file' fields.",
                             param=strays[0] if strays else "file")
    metadata: Any = None
    if form.field("metadata") is not None:
        try:
            metadata = json.loads(form.field("metadata") or "")
        except ValueError:
            raise InvalidRequest("'metadata' must be a JSON object.", param="metadata") from None
    flat = flat_metadata(metadata, "metadata")
    given_ids = [value for key, value in form.fields if key == "id"]
    if given_ids and len(given_ids) != len(files):
        raise InvalidRequest("Give one 'id' per uploaded file (in the files' order), or none.",
                             param="id")
    documents: list[NewDocument] = []
    for n, upload in enumerate(files):
        name = re.split(r"[/\\]", upload.filename)[-1]  # a client's path is not ours to keep
        doc_id = _document_id(given_ids[n] if given_ids else name,
                              "id" if given_ids else "file")
        extracted = extract_text(upload.data, filename=name, content_type=upload.content_type)
        documents.append(NewDocument(id=doc_id, text=extracted.text, source=name or doc_id,
                                     title=extracted.title, kind=extracted.kind, metadata=flat))
    return _unique(documents)


def _unique(documents: list[NewDocument]) -> list[NewDocument]:
    seen: set[str] = set()
    for document in documents:
        if document.id in seen:
            raise InvalidRequest(f"Document id '{document.id}' is given twice.",
                                 param="documents")
        seen.add(document.id)
    return documents


def _page_args() -> tuple[int, int]:
    values: list[int] = []
    for name, default, low, high in (("limit", 100, 1, 1000), ("offset", 0, 0, 10**9)):
        raw = request.args.get(name)
        try:
            value = default if raw is None else int(raw)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise InvalidRequest(f"'{name}' must be an integer from {low} to {high}.",
                                 param=name)
        values.append(value)
    return values[0], values[1]


async def _framed(services: Services, work: Callable[[Rag, Principal], Awaitable[Response]],
                  ) -> Response:
    """The request frame (auth, drain, access log, errors) for the body-less GET and DELETE
    routes, with RAG checked to be on."""
    async def step(frame: Frame, body: dict[str, Any], principal: Principal,
                   hints: Hints) -> Response:
        return await work(_rag(services), principal)
    return await run_request(services, step)


def routes(services: Services) -> list[tuple[str, str, View, list[str]]]:
    """(rule, endpoint, view, methods) for the app factory."""

    async def create() -> Response:
        async def step(frame: Frame, body: dict[str, Any], principal: Principal,
                       hints: Hints) -> Response | HandOff:
            rag = _rag(services)
            asked = conform(body, CollectionCreate)
            name = check_collection_name(asked.name)
            require_ingest(principal, name)
            info = await rag.create(name, flat_metadata(asked.metadata, "metadata"))
            return _json(_collection_view(info), 201, ailb_headers(frame.exchange))
        return await run_request(services, step)

    async def list_collections() -> Response:
        async def work(rag: Rag, principal: Principal) -> Response:
            found = await rag.collections()
            return _json({"object": "list", "data": [
                _collection_view(c) for c in found if may_read(principal, c.name)]})
        return await _framed(services, work)

    async def get_collection(name: str) -> Response:
        async def work(rag: Rag, principal: Principal) -> Response:
            require_read(principal, check_collection_name(name))
            return _json(_collection_view(await rag.collection(name)))
        return await _framed(services, work)

    async def drop_collection(name: str) -> Response:
        async def work(rag: Rag, principal: Principal) -> Response:
            require_ingest(principal, check_collection_name(name))
            await rag.drop(name)
            return _json({"id": name, "object": "rag.collection.deleted", "deleted": True})
        return await _framed(services, work)

    async def add_documents(name: str) -> Response:
        async def add(frame: Frame, principal: Principal,
                      parse: Callable[[], list[NewDocument]]) -> Response:
            rag = _rag(services)
            require_ingest(principal, check_collection_name(name))
            # extraction and the text check are CPU work over up to RAG.max_upload_bytes: in a
            # thread, the loop keeps its turns
            documents = await trio.to_thread.run_sync(_checked, parse)
            if wants_job(services, documents):
                await rag.require(name)  # an unknown collection is a 404 now, not a failed job
                return await start_job(services, name, documents, ailb_headers(frame.exchange))
            added = await rag.add(name, documents)
            return _json({"object": "list", "data": [
                {"id": a.id, "chunks": a.chunks, "source": a.source, "title": a.title}
                for a in added]}, 201, ailb_headers(frame.exchange))

        async def from_json(frame: Frame, body: dict[str, Any], principal: Principal,
                            hints: Hints) -> Response | HandOff:
            return await add(frame, principal, lambda: _json_documents(body))

        async def from_form(frame: Frame, form: Form, principal: Principal,
                            hints: Hints) -> Response | HandOff:
            return await add(frame, principal, lambda: _uploaded_documents(form))
        return await run_request(services, from_json, form_step=from_form)

    async def list_documents(name: str) -> Response:
        async def work(rag: Rag, principal: Principal) -> Response:
            require_read(principal, check_collection_name(name))
            limit, offset = _page_args()
            found = await rag.documents(name, limit + 1, offset)
            return _json({"object": "list", "data": [_document_view(d) for d in found[:limit]],
                          "limit": limit, "offset": offset, "has_more": len(found) > limit})
        return await _framed(services, work)

    async def get_document(name: str, doc_id: str) -> Response:
        async def work(rag: Rag, principal: Principal) -> Response:
            require_read(principal, check_collection_name(name))
            info, chunks = await rag.document(name, _document_id(doc_id, "document_id"))
            return _json({**_document_view(info), "data": [
                {"id": c.id, "object": "rag.chunk", "index": c.index, "start": c.start,
                 "section": c.section, "text": c.text} for c in chunks]})
        return await _framed(services, work)

    async def drop_document(name: str, doc_id: str) -> Response:
        async def work(rag: Rag, principal: Principal) -> Response:
            require_ingest(principal, check_collection_name(name))
            removed = await rag.remove(name, _document_id(doc_id, "document_id"))
            if not removed:
                raise NotFound(f"No document '{doc_id}' in RAG collection '{name}'.",
                               param="document_id", code="document_not_found")
            return _json({"id": doc_id, "object": "rag.document.deleted", "deleted": True,
                          "chunks_removed": removed})
        return await _framed(services, work)

    async def query(name: str) -> Response:
        async def step(frame: Frame, body: dict[str, Any], principal: Principal,
                       hints: Hints) -> Response | HandOff:
            rag = _rag(services)
            require_read(principal, check_collection_name(name))
            asked = conform(body, QueryRequest)
            text = asked.query
            if not text.strip():
                raise InvalidRequest(f"'query' must be a non-empty string of at most "
                                     f"{MAX_QUERY_CHARS} characters.", param="query")
            settings = services.settings.rag
            top_k = settings.top_k if asked.top_k is None else asked.top_k
            min_score = settings.min_score if asked.min_score is None else asked.min_score
            found = await rag.retrieve(name, text, top_k, min_score)
            return _json({"object": "list", "data": [_passage_view(p) for p in found]}, 200,
                         ailb_headers(frame.exchange))
        return await run_request(services, step)

    base = "/v1/rag/collections"
    return [
        (base, "rag_create_collection", create, ["POST"]),
        (base, "rag_list_collections", list_collections, ["GET"]),
        (f"{base}/<name>", "rag_get_collection", get_collection, ["GET"]),
        (f"{base}/<name>", "rag_drop_collection", drop_collection, ["DELETE"]),
        (f"{base}/<name>/documents", "rag_add_documents", add_documents, ["POST"]),
        (f"{base}/<name>/documents", "rag_list_documents", list_documents, ["GET"]),
        (f"{base}/<name>/documents/<doc_id>", "rag_get_document", get_document, ["GET"]),
        (f"{base}/<name>/documents/<doc_id>", "rag_drop_document", drop_document, ["DELETE"]),
        (f"{base}/<name>/query", "rag_query", query, ["POST"]),
    ]
