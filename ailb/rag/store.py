"""RAG collections in the vector store: one ChromaDB collection ``rag-<name>`` per collection.

The registry lives in ChromaDB itself, so it survives restarts and is shared by every AILB
instance on one ChromaDB server: a collection's metadata holds its creation time
(``ailb_created_at``), the embedder that filled it, and the user's metadata (JSON, under
``ailb_metadata``, so user keys cannot clash with ChromaDB's own).

Each chunk of a document is one record, id ``<document id>::<generation>::<chunk index>``, whose
text is the chunk and whose metadata is:

===================  ==========================================================
``document_id``      the document's id
``source``           the file name, the source given, or the document id
``title``            the document's title ("" if it has none)
``kind``             ``text``, ``markdown`` or ``html``
``section``          the nearest heading before the chunk ("" if none)
``chunk``            the chunk's index in the document (0 first)
``chunks``           how many chunks the document has
``start``            the chunk's character offset in the extracted text
``added_at``         when the document was added (epoch seconds)
``generation``       which ingest of the document wrote the chunk (a replacement writes a new
                     generation, then deletes the old one: a failed one leaves the old intact)
``m.<key>``          the document's user metadata (strings, numbers, booleans)
===================  ==========================================================

Chunk 0 of each document stands for the document: listing documents reads only those.

Every method blocks (ChromaDB is synchronous): :class:`~ailb.rag.service.Rag` calls them in a
worker thread. Unknown collections raise NotFound (``collection_not_found``), a collection
filled by another embedder EmbedderMismatch (409), ChromaDB failures StoreUnavailable (503).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final

from ailb.errors import Conflict, EmbedderMismatch, NotFound
from ailb.rag.chunking import Chunk
from ailb.rag.context import Passage
from ailb.vectors.chroma import EMBEDDER_KEY, Collection, Metadata, Record, VectorStore
from ailb.vectors.embedders import Vector

_log = logging.getLogger("ailb.rag")
PREFIX: Final = "rag-"
CREATED_KEY: Final = "ailb_created_at"
METADATA_KEY: Final = "ailb_metadata"
USER: Final = "m."  # user metadata keys in chunk metadata start with this

Scalar = str | int | float | bool


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    name: str
    documents: int
    chunks: int
    embedder: str
    created_at: float  # epoch seconds
    metadata: Mapping[str, Scalar]


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    id: str
    source: str
    title: str
    kind: str
    chunks: int
    added_at: float
    metadata: Mapping[str, Scalar]


@dataclass(frozen=True, slots=True)
class StoredChunk:
    id: str
    index: int
    start: int
    section: str
    text: str


@dataclass(frozen=True, slots=True)
class DocumentMeta:
    """What every chunk of one document records about it."""

    id: str
    source: str
    title: str
    kind: str
    metadata: Mapping[str, Scalar]


def chunk_id(document_id: str, generation: str, index: int) -> str:
    # unambiguous: generation and index after the last two "::", whatever the document id holds
    return f"{document_id}::{generation}::{index}"


def chunk_metadata(document: DocumentMeta, chunk: Chunk, chunks: int, at: float,
                   generation: str) -> Metadata:
    """The stored metadata of one chunk (see the module docstring)."""
    return {
        **{f"{USER}{key}": value for key, value in document.metadata.items()},
        "document_id": document.id, "source": document.source, "title": document.title,
        "kind": document.kind, "section": chunk.section, "chunk": chunk.index,
        "chunks": chunks, "start": chunk.start, "added_at": at, "generation": generation,
    }


def user_metadata(metadata: Mapping[str, Any]) -> dict[str, Scalar]:
    return {key[len(USER):]: value for key, value in metadata.items() if key.startswith(USER)}


def _document(record: Record) -> DocumentInfo:
    m = record.metadata
    return DocumentInfo(id=str(m.get("document_id", "")), source=str(m.get("source", "")),
                        title=str(m.get("title", "")), kind=str(m.get("kind", "")),
                        chunks=int(m.get("chunks", 0)), added_at=float(m.get("added_at", 0.0)),
                        metadata=user_metadata(m))


def _collection_not_found(name: str) -> NotFound:
    return NotFound(f"No RAG collection named '{name}'.", param="collection",
                    code="collection_not_found")


class RagStore:
    def __init__(self, store: VectorStore, embedder_id: str) -> None:
        self._store = store
        self._embedder_id = embedder_id
        self._open: dict[str, Collection] = {}
        self._counts: dict[str, int] = {}  # chunks per collection, as of the last change

    @property
    def where(self) -> str:
        return self._store.where

    def close(self) -> None:
        self._open.clear()
        self._store.close()

    def check(self) -> None:
        """Open every existing collection once and count its chunks: raises EmbedderMismatch
        if any was filled by another embedder (blocking; call at start-up)."""
        for name in self._store.names():
            self.count(name)

    def is_open(self, name: str) -> bool:
        """Whether ``name`` is known to exist (no I/O: it was opened or created here)."""
        return name in self._open

    def total(self) -> int:
        """Chunks in every collection, as of the last change (no I/O)."""
        return sum(self._counts.values())

    def require(self, name: str) -> Collection:
        """The open collection ``name``. Raises NotFound or EmbedderMismatch."""
        found = self._open.get(name)
        if found is None:
            found = self._store.open(name, self._embedder_id, create=False)
            if found is None:
                raise _collection_not_found(name)
            self._open[name] = found
        return found

    @contextmanager
    def _using(self, name: str) -> Iterator[Collection]:
        """``require(name)``; if ChromaDB no longer has it (another instance deleted it),
        forget the handle and raise NotFound."""
        try:
            yield self.require(name)
        except NotFound as exc:
            if exc.code != "collection_not_found":
                self._forget(name)
                raise _collection_not_found(name) from exc
            raise

    def _forget(self, name: str) -> None:
        self._open.pop(name, None)
        self._counts.pop(name, None)

    # --- collections ----------------------------------------------------------------------

    def create(self, name: str, metadata: Mapping[str, Scalar], at: float) -> CollectionInfo:
        """A new empty collection. Raises Conflict (``collection_exists``) if there is one."""
        exists = Conflict(f"A RAG collection named '{name}' already exists.", param="name",
                          code="collection_exists")
        try:  # ask the store, not the handles: another instance may have dropped it
            found = self._store.open(name, self._embedder_id, create=False)
        except EmbedderMismatch as exc:
            raise exists from exc
        if found is not None:
            self._open[name] = found
            raise exists
        self._forget(name)
        collection = self._store.open(name, self._embedder_id, create=True, metadata={
            CREATED_KEY: at, METADATA_KEY: json.dumps(dict(metadata), ensure_ascii=False)})
        assert collection is not None
        self._open[name] = collection
        self._counts[name] = 0
        return CollectionInfo(name, 0, 0, self._embedder_id, at, dict(metadata))

    def info(self, name: str) -> CollectionInfo:
        """Raises NotFound or EmbedderMismatch."""
        with self._using(name) as collection:
            raw = collection.metadata
            documents = len(collection.get(where={"chunk": 0}, texts=False))
            chunks = self._counted(name, collection.count())
        try:
            metadata = json.loads(str(raw.get(METADATA_KEY) or "{}"))
        except ValueError:
            metadata = {}
        return CollectionInfo(name, documents, chunks, str(raw.get(EMBEDDER_KEY, "")),
                              float(raw.get(CREATED_KEY, 0.0)),
                              metadata if isinstance(metadata, dict) else {})

    def collections(self) -> list[CollectionInfo]:
        """Every collection, by name. One filled by another embedder (only possible on a
        shared ChromaDB server) is left out, with a warning in the log."""
        found: list[CollectionInfo] = []
        for name in self._store.names():
            try:
                found.append(self.info(name))
            except NotFound:
                continue  # deleted meanwhile
            except EmbedderMismatch:
                _log.warning("a RAG collection was filled with another embedder; not listed",
                             extra={"fields": {"collection": name}})
        return found

    def drop(self, name: str) -> None:
        """Delete a collection and all its documents. Raises NotFound."""
        self._forget(name)
        try:
            dropped = self._store.drop(name)
        finally:
            self._forget(name)  # a read running meanwhile may have opened it again
        if not dropped:
            raise _collection_not_found(name)

    # --- documents ------------------------------------------------------------------------

    def write(self, name: str, ids: Sequence[str], vectors: Sequence[Vector],
              texts: Sequence[str], metadatas: Sequence[Metadata]) -> None:
        """Add or replace chunks (one ChromaDB write: keep batches small)."""
        with self._using(name) as collection:
            collection.upsert(ids, vectors, texts, metadatas)

    def remove_document(self, name: str, document_id: str, *, only: str | None = None,
                        keep: str | None = None) -> int:
        """Delete a document's chunks (``only`` those of one generation, or all but those of
        the generation to ``keep``); how many there were (0: none)."""
        with self._using(name) as collection:
            records = collection.get(where={"document_id": document_id}, texts=False)
            ids = [r.id for r in records
                   if (only is None or r.metadata.get("generation") == only)
                   and (keep is None or r.metadata.get("generation") != keep)]
            collection.delete(ids=ids)
        return len(ids)

    def documents(self, name: str, limit: int, offset: int) -> list[DocumentInfo]:
        """A page of the collection's documents (in the order they were added)."""
        with self._using(name) as collection:
            records = collection.get(where={"chunk": 0}, limit=limit, offset=offset,
                                     texts=False)
        return [_document(r) for r in records]

    def document(self, name: str, document_id: str) -> tuple[DocumentInfo, list[StoredChunk]]:
        """A document and its chunks in order. Raises NotFound (``document_not_found``)."""
        with self._using(name) as collection:
            records = collection.get(where={"document_id": document_id})
        if not records:
            raise NotFound(f"No document '{document_id}' in RAG collection '{name}'.",
                           param="document_id", code="document_not_found")
        records.sort(key=lambda r: int(r.metadata.get("chunk", 0)))
        chunks = [StoredChunk(r.id, int(r.metadata.get("chunk", 0)),
                              int(r.metadata.get("start", 0)),
                              str(r.metadata.get("section", "")), r.text) for r in records]
        return _document(records[0]), chunks

    def query(self, name: str, vector: Vector, k: int, min_score: float) -> list[Passage]:
        """Up to ``k`` chunks most similar to ``vector`` with a score of at least
        ``min_score``, best first."""
        with self._using(name) as collection:
            hits = collection.query(vector, k)
        return [Passage(id=h.id, document_id=str(h.metadata.get("document_id", "")),
                        text=h.text, score=h.score, source=str(h.metadata.get("source", "")),
                        section=str(h.metadata.get("section", "")),
                        metadata=user_metadata(h.metadata))
                for h in hits if h.score >= min_score]

    def count(self, name: str) -> int:
        """Chunks in the collection now (and remembered for :meth:`total`)."""
        with self._using(name) as collection:
            return self._counted(name, collection.count())

    def _counted(self, name: str, chunks: int) -> int:
        self._counts[name] = chunks
        return chunks
