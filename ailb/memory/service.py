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

from ailb.caches.lru import BoundedCache
from ailb.config.schema import MemorySettings
from ailb.memory.assemble import inject, recent_window
from ailb.memory.store import MemoryStore, SessionInfo
from ailb.memory.turns import Message, Turn, last_user_text, turn_id, turn_tokens
from ailb.memory.writer import MemoryWriter
from ailb.metrics import Metrics
from ailb.vectors.embedders import Embedder

SessionKey = tuple[str, str]  # (owner, session)


def turns_size(turns: tuple[Turn, ...]) -> int:
    """About the bytes a session's turns hold (from their token estimates: cheap, as every
    cache update measures the whole session)."""
    return sum(4 * t.tokens + 300 for t in turns) + 64


@dataclass(frozen=True, slots=True)
class Recall:
    messages: list[Message]
    recent: int  # turns replayed as messages
    recalled: int  # older turns recalled by similarity


@dataclass(slots=True)
class _Load:
    """A read of a session from the store in flight; the writer marks what changed meanwhile."""

    changed: bool = False  # turns were written: the result may be behind, do not cache it
    forgotten: bool = False  # the session was forgotten: the result is void


class Memory:
    def __init__(self, store: MemoryStore, embedder: Embedder, settings: MemorySettings,
                 cache: BoundedCache[SessionKey, tuple[Turn, ...]], metrics: Metrics) -> None:
        self.store = store
        self._embedder = embedder
        self._settings = settings
        self._cache = cache
        self._metrics = metrics
        self._pending: dict[SessionKey, list[Turn]] = {}  # remembered, not yet reported
        self._loading: dict[SessionKey, list[_Load]] = {}
        self.writer = MemoryWriter(
            store, embedder, batch=settings.write_batch, capacity=settings.queue_size,
            max_turns=settings.max_turns_per_session,
            max_age_s=settings.max_age_days * 86400, on_written=self._written,
            on_dropped=self._dropped, on_forgotten=self._forgotten, on_expired=self._expired)

    # --- the request path -------------------------------------------------------------------

    async def recall(self, owner: str, session: str,
                     messages: Sequence[Mapping[str, Any]]) -> Recall:
        """The request's messages with the session's memory in front."""
        started = time.perf_counter()
        turns = await self.turns(owner, session)
        recent = recent_window(turns, self._settings.recent_tokens)
        recalled: list[Turn] = []
        older = len(turns) - len(recent)
        query = last_user_text(messages)
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
        seq = time.time_ns()
        turn = Turn(id=turn_id(seq, uuid.uuid4().hex[:12]), session=session, seq=seq,
                    at=time.time(), messages=tuple(messages), tokens=turn_tokens(messages))
        pending = self._pending.setdefault((owner, session), [])
        pending.append(turn)  # seen by reads at once, before the writer has it
        try:
            await self.writer.record(owner, turn)
        except BaseException:  # cancelled while the queue was full, or shutting down
            self._unpend(owner, [turn])
            raise

    # --- the memory API -----------------------------------------------------------------------

    async def turns(self, owner: str, session: str) -> list[Turn]:
        """Every turn of a session, oldest first, queued ones included."""
        key = (owner, session)
        cached = self._cache.get(key)
        self._metrics.cache.labels(cache="context",
                                   result="miss" if cached is None else "hit").inc()
        if cached is None:
            # A turn pending now may be written (and leave the pending list) while we read.
            before = list(self._pending.get(key, []))
            load = _Load()
            self._loading.setdefault(key, []).append(load)
            try:
                loaded = tuple(await self.store.load(owner, session))
            finally:
                loads = self._loading[key]
                loads.remove(load)
                if not loads:
                    del self._loading[key]
            if load.forgotten:
                loaded, before = (), []
            elif not load.changed:  # nothing was written meanwhile: the list is current
                self._cache.put(key, loaded)
            cached = _merged(loaded, before)
        return list(_merged(cached, self._pending.get(key, [])))

    async def sessions(self, owner: str) -> list[SessionInfo]:
        """The caller's sessions, most recent first, sessions with only queued turns included."""
        stored = {s.id: s for s in await self.store.sessions(owner)}
        for (who, session), turns in self._pending.items():
            if who != owner or not turns:
                continue
            info = stored.get(session)
            first, last = min(t.at for t in turns), max(t.at for t in turns)
            stored[session] = SessionInfo(session, len(turns), first, last) if info is None \
                else SessionInfo(session, info.turns + len(turns), min(info.first_at, first),
                                 max(info.last_at, last))
        return sorted(stored.values(), key=lambda s: s.last_at, reverse=True)

    async def forget(self, owner: str, session: str) -> int:
        """Raises StoreUnavailable if the store could not delete the session's turns."""
        return await self.writer.forget(owner, session)

    # --- the writer's reports -------------------------------------------------------------------

    def publish_metrics(self) -> None:
        self._metrics.store_items.labels(store="memory").set(self.writer.stored)
        self._metrics.memory_queue.set(self.writer.queued())
        stats = self._cache.statistics()
        self._metrics.cache_entries.labels(cache="context").set(stats.entries)
        self._metrics.cache_bytes.labels(cache="context").set(stats.bytes)

    def _unpend(self, owner: str, turns: Sequence[Turn]) -> None:
        for session in {t.session for t in turns}:
            key = (owner, session)
            ids = {t.id for t in turns}
            left = [t for t in self._pending.get(key, []) if t.id not in ids]
            if left:
                self._pending[key] = left
            else:
                self._pending.pop(key, None)

    def _written(self, owner: str, turns: Sequence[Turn]) -> None:
        self._unpend(owner, turns)
        for session in {t.session for t in turns}:
            key = (owner, session)
            for load in self._loading.get(key, []):
                load.changed = True
            cached = self._cache.get(key)
            if cached is not None:  # keep the hot copy equal to the store (trim included)
                merged = _merged(cached, [t for t in turns if t.session == session])
                self._cache.put(key, merged[-self._settings.max_turns_per_session:])
        self.publish_metrics()

    def _dropped(self, owner: str, turns: Sequence[Turn]) -> None:
        self._unpend(owner, turns)  # never stored: no read may show them any longer
        self.publish_metrics()

    def _forgotten(self, owner: str, session: str, asked_ns: int) -> None:
        key = (owner, session)
        # turns remembered after the request to forget are queued behind it: they stay
        later = [t for t in self._pending.get(key, []) if t.seq > asked_ns]
        if later:
            self._pending[key] = later
        else:
            self._pending.pop(key, None)
        self._cache.invalidate(key)
        for load in self._loading.get(key, []):
            load.forgotten = True
        self.publish_metrics()

    def _expired(self) -> None:
        self._cache.clear()  # rare (hourly at most): cheaper than finding the sessions
        for loads in self._loading.values():
            for load in loads:
                load.changed = True
        self.publish_metrics()


def _merged(first: Sequence[Turn], second: Sequence[Turn]) -> tuple[Turn, ...]:
    """Both lists' turns, each once (by id), in order."""
    seen = {t.id for t in first}
    extra = [t for t in second if t.id not in seen]
    if not extra:
        return tuple(first)
    return tuple(sorted((*first, *extra), key=lambda t: t.seq))
