"""The ChromaDB edge: the only module that imports chromadb.

One :class:`VectorStore` per store (memory, RAG): a persistent client on local disk, or an HTTP
client to a ChromaDB server shared by several AILB instances. Collections are created without a
ChromaDB embedding function: AILB embeds texts itself (:mod:`ailb.vectors.embedders`) and
passes vectors, so no model is ever downloaded behind the operator's back. Each collection
records in its metadata the id of the embedder that filled it; opening it with another embedder
raises :class:`~ailb.errors.EmbedderMismatch`.

Every method here blocks (ChromaDB is synchronous). Callers run them with
:func:`trio.to_thread.run_sync`. Reads release the GIL; writes hold it for their whole length
(~0.25 ms per vector), so callers keep write batches small. ChromaDB's errors become
:class:`~ailb.errors.StoreUnavailable` (or ``NotFound``), ``from`` the original.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast
from urllib.parse import urlsplit

from ailb.errors import EmbedderMismatch, NotFound, StoreUnavailable

_log = logging.getLogger("ailb.vectors")
EMBEDDER_KEY: Final = "ailb_embedder"
# HNSW breadth of search (ChromaDB's default is 100). Lexical vectors are sparse and nearly
# orthogonal, where an HNSW graph is a poor map: with 100, a query for the one passage that
# shares its rare words missed it among 3,000 chunks; with 500 it was found, for ~1 ms more.
SEARCH_EF: Final = 500
SERVER_TIMEOUT_S: Final = 30.0  # one call to a ChromaDB server, at most
Metadata = Mapping[str, str | int | float | bool]


@dataclass(frozen=True, slots=True)
class Hit:
    id: str
    text: str
    metadata: Metadata
    score: float  # cosine similarity, 1 = same direction


@dataclass(frozen=True, slots=True)
class Record:
    id: str
    text: str
    metadata: Metadata


@contextmanager
def _translated(what: str) -> Iterator[None]:
    try:
        yield
    except (NotFound, EmbedderMismatch, StoreUnavailable):
        raise
    except Exception as exc:  # chromadb raises its own tree, ValueError, httpx errors...
        if type(exc).__name__ == "NotFoundError":
            raise NotFound(f"{what}: not found.", code="not_found") from exc
        _log.warning("vector store error", extra={"fields": {"what": what,
                                                              "error": type(exc).__name__}})
        raise StoreUnavailable(f"The vector store failed ({what}): {exc}") from exc


class Collection:
    """One ChromaDB collection (cosine space) with AILB's typed operations."""

    def __init__(self, raw: Any, embedder_id: str) -> None:
        self._raw = raw
        self.name: str = raw.name
        self.embedder_id = embedder_id

    @property
    def metadata(self) -> dict[str, Any]:
        return dict(self._raw.metadata or {})

    def upsert(self, ids: Sequence[str], vectors: Sequence[Sequence[float]],
               texts: Sequence[str], metadatas: Sequence[Metadata]) -> None:
        if not ids:
            return
        with _translated(f"write to {self.name}"):
            self._raw.upsert(ids=list(ids), embeddings=[list(v) for v in vectors],
                             documents=list(texts), metadatas=[dict(m) for m in metadatas])

    def query(self, vector: Sequence[float], k: int,
              where: Mapping[str, Any] | None = None) -> list[Hit]:
        """The ``k`` nearest records (best first)."""
        with _translated(f"query {self.name}"):
            found = self._raw.query(query_embeddings=[list(vector)], n_results=k,
                                    where=dict(where) if where else None,
                                    include=["documents", "metadatas", "distances"])
        ids = found["ids"][0]
        texts = (found.get("documents") or [[]])[0] or [""] * len(ids)
        metas = (found.get("metadatas") or [[]])[0] or [{}] * len(ids)
        dists = (found.get("distances") or [[]])[0] or [1.0] * len(ids)
        return [Hit(i, t or "", m or {}, 1.0 - float(d))
                for i, t, m, d in zip(ids, texts, metas, dists, strict=True)]

    def get(self, *, ids: Sequence[str] | None = None, where: Mapping[str, Any] | None = None,
            limit: int | None = None, offset: int | None = None,
            texts: bool = True) -> list[Record]:
        with _translated(f"read {self.name}"):
            found = self._raw.get(ids=list(ids) if ids is not None else None,
                                  where=dict(where) if where else None, limit=limit,
                                  offset=offset,
                                  include=["documents", "metadatas"] if texts
                                  else ["metadatas"])
        ids_ = found["ids"]
        docs = found.get("documents") or [""] * len(ids_)
        metas = found.get("metadatas") or [{}] * len(ids_)
        return [Record(i, d or "", m or {}) for i, d, m in zip(ids_, docs, metas, strict=True)]

    def ids(self, where: Mapping[str, Any]) -> list[str]:
        """The ids of the records that match ``where`` (nothing else is read)."""
        with _translated(f"read {self.name}"):
            return list(self._raw.get(where=dict(where), include=[])["ids"])

    def delete(self, *, ids: Sequence[str] | None = None,
               where: Mapping[str, Any] | None = None) -> None:
        if ids is not None and not ids:
            return
        with _translated(f"delete from {self.name}"):
            self._raw.delete(ids=list(ids) if ids is not None else None,
                             where=dict(where) if where else None)

    def count(self) -> int:
        with _translated(f"count {self.name}"):
            return int(self._raw.count())


def _auth_header(credentials: str) -> dict[str, str]:
    """``user:password`` -> HTTP Basic; ``:token`` (no user) -> a bearer token; "" -> none."""
    if not credentials:
        return {}
    user, _, password = credentials.partition(":")
    if not user:
        return {"Authorization": f"Bearer {password}"}
    return {"Authorization": "Basic " + base64.b64encode(credentials.encode()).decode()}


class VectorStore:
    """A ChromaDB client: on local disk at ``path``, or a server at ``url`` (``prefix`` keeps
    this store's collections apart from another's on a shared server)."""

    def __init__(self, *, path: Path | None = None, url: str = "", prefix: str = "",
                 credentials: str = "") -> None:
        import chromadb  # a heavy import, paid only when a store is opened
        from chromadb.config import Settings as ChromaSettings

        self._prefix = prefix
        settings = ChromaSettings(anonymized_telemetry=False)
        with _translated("open the vector store"):
            if url:
                parts = urlsplit(url)
                self._client = chromadb.HttpClient(
                    host=parts.hostname or "localhost",
                    port=parts.port or (443 if parts.scheme == "https" else 8000),
                    ssl=parts.scheme == "https", settings=settings,
                    headers=_auth_header(credentials))
                self.where = url
                # chromadb's HTTP session waits forever; a stalled server must fail a call
                # (StoreUnavailable) rather than hold a worker thread and its request for good.
                for session in self._sessions():
                    session.timeout = SERVER_TIMEOUT_S
            elif path is not None:
                path.mkdir(parents=True, exist_ok=True)
                self._client = chromadb.PersistentClient(path=str(path), settings=settings)
                self.where = str(path)
            else:
                raise ValueError("a vector store needs a path or a url")

    def _sessions(self) -> list[Any]:
        """The HTTP sessions of a server client and of its admin client (none on disk)."""
        client = cast(Any, self._client)
        found = [getattr(getattr(c, "_server", None), "_session", None)
                 for c in (client, getattr(client, "_admin_client", None))]
        return [session for session in found if session is not None]

    def close(self) -> None:
        """Release the client: its database files, or its HTTP connections. Idempotent."""
        sessions = self._sessions()
        try:
            cast(Any, self._client).close()  # a Client; typed as the ClientAPI protocol
        finally:
            for session in sessions:  # chromadb 1.5 stops its Systems but leaves these open
                session.close()

    def _full(self, name: str) -> str:
        return f"{self._prefix}{name}"

    def open(self, name: str, embedder_id: str, *, create: bool,
             metadata: Metadata | None = None) -> Collection | None:
        """The collection ``name`` (None if it does not exist and ``create`` is false).
        Raises EmbedderMismatch if it was filled by another embedder."""
        full = self._full(name)
        with _translated(f"open {name}"):
            if create:
                raw = self._client.get_or_create_collection(
                    full, embedding_function=None,
                    metadata={"hnsw:space": "cosine", "hnsw:search_ef": SEARCH_EF,
                              EMBEDDER_KEY: embedder_id, **(metadata or {})})
            else:
                try:
                    raw = self._client.get_collection(full, embedding_function=None)
                except Exception as exc:
                    if type(exc).__name__ == "NotFoundError" or "does not exist" in str(exc):
                        return None
                    raise
        stored = (raw.metadata or {}).get(EMBEDDER_KEY)
        if stored != embedder_id:
            raise EmbedderMismatch(
                f"Collection '{full}' in {self.where} was filled with embedder '{stored}', but "
                f"EMBEDDINGS now configures '{embedder_id}'. Vectors of two embedders cannot be "
                "compared: set EMBEDDINGS back, or delete the collection and ingest again.")
        return Collection(raw, embedder_id)

    def names(self) -> list[str]:
        """This store's collection names (without the prefix), sorted."""
        with _translated("list collections"):
            raw = self._client.list_collections()
        names = [str(getattr(c, "name", c)) for c in raw]
        return sorted(n[len(self._prefix):] for n in names if n.startswith(self._prefix))

    def drop(self, name: str) -> bool:
        """Delete a collection; False if there was none."""
        with _translated(f"delete {name}"):
            try:
                self._client.delete_collection(self._full(name))
            except Exception as exc:
                if type(exc).__name__ == "NotFoundError" or "does not exist" in str(exc):
                    return False
                raise
        return True


class MiniLM:
    """ChromaDB's all-MiniLM-L6-v2 (ONNX), loaded from ``model_dir`` only: its ``onnx/`` folder
    must hold model.onnx, tokenizer.json, config.json, vocab.txt, special_tokens_map.json and
    tokenizer_config.json. Texts are not padded to 256 tokens as ChromaDB does (ten times faster
    on short texts; the vectors are the same: padding is masked out of the mean)."""

    FILES: Final = ("model.onnx", "tokenizer.json")

    def __init__(self, model_dir: Path) -> None:
        missing = [f for f in self.FILES if not (model_dir / "onnx" / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{model_dir}/onnx lacks {', '.join(missing)}")
        from chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2 import (
            ONNXMiniLM_L6_V2,
        )

        class Local(ONNXMiniLM_L6_V2):
            DOWNLOAD_PATH = model_dir

            def _download_model_if_not_exists(self) -> None:
                return None  # never download: the folder was checked above

            def _forward(self, documents: list[str], batch_size: int = 32) -> Any:
                # ChromaDB encodes each text alone and stacks the ids, so unpadded texts of
                # different lengths would make a ragged array: texts of one token length go
                # through together, and none is padded.
                by_length: dict[int, list[int]] = {}
                for i, text in enumerate(documents):
                    by_length.setdefault(len(self.tokenizer.encode(text).ids), []).append(i)
                out: list[Any] = [None] * len(documents)
                for indices in by_length.values():
                    done = super()._forward([documents[i] for i in indices], batch_size)
                    for i, vector in zip(indices, done, strict=True):
                        out[i] = vector
                return out

        self._model = Local()
        self._tuned = False

    @property
    def id(self) -> str:
        return "minilm-l6-v2"

    def vectors(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        if not self._tuned:
            self._model.tokenizer.no_padding()  # ChromaDB pads every text to 256 tokens
            self._tuned = True
        with _translated("embed with MiniLM"):
            return [[float(x) for x in v] for v in self._model(list(texts))]
