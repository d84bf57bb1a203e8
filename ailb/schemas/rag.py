"""The RAG API's shapes (``/v1/rag/collections``)."""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec

from ailb.schemas.common import (
    CollectionName,
    NonEmpty,
    Score,
    Shape,
    Strict,
    TopK,
    matching,
)

# Metadata is flat: strings, numbers and booleans (nulls dropped), as ChromaDB stores it; each
# value is checked by ailb.rag.options.flat_metadata, whose errors name the key.
FlatMetadata = Annotated[dict[str, Any], msgspec.Meta(
    description="A flat object: keys of 1-100 characters; values strings, numbers, booleans "
    "or null.")]
DocumentId = Annotated[str, msgspec.Meta(min_length=1, max_length=200), matching(
    r"^(?!\.{1,2}$)[^\x00-\x1f\x7f/]{1,200}(?!\n)$")]


MAX_QUERY_CHARS: Final = 20_000


class CollectionCreate(Strict):
    name: CollectionName
    metadata: FlatMetadata | None = None


class DocumentIn(Strict):
    text: NonEmpty
    id: DocumentId | None = None
    format: Literal["text", "markdown", "html"] | None = None
    source: Annotated[str, msgspec.Meta(max_length=500)] | None = None
    title: Annotated[str, msgspec.Meta(max_length=500)] | None = None
    metadata: FlatMetadata | None = None


class DocumentsAdd(Strict):
    """JSON documents; ``multipart/form-data`` uploads (``file`` fields, optional
    ``metadata`` as JSON and ``id``) are accepted too."""

    documents: Annotated[list[DocumentIn], msgspec.Meta(min_length=1)]


class QueryRequest(Strict):
    query: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_QUERY_CHARS)]
    top_k: TopK | None = None
    min_score: Score | None = None


class Collection(Shape):
    id: str
    object: str
    name: str
    metadata: dict[str, Any]


class ObjectList(Shape):
    """A list answer: ``data`` holds the objects."""

    object: str
    data: list[dict[str, Any]]


class JobError(Shape):
    code: str
    message: str


class IngestJob(Shape):
    """A documents request run as a job (202), and ``GET /v1/rag/jobs/<job_id>``."""

    object: Literal["rag.ingest_job"]
    id: str
    status: Literal["queued", "running", "succeeded", "failed"]
    collection: str
    documents_total: int
    documents_done: int
    chunks_done: int
    error: JobError | None
    created_at: str
    updated_at: str
