"""Conversation turns in the vector store: one collection per caller identity.

A caller (the admin key, or one virtual key) has its own collection ``mem-<key id>``, so one key
cannot reach another's sessions even by guessing a session id: isolation is by construction, not
by a filter. Each turn is one record: the turn's text (embedded), and metadata holding its
session, order, time, token estimate and messages (JSON).

Reads run in a worker thread (ChromaDB releases the GIL while it reads). Writes are only made by
:class:`~ailb.memory.writer.MemoryWriter`, in small batches.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import trio

from ailb.memory.turns import Turn
from ailb.vectors.chroma import Collection, VectorStore
from ailb.vectors.embedders import Vector

_log = logging.getLogger("ailb.memory")
PREFIX = "mem-"


@dataclass(frozen=True, slots=True)
class SessionInfo:
    id: str
    turns: int
    first_at: float
    last_at: float


def _turns(records: Sequence[tuple[str, Mapping[str, Any]]]) -> list[Turn]:
    turns: list[Turn] = []
    for record_id, metadata in records:
        try:
            turns.append(Turn.from_record(record_id, metadata))
        except (KeyError, ValueError, TypeError):  # not ours (a shared server): skip it
            _log.warning("skipping a memory record that is not a turn",
                         extra={"fields": {"id": record_id}})
    turns.sort(key=lambda t: t.seq)
    return turns


class MemoryStore:
    def __init__(self, store: VectorStore, embedder_id: str) -> None:
        self._store = store
        self._embedder_id = embedder_id
        self._open: dict[str, Collection] = {}

    @property
    def where(self) -> str:
        return self._store.where

    def close(self) -> None:
        self._open.clear()
        self._store.close()

    def check(self) -> None:
        """Open every existing collection once: raises EmbedderMismatch if any was filled by
        another embedder (blocking; call at start-up)."""
        for owner in self._store.names():
            self._collection(owner, create=False)

    def _collection(self, owner: str, *, create: bool) -> Collection | None:
        found = self._open.get(owner)
        if found is None:
            found = self._store.open(owner, self._embedder_id, create=create)
            if found is not None:
                self._open[owner] = found
        return found

    # --- reads (async: a worker thread each) ---------------------------------------------

    async def load(self, owner: str, session: str) -> list[Turn]:
        """Every stored turn of a session, oldest first."""
        return await trio.to_thread.run_sync(self._load, owner, session)

    def _load(self, owner: str, session: str) -> list[Turn]:
        collection = self._collection(owner, create=False)
        if collection is None:
            return []
        records = collection.get(where={"session": session}, texts=False)
        return _turns([(r.id, dict(r.metadata)) for r in records])

    async def recall(self, owner: str, session: str, vector: Vector, k: int,
                     min_score: float, exclude: frozenset[str]) -> list[Turn]:
        """Up to ``k`` turns of the session most similar to ``vector`` (score >= ``min_score``),
        not counting the ``exclude`` ids."""
        if k <= 0:
            return []
        return await trio.to_thread.run_sync(
            partial(self._recall, owner, session, vector, k, min_score, exclude))

    def _recall(self, owner: str, session: str, vector: Vector, k: int, min_score: float,
                exclude: frozenset[str]) -> list[Turn]:
        collection = self._collection(owner, create=False)
        if collection is None:
            return []
        hits = collection.query(vector, k + len(exclude), where={"session": session})
        chosen = [(h.id, dict(h.metadata)) for h in hits
                  if h.id not in exclude and h.score >= min_score][:k]
        return _turns(chosen)

    async def sessions(self, owner: str) -> list[SessionInfo]:
        return await trio.to_thread.run_sync(self._sessions, owner)

    def _sessions(self, owner: str) -> list[SessionInfo]:
        collection = self._collection(owner, create=False)
        if collection is None:
            return []
        found: dict[str, SessionInfo] = {}
        for record in collection.get(texts=False):
            session = str(record.metadata.get("session", ""))
            at = float(record.metadata.get("at", 0.0))
            info = found.get(session)
            found[session] = SessionInfo(session, 1, at, at) if info is None else SessionInfo(
                session, info.turns + 1, min(info.first_at, at), max(info.last_at, at))
        return sorted(found.values(), key=lambda s: s.last_at, reverse=True)

    # --- writes (blocking: only the writer calls these, from a worker thread) ----------------

    def write(self, owner: str, turns: Sequence[Turn], vectors: Sequence[Vector]) -> None:
        collection = self._collection(owner, create=True)
        assert collection is not None
        collection.upsert([t.id for t in turns], vectors, [t.text for t in turns],
                          [t.metadata() for t in turns])

    def forget(self, owner: str, session: str) -> int:
        """Delete every turn of a session; how many there were."""
        collection = self._collection(owner, create=False)
        if collection is None:
            return 0
        ids = [r.id for r in collection.get(where={"session": session}, texts=False)]
        collection.delete(ids=ids)
        return len(ids)

    def trim(self, owner: str, session: str, keep: int) -> int:
        """Forget a session's oldest turns beyond ``keep``; how many were forgotten. Reads ids
        only: a turn's id starts with its order (:func:`~ailb.memory.turns.turn_id`)."""
        collection = self._collection(owner, create=False)
        if collection is None:
            return 0
        ids = sorted(collection.ids({"session": session}))
        extra = ids[:max(0, len(ids) - keep)]
        collection.delete(ids=extra)
        return len(extra)

    def expire(self, before: float) -> int:
        """Forget every turn stored before ``before`` (epoch seconds), in every collection."""
        removed = 0
        for owner in self._store.names():
            collection = self._collection(owner, create=False)
            if collection is None:
                continue
            ids = [r.id for r in collection.get(where={"at": {"$lt": before}}, texts=False)]
            collection.delete(ids=ids)
            removed += len(ids)
        return removed

    def size(self) -> int:
        """Turns stored, over every collection (blocking)."""
        total = 0
        for owner in self._store.names():
            collection = self._collection(owner, create=False)
            total += collection.count() if collection is not None else 0
        return total
