"""Bounds and small shapes shared by several APIs."""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec

INT32_MAX: Final = 2**31 - 1  # token counts: what upstreams and the gRPC contract accept
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
JSON_SAFE_MAX: Final = 2**53  # exact in JSON numbers and floats; fits every store's integer

Tokens = Annotated[int, msgspec.Meta(ge=1, le=INT32_MAX,
                                     description="A token count, 1 to 2^31-1.")]
NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
Int64 = Annotated[int, msgspec.Meta(ge=INT64_MIN, le=INT64_MAX)]
JsonObject = dict[str, Any]
# Each pattern's meaning in words, for error messages (msgspec's own names the regex).
# msgspec matches with re.search, where "$" also matches before a final newline: "(?!\n)"
# refuses it (and means the same in a JSON Schema's ECMA regex).
PATTERNS: Final = {
    r"^[A-Za-z0-9._:@-]{1,128}(?!\n)$": "a session id: 1-128 of A-Z a-z 0-9 . _ : @ -",
    r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?(?!\n)$":
        "a collection name: 1-63 of A-Z a-z 0-9 . _ -, starting and ending with a letter or "
        "digit",
    r"^[A-Za-z0-9._\-*?\[\]!]{1,100}(?!\n)$":
        "a RAG collection name or a glob over names (e.g. docs-*)",
    r"^(?!\.{1,2}$)[^\x00-\x1f\x7f/]{1,200}(?!\n)$":
        "a document id: 1-200 characters, without '/' or control characters; not '.' or '..'",
}


def matching(pattern: str) -> msgspec.Meta:
    """A string constraint whose meaning is in :data:`PATTERNS`."""
    return msgspec.Meta(pattern=pattern, description=PATTERNS[pattern].capitalize() + ".")


SessionId = Annotated[str, matching(r"^[A-Za-z0-9._:@-]{1,128}(?!\n)$")]
CollectionName = Annotated[str, msgspec.Meta(min_length=1, max_length=63), matching(
    r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?(?!\n)$")]
TopK = Annotated[int, msgspec.Meta(ge=1, le=100)]
Unit = Annotated[float, msgspec.Meta(ge=0, le=1)]
Score = Annotated[float, msgspec.Meta(ge=-1, le=1)]


class Shape(msgspec.Struct, kw_only=True, omit_defaults=True, forbid_unknown_fields=False):
    """Base of request shapes: unknown fields are let through (the body is kept as sent)."""


class Strict(Shape, forbid_unknown_fields=True):
    """Base of AILB's own shapes (admin, RAG): an unknown field is a mistake worth naming."""


class RagRequest(Strict):
    """Retrieval for a chat request (AILB's own field; taken out before the upstream)."""

    collection: CollectionName | None = None
    top_k: TopK | None = None
    min_score: Score | None = None


class OwnFields(Shape):
    """AILB's own fields of a generation request (chat, messages, completions, responses):
    memory's session and RAG's retrieval, taken out before the upstream sees the body."""

    session_id: SessionId | None = None
    rag: RagRequest | None = None
    rag_collection: CollectionName | None = None
    rag_top_k: TopK | None = None


class ErrorDetail(Shape):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(Shape):
    """Every error of the OpenAI-shaped routes (chat, embeddings, admin, RAG, memory)."""

    error: ErrorDetail
