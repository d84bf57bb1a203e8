"""RAG request values: how a chat request opts in to retrieval, collection names, and user
metadata. Pure: values in, values out; errors are :class:`~ailb.errors.InvalidRequest` naming
the offending field in ``param``.

A chat request opts in with any of (the first that names a collection wins):

* ``"rag": {"collection": "docs", "top_k": 4, "min_score": 0.2}`` in the body;
* MarchProxy's flat fields ``"rag_collection": "docs"`` and ``"rag_top_k": 4``;
* the header ``x-ailb-rag-collection: docs``.

``top_k`` and ``min_score`` default to ``RAG.top_k`` and ``RAG.min_score``. The fields are always
taken out of the body: they are AILB's, and an upstream would refuse or misread them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ailb.config.schema import RagSettings
from ailb.errors import InvalidRequest

HEADER: Final = "x-ailb-rag-collection"
BODY_FIELDS: Final = ("rag", "rag_collection", "rag_top_k")
MAX_TOP_K: Final = 100
# 1-63 of A-Z a-z 0-9 . _ -, starting and ending with a letter or digit, no "..": ChromaDB
# refuses consecutive dots, and the name is also a URL path segment.
_NAME: Final = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?")
_RAG_KEYS: Final = ("collection", "top_k", "min_score")
_INT64: Final = 2**63


@dataclass(frozen=True, slots=True)
class RagOptions:
    """What a chat request asked to retrieve."""

    collection: str
    top_k: int
    min_score: float


def check_collection_name(name: Any, param: str = "name") -> str:
    """``name`` if it is a valid collection name. Raises InvalidRequest (``param``)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or ".." in name:
        raise InvalidRequest("A collection name is 1-63 of A-Z a-z 0-9 . _ -, starting and "
                             "ending with a letter or digit (no '..').", param=param)
    return name


def check_top_k(value: Any, param: str) -> int:
    """``value`` if it is an integer from 1 to :data:`MAX_TOP_K`. Raises InvalidRequest."""
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_TOP_K:
        raise InvalidRequest(f"'{param}' must be an integer from 1 to {MAX_TOP_K}.", param=param)
    return value


def check_min_score(value: Any, param: str) -> float:
    """``value`` as a float if it is a number from -1 to 1 (a cosine similarity). Raises
    InvalidRequest."""
    if (not isinstance(value, int | float) or isinstance(value, bool)
            or not math.isfinite(value) or not -1 <= value <= 1):
        raise InvalidRequest(f"'{param}' must be a number from -1 to 1.", param=param)
    return float(value)


def check_text(value: Any, param: str) -> None:
    """Every string in a JSON value must be storable text: JSON can carry lone UTF-16
    surrogates (``"\\ud800"``), which no store accepts. Raises InvalidRequest naming where."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest(f"'{param}' holds a lone UTF-16 surrogate, which is not text.",
                                 param=param) from None
    elif isinstance(value, Mapping):
        for key, item in value.items():
            check_text(key, param)
            check_text(item, f"{param}.{key}" if param else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            check_text(item, f"{param}[{index}]")


def flat_metadata(value: Any, param: str) -> dict[str, str | int | float | bool]:
    """User metadata as ChromaDB can store it: an object of strings, numbers and booleans
    (null values are dropped). Raises InvalidRequest for anything else, nested objects and
    lists included."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{param}' must be an object.", param=param)
    out: dict[str, str | int | float | bool] = {}
    for key, item in value.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 100:
            raise InvalidRequest(f"'{param}' keys must be 1-100 characters.", param=param)
        if item is None:
            continue
        if isinstance(item, int) and not isinstance(item, bool) and not (
                -_INT64 <= item < _INT64):
            raise InvalidRequest(f"'{param}.{key}' is too large an integer.",
                                 param=f"{param}.{key}")
        if isinstance(item, float) and not math.isfinite(item):
            raise InvalidRequest(f"'{param}.{key}' must be finite.", param=f"{param}.{key}")
        if not isinstance(item, str | int | float | bool):
            raise InvalidRequest(f"'{param}.{key}' must be a string, number or boolean: "
                                 "metadata is flat (no nested objects or lists).",
                                 param=f"{param}.{key}")
        out[key] = item
    return out


def rag_options(body: Mapping[str, Any], header: str | None,
                settings: RagSettings) -> tuple[RagOptions | None, dict[str, Any]]:
    """The retrieval a chat request asks for (None if it asks for none) and its body without
    the RAG fields (a new dict; ``body`` is not changed). Raises InvalidRequest for a bad
    collection name, ``top_k`` or ``min_score``, an unknown key in ``rag``, or a ``top_k``
    without a collection."""
    rest = {name: value for name, value in body.items() if name not in BODY_FIELDS}
    nested = body.get("rag")
    if nested is not None and not isinstance(nested, dict):
        raise InvalidRequest("'rag' must be an object: {\"collection\", \"top_k\", "
                             "\"min_score\"}.", param="rag")
    nested = nested or {}
    unknown = sorted(set(nested) - set(_RAG_KEYS))
    if unknown:
        raise InvalidRequest(f"Unknown field 'rag.{unknown[0]}'. Known: "
                             f"{', '.join(_RAG_KEYS)}.", param=f"rag.{unknown[0]}")
    header = (header or "").strip()
    if nested.get("collection") is not None:
        collection = check_collection_name(nested["collection"], "rag.collection")
    elif body.get("rag_collection") is not None:
        collection = check_collection_name(body["rag_collection"], "rag_collection")
    elif header:
        collection = check_collection_name(header, HEADER)
    else:
        collection = ""
    top_k = settings.top_k
    if nested.get("top_k") is not None:
        top_k = check_top_k(nested["top_k"], "rag.top_k")
    elif body.get("rag_top_k") is not None:
        top_k = check_top_k(body["rag_top_k"], "rag_top_k")
    min_score = settings.min_score
    if nested.get("min_score") is not None:
        min_score = check_min_score(nested["min_score"], "rag.min_score")
    if not collection:
        if nested:
            raise InvalidRequest("'rag.collection' is required to retrieve passages.",
                                 param="rag.collection")
        if body.get("rag_top_k") is not None:
            raise InvalidRequest("'rag_top_k' needs 'rag_collection'.", param="rag_collection")
        return None, rest
    return RagOptions(collection, top_k, min_score), rest
