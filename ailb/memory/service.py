"""Conversation memory as request handlers use it: recall before the call, remember after.

Reads see every turn remembered so far, also those still queued for the writer: a client's next
message often arrives before the last turn reached ChromaDB. Hot sessions' turns are kept in a
bounded LRU (``CACHE.context_*``), updated as the writer writes, so a busy conversation reads
ChromaDB only for the semantic recall of older turns.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import trio

from ailb.caches.lru import BoundedCache
from ailb.config_schema import MemorySettings
from ailb.memory.assemble import inject, recent_window
from ailb.memory.store import MemoryStore, SessionInfo
from ailb.memory.turns import Message, Turn, message_text, turn_tokens
from ailb.memory.writer import MemoryWriter
from ailb.metrics import Metrics
from ailb.vectors.embedders import Embedder

SessionKey = tuple[str, str]  # (owner, session)


def turns_size(turns: tuple[Turn, ...]) -> int:
    return sum(len(t.encoded()) + 200 for t in turns) + 64


@dataclass(frozen=True, slots=True)
class Recall:
    messages: list[Message]
    recent: int  # turns replayed as messages
    recalled: int  # older turns recalled by similarity


class Memory:
    def __init__(self, store: MemoryStore, embedder: Embedder, settings: MemorySettings,
                 cache: BoundedCache[SessionKey, tuple[Turn, ...]], metrics: Metrics) -> None:
        self.store = store
        self._embedder = embedder
        self._settings = settings
        self._cache = cache
        self._metrics = metrics
        self._pending: dict[SessionKey, list[Turn]] = {}
        self._loading: dict[SessionKey, list[list[bool]]] = {}  # loads in flight: dirty flags
        self.writer = MemoryWriter(
            store, embedder, batch=settings.write_batch, capacity=settings.queue_size,
            max_turns=settings.max_turns_per_session,
            max_age_s=settings.max_age_days * 86400, on_written=self._written,
            on_forgotten=self._forgotten)

    # --- the request path -------------------------------------------------------------------

    async def recall(self, owner: str, session: str,
                     messages: Sequence[Mapping[str, Any]]) -> Recall:
        """The request's messages with the session's memory in front."""
        started = time.perf_counter()
        turns = await self.turns(owner, session)
        recent = recent_window(turns, self._settings.recent_tokens)
        recalled: list[Turn] = []
        older = len(turns) - len(recent)
        query = _query_text(messages)
        if older > 0 and query and self._settings.relevant_top_k > 0:
            vector = (await self._embedder.embed([query]))[0]
            recalled = await self.store.recall(
                owner, session, vector, self._settings.relevant_top_k,
                self._settings.relevant_min_score, frozenset(t.id for t in recent))
        self._metrics.retrieval.labels(kind="memory").observe(time.perf_counter() - started)
        if recalled:
            self._metrics.retrieved.labels(kind="memory").inc(len(recalled))
        return Recall(inject(messages, recent, recalled), len(recent), len(recalled))

    async def remember(self, owner: str, session: str, new: Sequence[Message],
                       answer: Message) -> None:
        """Queue the turn (waits only while the writer's queue is full)."""
        messages = (*new, answer)
        turn = Turn(id=uuid.uuid4().hex, session=session, seq=time.time_ns(), at=time.time(),
                    messages=tuple(messages), tokens=turn_tokens(messages))
        self._pending.setdefault((owner, session), []).append(turn)
        await self.writer.record(owner, turn)

    # --- the memory API -----------------------------------------------------------------------

    async def turns(self, owner: str, session: str) -> list[Turn]:
        """Every turn of a session, oldest first, queued ones included."""
        key = (owner, session)
        cached = self._cache.get(key)
        self._metrics.cache.labels(cache="context",
                                   result="miss" if cached is None else "hit").inc()
        if cached is None:
            flag = [False]
            self._loading.setdefault(key, []).append(flag)
            try:
                loaded = tuple(await self.store.load(owner, session))
            finally:
                flags = self._loading[key]
                flags.remove(flag)
                if not flags:
                    del self._loading[key]
            if not flag[0]:  # nothing was written meanwhile: the loaded list is current
                self._cache.put(key, loaded)
            cached = loaded
        pending = self._pending.get(key, [])
        have = {t.id for t in cached}
        extra = [t for t in pending if t.id not in have]
        return sorted((*cached, *extra), key=lambda t: t.seq) if extra else list(cached)

    async def sessions(self, owner: str) -> list[SessionInfo]:
        return await self.store.sessions(owner)

    async def forget(self, owner: str, session: str) -> int:
        return await self.writer.forget(owner, session)

    # --- the writer's reports -------------------------------------------------------------------

    def publish_metrics(self) -> None:
        self._metrics.store_items.labels(store="memory").set(self.writer.stored)
        self._metrics.memory_queue.set(self.writer.queued())
        stats = self._cache.statistics()
        self._metrics.cache_entries.labels(cache="context").set(stats.entries)
        self._metrics.cache_bytes.labels(cache="context").set(stats.bytes)

    def _written(self, owner: str, turns: Sequence[Turn]) -> None:
        for session in {t.session for t in turns}:
            key = (owner, session)
            mine = [t for t in turns if t.session == session]
            ids = {t.id for t in mine}
            left = [t for t in self._pending.get(key, []) if t.id not in ids]
            if left:
                self._pending[key] = left
            else:
                self._pending.pop(key, None)
            for flag in self._loading.get(key, []):
                flag[0] = True
            cached = self._cache.get(key)
            if cached is not None:  # keep the hot copy equal to the store (trim included)
                merged = sorted((*cached, *mine), key=lambda t: t.seq)
                self._cache.put(key, tuple(merged[-self._settings.max_turns_per_session:]))
        self.publish_metrics()

    def _forgotten(self, owner: str, session: str) -> None:
        key = (owner, session)
        self._pending.pop(key, None)
        self._cache.invalidate(key)
        for flag in self._loading.get(key, []):
            flag[0] = True
        self.publish_metrics()


def _query_text(messages: Sequence[Mapping[str, Any]]) -> str:
    """What older turns are searched with: the client's last user message."""
    for message in reversed(messages):
        if message.get("role") == "user":
            return message_text(message)
    return ""


async def open_memory(store: MemoryStore) -> None:
    """Check the store's collections against the configured embedder (blocking work, in a
    thread). Raises EmbedderMismatch."""
    await trio.to_thread.run_sync(store.check)
