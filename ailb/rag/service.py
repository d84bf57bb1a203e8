"""RAG as request handlers use it: collections and documents in, passages out.

Who may do what (``principal`` is the caller; the admin key may do everything):

* **read** a collection (list, get, its documents, query it, and opt in to it from a chat
  request): every key whose ``rag_collections`` is empty, or names the collection (a name or
  an fnmatch glob such as ``docs-*``);
* **ingest** (create the collection, add and delete documents, delete the collection): only a
  key whose ``rag_collections`` names the collection. An empty list grants none.

Ingestion streams: each document is chunked, then embedded and written at most
``RAG.write_batch`` chunks at a time, each write in a worker thread, with a checkpoint between
batches. A ChromaDB write holds the GIL, and so freezes the event loop, for its whole length,
which grows with the vectors' size, the collection's and the machine's load (1-5 ms a chunk
measured): batches shrink when writes are slow, so that one write takes about
:data:`WRITE_TARGET_S`, and grow back to ``write_batch`` when they are fast. Writes to one
collection are
serialised, so replacing a document (its old chunks deleted first) never interleaves with
another write of it. Retrievals are cached by :func:`~ailb.caches.keys.rag_cache_key`, tagged
with the collection; every change to a collection drops its cached retrievals.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Final, TypeVar

import trio

from ailb import logs
from ailb.caches.keys import rag_cache_key
from ailb.caches.lru import BoundedCache
from ailb.config.schema import RagSettings
from ailb.errors import GatewayError, PermissionDenied
from ailb.keys.auth import Principal
from ailb.metrics import Metrics
from ailb.rag.chunking import Chunk, chunk_text
from ailb.rag.context import Passage as Passage
from ailb.rag.store import (
    CollectionInfo,
    DocumentInfo,
    DocumentMeta,
    RagStore,
    Scalar,
    StoredChunk,
    chunk_id,
    chunk_metadata,
)
from ailb.vectors.embedders import Embedder

_log = logging.getLogger("ailb.rag")
_CLEANUP_S: Final = 30.0  # the most a failed ingest waits to remove its partial document
WRITE_TARGET_S: Final = 0.06  # how long one ChromaDB write may freeze the event loop, about
_MIN_BATCH: Final = 8
T = TypeVar("T")


def may_read(principal: Principal, collection: str) -> bool:
    """Whether the caller may read ``collection`` (see the module docstring)."""
    key = principal.key
    return principal.is_admin or key is None or key.may_read_collection(collection)


def may_ingest(principal: Principal, collection: str) -> bool:
    """Whether the caller may create, fill or delete ``collection``."""
    key = principal.key
    return principal.is_admin or (key is not None and key.grants_collection(collection))


def require_read(principal: Principal, collection: str) -> None:
    """Raises PermissionDenied (``collection_not_allowed``) unless the caller may read."""
    if not may_read(principal, collection):
        raise PermissionDenied(f"This key may not read RAG collection '{collection}'.",
                               param="collection", code="collection_not_allowed")


def require_ingest(principal: Principal, collection: str) -> None:
    """Raises PermissionDenied (``collection_not_allowed``) unless the caller may ingest."""
    if not may_ingest(principal, collection):
        raise PermissionDenied(
            f"This key may not change RAG collection '{collection}': that needs the admin key "
            "or a key whose rag_collections grants it.", param="collection",
            code="collection_not_allowed")


def passages_size(value: tuple[Passage, ...]) -> int:
    """Approximate bytes of a cached retrieval (for the cache's byte bound)."""
    return 64 + sum(200 + len(p.text) * 2 + len(p.id) + len(p.source) + len(p.section)
                    + sum(len(k) + len(str(v)) for k, v in p.metadata.items())
                    for p in value)


@dataclass(frozen=True, slots=True)
class NewDocument:
    """A document to add: its extracted text and what its chunks record about it."""

    id: str
    text: str
    source: str
    title: str
    kind: str
    metadata: Mapping[str, Scalar]


@dataclass(frozen=True, slots=True)
class Added:
    id: str
    chunks: int
    source: str
    title: str


def _embedded_text(chunk: Chunk) -> str:
    # A passage deep in a section rarely repeats the heading it answers to: give it along.
    if chunk.section and chunk.section not in chunk.text:
        return f"{chunk.section}\n{chunk.text}"
    return chunk.text


class Rag:
    def __init__(self, store: RagStore, embedder: Embedder, settings: RagSettings,
                 cache: BoundedCache[str, tuple[Passage, ...]], metrics: Metrics) -> None:
        self.store = store
        self._embedder = embedder
        self._settings = settings
        self._cache = cache
        self._metrics = metrics
        self._creating = trio.Lock()
        self._writing: dict[str, trio.Lock] = {}
        # changes per collection: a retrieval that raced a change is not cached
        self._changes: dict[str, int] = {}
        # chunks per write, learnt from how long writes take (see WRITE_TARGET_S); the first
        # write is small because nothing is known yet
        self._batch = min(_MIN_BATCH, settings.write_batch)
        self.publish_metrics()

    async def _run(self, call: Callable[..., T], *args: object) -> T:
        result: T = await trio.to_thread.run_sync(partial(call, *args))
        return result

    def _lock(self, name: str) -> trio.Lock:
        return self._writing.setdefault(name, trio.Lock())

    def _changed(self, name: str) -> None:
        self._changes[name] = self._changes.get(name, 0) + 1
        self._cache.invalidate_tag(name)

    def publish_metrics(self) -> None:
        """Chunks stored, and the retrieval cache's size, as gauges."""
        self._metrics.store_items.labels(store="rag").set(self.store.total())
        stats = self._cache.statistics()
        self._metrics.cache_entries.labels(cache="rag").set(stats.entries)
        self._metrics.cache_bytes.labels(cache="rag").set(stats.bytes)

    async def _recount(self, name: str) -> None:
        try:
            await self._run(self.store.count, name)
        except GatewayError:
            pass  # gone or unreachable: the gauge keeps its last known count
        self.publish_metrics()

    # --- collections ------------------------------------------------------------------------

    async def create(self, name: str, metadata: Mapping[str, Scalar]) -> CollectionInfo:
        """Raises Conflict (``collection_exists``) or StoreUnavailable."""
        async with self._creating:
            info = await self._run(self.store.create, name, metadata, time.time())
        self._changed(name)
        return info

    async def collections(self) -> list[CollectionInfo]:
        return await self._run(self.store.collections)

    async def collection(self, name: str) -> CollectionInfo:
        """Raises NotFound (``collection_not_found``) or EmbedderMismatch."""
        return await self._run(self.store.info, name)

    async def drop(self, name: str) -> None:
        """Delete a collection once writes in progress to it are done. Raises NotFound."""
        lock = self._lock(name)
        try:
            async with lock, self._creating:
                try:
                    await self._run(self.store.drop, name)
                finally:
                    self._changed(name)
                    self.publish_metrics()
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._writing.pop(name, None)  # one lock per live collection, at most

    # --- documents ---------------------------------------------------------------------------

    async def require(self, name: str) -> None:
        """Raises NotFound (``collection_not_found``) or EmbedderMismatch."""
        await self._run(self.store.require, name)

    async def add(self, name: str, documents: Sequence[NewDocument],
                  progress: Callable[[Added], Awaitable[None]] | None = None) -> list[Added]:
        """Chunk, embed and store ``documents`` in order; a document whose id is stored already
        replaces it. Returns what was stored; ``progress`` is told of each document once it
        is. Raises NotFound, EmbedderMismatch, or the embedder's or store's GatewayError; a
        document that fails half-way is removed again, those before it stay added."""
        await self.require(name)
        added: list[Added] = []
        async with self._lock(name):
            try:
                for document in documents:
                    added.append(await self._ingest(name, document))
                    if progress is not None:
                        await progress(added[-1])
            finally:
                self._changed(name)
                with trio.CancelScope(shield=True):
                    await self._recount(name)
        logs.event(_log, "RAG documents added", collection=name, documents=len(added),
                   chunks=sum(a.chunks for a in added))
        return added

    async def _ingest(self, name: str, document: NewDocument) -> Added:
        # pure-Python CPU work: in a thread, the GIL's switch interval gives the loop its turns
        chunks = await self._run(chunk_text, document.text, self._settings.chunk_chars,
                                 self._settings.chunk_overlap)
        meta = DocumentMeta(document.id, document.source, document.title, document.kind,
                            document.metadata)
        # A new generation is written beside the document's current one, which is deleted
        # only once the new one is complete: a replacement that fails leaves the old intact.
        at = time.time()
        generation = f"{time.time_ns():x}"
        most = max(1, self._settings.write_batch)
        try:
            first = 0
            while first < len(chunks):
                part = chunks[first:first + min(self._batch, most)]
                first += len(part)
                vectors = await self._embedder.embed([_embedded_text(c) for c in part])
                started = time.perf_counter()
                await self._run(self.store.write, name,
                                [chunk_id(document.id, generation, c.index) for c in part],
                                vectors, [c.text for c in part],
                                [chunk_metadata(meta, c, len(chunks), at, generation)
                                 for c in part])
                self._learn(time.perf_counter() - started, len(part), most)
                await trio.lowlevel.checkpoint()  # a write froze the loop: let others run
            await self._run(partial(self.store.remove_document, name, document.id,
                                    keep=generation))
        except BaseException:
            with trio.move_on_after(_CLEANUP_S, shield=True):
                try:
                    await self._run(partial(self.store.remove_document, name, document.id,
                                            only=generation))
                except GatewayError as exc:
                    logs.event(_log, "a partly added RAG document could not be removed",
                               logging.ERROR, collection=name, error=exc.message)
            raise
        return Added(document.id, len(chunks), document.source, document.title)

    def _learn(self, seconds: float, chunks: int, most: int) -> None:
        """Size the next write from how long this one took. A write also has a fixed cost
        (~10-15 ms), so below :data:`_MIN_BATCH` smaller writes only make an ingest slower;
        halfway steps keep one slow write (a busy machine) from swinging the size."""
        fits = int(WRITE_TARGET_S * chunks / max(seconds, 1e-6))
        self._batch = max(min(_MIN_BATCH, most), min(most, (self._batch + fits) // 2))

    async def documents(self, name: str, limit: int, offset: int) -> list[DocumentInfo]:
        """Raises NotFound or EmbedderMismatch."""
        return await self._run(self.store.documents, name, limit, offset)

    async def document(self, name: str,
                       document_id: str) -> tuple[DocumentInfo, list[StoredChunk]]:
        """Raises NotFound (``collection_not_found``, ``document_not_found``)."""
        return await self._run(self.store.document, name, document_id)

    async def remove(self, name: str, document_id: str) -> int:
        """Delete a document; the number of chunks removed (0: there was no such document)."""
        async with self._lock(name):
            try:
                removed = await self._run(self.store.remove_document, name, document_id)
            finally:
                self._changed(name)
            await self._recount(name)
        return removed

    # --- retrieval ---------------------------------------------------------------------------

    async def retrieve(self, collection: str, query: str, top_k: int,
                       min_score: float) -> list[Passage]:
        """The ``top_k`` passages of ``collection`` most similar to ``query`` with a score of
        at least ``min_score``, best first (none for a blank query). Cached. Raises NotFound
        (``collection_not_found``), EmbedderMismatch, StoreUnavailable or the embedder's
        error. The caller checks permission (:func:`require_read`)."""
        started = time.perf_counter()
        key = rag_cache_key(collection, query, top_k, min_score, self._embedder.id)
        cached = self._cache.get(key)
        self._metrics.cache.labels(cache="rag",
                                   result="miss" if cached is None else "hit").inc()
        if cached is None:
            changes = self._changes.get(collection, 0)
            cached = tuple(await self._search(collection, query, top_k, min_score))
            if self._changes.get(collection, 0) == changes:
                self._cache.put(key, cached, tag=collection)
            self.publish_metrics()
        self._metrics.retrieval.labels(kind="rag").observe(time.perf_counter() - started)
        if cached:
            self._metrics.retrieved.labels(kind="rag").inc(len(cached))
        return list(cached)

    async def _search(self, collection: str, query: str, top_k: int,
                      min_score: float) -> list[Passage]:
        if not self.store.is_open(collection) or not query.strip():
            # an unknown collection is a 404 before any embedding is paid for
            await self._run(self.store.require, collection)
        if not query.strip() or top_k < 1:
            return []
        vector = (await self._embedder.embed([query]))[0]
        found: list[Passage] = await self._run(self.store.query, collection, vector, top_k,
                                               min_score)
        return found

