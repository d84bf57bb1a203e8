"""Embedders turn texts into vectors for memory and RAG. Three kinds, chosen by ``EMBEDDINGS``:

* ``lexical`` (default): :class:`~ailb.vectors.lexical.LexicalEmbedder`, built in, pure Python,
  no download and no network: feature hashing of word stems and word pairs. It finds passages
  that share words with the question (stems, so "restart"/"restarting" meet); it knows no
  synonyms.
* ``minilm``: ChromaDB's all-MiniLM-L6-v2 ONNX model, read from a local folder (never
  downloaded): semantic matches, ~10x slower to ingest. See :mod:`ailb.vectors.chroma`.
* ``provider``: any model a deployment serves, through AILB's own ``/v1/embeddings`` routing.

Each embedder has an ``id`` that names it *and* its vector space (``lexical-v1/2048``). A
collection records the id it was filled with; opening it with another is refused
(:class:`~ailb.errors.EmbedderMismatch`), because vectors of two spaces cannot be compared.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import trio

Vector = list[float]
MAX_TEXT_CHARS = 32_000  # of one text, embedded by the built-in embedder
INLINE_CHARS = 8_000  # more text than this in one call is embedded in a worker thread


class Embedder(Protocol):
    @property
    def id(self) -> str:
        """Names the embedder and its vector space; stored with every collection."""
        ...

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        """One vector per text, in order. Raises GatewayError subclasses on failure."""
        ...


class SyncEmbedder(Protocol):
    @property
    def id(self) -> str: ...

    def vectors(self, texts: Sequence[str]) -> list[Vector]: ...


class ThreadedEmbedder:
    """A CPU-bound embedder (ONNX) run in a worker thread so the event loop keeps serving."""

    def __init__(self, inner: SyncEmbedder) -> None:
        self._inner = inner

    @property
    def id(self) -> str:
        return self._inner.id

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        return await trio.to_thread.run_sync(self._inner.vectors, list(texts))


class InlineEmbedder:
    """A cheap pure-Python embedder. Small batches run on the loop (a thread costs more than
    they do); larger ones in a worker thread, where the GIL's switch interval still gives the
    loop its turns. Each text is embedded from its first :data:`MAX_TEXT_CHARS` characters: a
    lexical vector of a whole book means nothing, and a 4 MB message would take seconds."""

    def __init__(self, inner: SyncEmbedder) -> None:
        self._inner = inner

    @property
    def id(self) -> str:
        return self._inner.id

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        texts = [text[:MAX_TEXT_CHARS] for text in texts]
        if sum(len(text) for text in texts) > INLINE_CHARS:
            return await trio.to_thread.run_sync(self._inner.vectors, texts)
        return self._inner.vectors(texts)


class ProviderEmbedder:
    """Embeddings from a routed model (``embed`` is the gateway's own embeddings call)."""

    def __init__(self, model: str,
                 embed: Callable[[str, Sequence[str]], Awaitable[list[Vector]]],
                 batch: int = 64) -> None:
        self._model = model
        self._embed = embed
        self._batch = batch

    @property
    def id(self) -> str:
        return f"provider/{self._model}"

    async def embed(self, texts: Sequence[str]) -> list[Vector]:
        out: list[Vector] = []
        for start in range(0, len(texts), self._batch):
            out.extend(await self._embed(self._model, texts[start:start + self._batch]))
        return out
