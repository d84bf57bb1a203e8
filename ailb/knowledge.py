"""Memory, RAG and the caches, built from the settings at start-up (a restart applies changes).

Opening the stores is blocking work (ChromaDB opens its SQLite and HNSW files): it runs in a
worker thread. Every collection is checked against the configured embedder before AILB says it
is ready, so a switched embedder is refused at once, with the way out in the message.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from ailb.caches.lru import BoundedCache
from ailb.caches.response import LocalResponses, ResponseCache, ResponseStore
from ailb.config.memory import megabytes
from ailb.config.schema import Settings
from ailb.errors import ConfigError, EmbedderMismatch, StoreUnavailable, UpstreamError
from ailb.memory.service import Memory, turns_size
from ailb.memory.store import PREFIX as MEMORY_PREFIX
from ailb.memory.store import MemoryStore
from ailb.metrics import Metrics
from ailb.pipeline.embeddings_parse import parse_embeddings
from ailb.pipeline.exchange import Exchange
from ailb.rag.service import Rag, passages_size
from ailb.rag.store import PREFIX as RAG_PREFIX
from ailb.rag.store import RagStore
from ailb.routing.router import Hints, Router
from ailb.vectors.chroma import MiniLM, VectorStore
from ailb.vectors.embedders import (
    Embedder,
    InlineEmbedder,
    ProviderEmbedder,
    ThreadedEmbedder,
    Vector,
)
from ailb.vectors.lexical import LexicalEmbedder

# With a ChromaDB server shared by several instances, another instance's changes reach this
# one's caches only through expiry: these bound how stale they may be.
SHARED_CONTEXT_TTL_S = 5.0
SHARED_RAG_TTL_S = 60.0


@dataclass(slots=True)
class Knowledge:
    memory: Memory | None = None
    rag: Rag | None = None
    responses: ResponseCache | None = None

    def close(self) -> None:
        """Close the stores (once nothing uses them: the memory writer is closed)."""
        try:
            if self.memory is not None:
                self.memory.store.close()
        finally:
            if self.rag is not None:
                self.rag.store.close()


class RoutedEmbeddings:
    """The ``provider`` embedder's transport: AILB's own embeddings routing (retries, failover,
    health) on whatever router is live. These calls are the gateway's, not a key's: they are
    not charged to the key whose request caused them."""

    def __init__(self, router: Callable[[], Router]) -> None:
        self._router = router  # the live one: a reload swaps it

    async def __call__(self, model: str, texts: Sequence[str]) -> list[Vector]:
        request_id = f"ailb-embed-{uuid.uuid4().hex[:16]}"
        request = parse_embeddings({"model": model, "input": list(texts)}, request_id)
        result = await self._router().embed(request, Exchange(request_id), Hints(None, None))
        try:
            data = sorted(result.body.get("data") or [], key=lambda d: d.get("index", 0))
            vectors = [[float(x) for x in item["embedding"]] for item in data]
        except (AttributeError, KeyError, TypeError, ValueError):
            vectors = []
        if len(vectors) != len(texts) or any(not v for v in vectors):
            raise UpstreamError(f"embedding model {model} did not return one vector of "
                                "numbers per text")
        return vectors


def make_embedder(settings: Settings, routed: RoutedEmbeddings) -> Embedder:
    """Raises ConfigError for a MiniLM folder that lacks the model."""
    conf = settings.embeddings
    if conf.embedder == "minilm":
        folder = Path(conf.model_dir)
        if conf.model_dir == "bundled":  # packed by build_binary.spec (AILB_MINILM_DIR)
            folder = Path(getattr(sys, "_MEIPASS", ".")) / "models" / "all-MiniLM-L6-v2"
        try:
            return ThreadedEmbedder(MiniLM(folder))
        except FileNotFoundError as exc:
            raise ConfigError("EMBEDDINGS.model_dir", f"is unusable: {exc} (AILB never "
                              "downloads a model; copy one there)") from None
    if conf.embedder == "provider":
        return ProviderEmbedder(conf.model, routed)
    return InlineEmbedder(LexicalEmbedder(conf.dimensions))


def _vector_store(settings: Settings, folder: str, prefix: str,
                  servers: Mapping[str, str]) -> VectorStore:
    if settings.chroma_url:
        return VectorStore(url=settings.chroma_url, prefix=f"ailb-{prefix}",
                           credentials=settings.chroma_auth.value)
    if folder in servers:  # the data dir's own store, served to this worker by its parent
        return VectorStore(url=servers[folder], prefix=prefix)
    return VectorStore(path=settings.data_dir / folder, prefix=prefix)


def _open_stores(settings: Settings, embedder_id: str, servers: Mapping[str, str]
                 ) -> tuple[MemoryStore | None, RagStore | None]:
    memory = rag = None
    if settings.enable_memory:
        memory = MemoryStore(_vector_store(settings, "memory", MEMORY_PREFIX, servers),
                             embedder_id)
        memory.check()
    if settings.enable_rag:
        rag = RagStore(_vector_store(settings, "rag", RAG_PREFIX, servers), embedder_id)
        rag.check()
    return memory, rag


async def open_knowledge(settings: Settings, metrics: Metrics, routed: RoutedEmbeddings,
                         responses: ResponseStore | None = None,
                         servers: Mapping[str, str] | None = None) -> Knowledge:
    """Open the stores the settings enable. ``responses``: where the response cache keeps its
    entries when they are shared (``RedisShared.responses``, with REDIS_URL); otherwise this
    process's LRU. ``servers``: a worker's ChromaDB servers for the data dir's stores
    (``memory``, ``rag`` -> URL), run by its parent. Raises ConfigError for an unusable store
    or an embedder that does not match what a store was filled with."""
    knowledge = Knowledge()
    cache = settings.cache
    if cache.response:
        store = responses or LocalResponses(BoundedCache(
            max_entries=cache.response_entries, max_bytes=megabytes(cache.response_mb),
            ttl_s=cache.response_ttl_s, clock=time.monotonic, size_of=len))
        knowledge.responses = ResponseCache(store, cache.response_scope, metrics)
    if not (settings.enable_memory or settings.enable_rag):
        return knowledge
    embedder = make_embedder(settings, routed)
    servers = servers or {}
    # another process writes to the same store: cached copies must expire
    shared = bool(settings.chroma_url or servers)
    try:
        memory_store, rag_store = await trio.to_thread.run_sync(_open_stores, settings,
                                                                embedder.id, servers)
    except EmbedderMismatch as exc:
        raise ConfigError("EMBEDDINGS", exc.message) from None
    except StoreUnavailable as exc:
        raise ConfigError("CHROMA_URL" if settings.chroma_url else "AILB_DATA_DIR",
                          exc.message) from None
    if memory_store is not None:
        # On a shared ChromaDB server other instances (or workers) write too: hot sessions are
        # then read again after a few seconds instead of trusting this copy indefinitely.
        knowledge.memory = Memory(memory_store, embedder, settings.memory, BoundedCache(
            max_entries=cache.context_entries, max_bytes=megabytes(cache.context_mb),
            ttl_s=SHARED_CONTEXT_TTL_S if shared else 0, clock=time.monotonic,
            size_of=turns_size), metrics)
    if rag_store is not None:
        knowledge.rag = Rag(rag_store, embedder, settings.rag, BoundedCache(
            max_entries=cache.rag_entries, max_bytes=megabytes(cache.rag_mb),
            ttl_s=min(cache.rag_ttl_s or SHARED_RAG_TTL_S, SHARED_RAG_TTL_S)  # 0: no expiry
            if shared else cache.rag_ttl_s, clock=time.monotonic,
            size_of=passages_size), metrics)
    return knowledge
