"""Cache keys and sizes for the RAG and response caches. Pure: no I/O, no state.

Keys are SHA-256 hex digests of a canonical JSON (sorted keys, compact separators, UTF-8
kept as is), so the same request written with its fields in another order gets the same key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

# Chat completion fields that do not change the answer: how it is delivered (stream,
# stream_options), who asked (user, metadata), whether the provider keeps it (store) and at
# which service tier it is served. Two requests differing only in these share a cached answer.
_NOT_IN_ANSWER = frozenset(
    {"stream", "stream_options", "user", "metadata", "store", "service_tier"}
)


def _canonical(value: Any) -> str:
    # allow_nan=False: NaN/Infinity are not JSON, and NaN != NaN would make a key that never
    # matches its own request again.
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )


def _digest(text: str) -> str:
    # surrogatepass: a lone surrogate (possible in a Python str from JSON escapes) still hashes.
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def rag_cache_key(
    collection: str, query: str, top_k: int, min_score: float, embedder_id: str
) -> str:
    """The key of one RAG retrieval: a SHA-256 hex digest of its parameters.

    ``min_score`` is taken as a float, so ``1`` and ``1.0`` give the same key.
    Raises ``ValueError`` if ``min_score`` is NaN or infinite.
    """
    return _digest(
        _canonical(
            {
                "collection": collection,
                "query": query,
                "top_k": int(top_k),
                "min_score": float(min_score),
                "embedder_id": embedder_id,
            }
        )
    )


def _is_number(value: Any) -> bool:
    # bool is an int subclass: ``"temperature": false`` or ``"n": true`` are not numbers here.
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_deterministic(body: Mapping[str, Any]) -> bool:
    """Whether a chat completion body asks for an answer that may be cached: ``temperature``
    is 0 (int or float) or an integer ``seed`` is given, and ``n`` is absent (or null) or 1.

    Returns False when neither is given: the OpenAI default temperature is 1. A seed only
    makes providers try to repeat themselves; caching it is what makes the answer repeat.
    Whether the request streams is not looked at: the caller decides.
    """
    temperature = body.get("temperature")
    seed = body.get("seed")
    pinned = (_is_number(temperature) and temperature == 0) or (
        isinstance(seed, int) and not isinstance(seed, bool)
    )
    n = body.get("n")
    single = n is None or (_is_number(n) and n == 1)
    return pinned and single


def response_cache_key(scope: str, body: Mapping[str, Any]) -> str:
    """The key of a chat completion answer: a SHA-256 hex digest of ``scope`` and the body
    without the fields that do not change the answer (``stream``, ``stream_options``, ``user``,
    ``metadata``, ``store``, ``service_tier``).

    ``scope`` is the API key id for a per-key cache, or ``"shared"`` for a cache shared by all
    keys; different scopes never share a key.
    Raises ``TypeError`` if the body holds a value that is not JSON, ``ValueError`` if it holds
    NaN or an infinity.
    """
    # 0 and 0.0 ask for the same answer (gRPC's typed fields are floats)
    kept = {name: int(value) if isinstance(value, float) and value.is_integer() else value
            for name, value in body.items() if name not in _NOT_IN_ANSWER}
    # Scope and body as one JSON array: unambiguous, unlike plain concatenation, where a scope
    # could end with what another body begins with.
    return _digest(_canonical([scope, kept]))


def json_size(value: Any) -> int:
    """Approximate size in bytes of a cached value, for ``BoundedCache(size_of=...)``: the
    length of bytes, of a str encoded as UTF-8, or else of the value's compact JSON.

    Raises ``TypeError`` for a value that is neither bytes, str nor JSON-able.
    """
    if isinstance(value, bytes | bytearray):
        return len(value)
    if isinstance(value, memoryview):
        return value.nbytes
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return len(text.encode("utf-8", "surrogatepass"))
