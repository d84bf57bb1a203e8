"""Pure builders for Ollama's native API payloads (no I/O), used by the fake upstream.

Shapes follow an Ollama server: ``/api/tags`` model entries, ``/api/chat`` responses (one JSON
object, or NDJSON lines ending with a ``"done": true`` line that carries counts and durations
in nanoseconds), ``/api/embed`` and the ``{"error": "..."}`` envelope.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .openai_wire import embedding_vector

JSON = dict[str, Any]

MODIFIED_AT = "2025-01-15T09:30:00.123456789Z"
LOAD_DURATION_NS = 1_500_000
PROMPT_NS_PER_TOKEN = 100_000
EVAL_NS_PER_TOKEN = 250_000


def dumps(obj: Any) -> bytes:
    """Compact JSON as Ollama (Go) writes it."""
    return json.dumps(obj, separators=(",", ":")).encode()


def ndjson(obj: JSON) -> bytes:
    """One NDJSON line."""
    return dumps(obj) + b"\n"


def now() -> str:
    """RFC 3339 timestamp with sub-second digits and a ``Z``, like ``created_at``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def find_model(name: str, models: list[str]) -> str | None:
    """Resolve ``name`` as Ollama does: exact, or with the implicit ``:latest`` tag."""
    for candidate in (name, f"{name}:latest"):
        if candidate in models:
            return candidate
    return None


def tag_entry(name: str) -> JSON:
    """One ``/api/tags`` entry with deterministic size, digest and details."""
    digest = hashlib.sha256(name.encode()).hexdigest()
    family = name.split(":")[0].rstrip("0123456789.").split("-")[0] or "llama"
    tag = name.split(":")[1].lower() if ":" in name else "latest"
    try:
        parameter_size = f"{float(tag.removesuffix('b')):.1f}B"  # "8b" -> "8.0B"
    except ValueError:
        parameter_size = "8.0B"
    return {
        "name": name,
        "model": name,
        "modified_at": MODIFIED_AT,
        "size": 1_000_000 + int(digest[:6], 16) * 1000,
        "digest": digest,
        "details": {
            "parent_model": "",
            "format": "gguf",
            "family": family,
            "families": [family],
            "parameter_size": parameter_size,
            "quantization_level": "Q4_K_M",
        },
    }


def tags(models: list[str]) -> JSON:
    """``GET /api/tags`` response."""
    return {"models": [tag_entry(name) for name in models]}


def count_prompt_tokens(messages: Any) -> int:
    """Deterministic ``prompt_eval_count``: whitespace words of every message's content."""
    if not isinstance(messages, list):
        return 0
    return sum(len(str(m.get("content") or "").split()) for m in messages if isinstance(m, dict))


def durations(prompt_tokens: int, eval_tokens: int) -> JSON:
    """The timing fields (nanoseconds), derived from the counts so tests can predict them."""
    prompt_ns = prompt_tokens * PROMPT_NS_PER_TOKEN
    eval_ns = eval_tokens * EVAL_NS_PER_TOKEN
    return {
        "total_duration": LOAD_DURATION_NS + prompt_ns + eval_ns,
        "load_duration": LOAD_DURATION_NS,
        "prompt_eval_count": prompt_tokens,
        "prompt_eval_duration": prompt_ns,
        "eval_count": eval_tokens,
        "eval_duration": eval_ns,
    }


@dataclass(frozen=True)
class ChatAnswer:
    """What the fake decided to answer: content ``pieces`` (joined: the whole content),
    ``tool_calls`` (``[{"function": {"name", "arguments": dict}}]``) or neither."""

    model: str
    pieces: list[str]
    tool_calls: list[JSON] | None
    done_reason: str
    prompt_tokens: int
    eval_tokens: int


def _message(content: str, tool_calls: list[JSON] | None = None) -> JSON:
    message: JSON = {"role": "assistant", "content": content}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return message


def _done(answer: ChatAnswer, message: JSON) -> JSON:
    return {
        "model": answer.model,
        "created_at": now(),
        "message": message,
        "done_reason": answer.done_reason,
        "done": True,
        **durations(answer.prompt_tokens, answer.eval_tokens),
    }


def chat_response(answer: ChatAnswer) -> JSON:
    """Non-streaming ``/api/chat`` response."""
    return _done(answer, _message("".join(answer.pieces), answer.tool_calls))


def chat_lines(
    answer: ChatAnswer, *, error_after: int | None = None, error: str = ""
) -> list[JSON]:
    """Every NDJSON object of a streamed ``/api/chat``, in order.

    One ``"done": false`` object per content piece, then (tool calls are not streamed) one
    holding every ``tool_calls`` entry, then the ``"done": true`` object with empty content,
    ``done_reason``, counts and durations. With ``error_after`` the stream ends with
    ``{"error": error}`` after that many ``"done": false`` objects.
    """
    partial = [_message(piece) for piece in answer.pieces]
    if answer.tool_calls:
        partial.append(_message("", answer.tool_calls))
    lines: list[JSON] = []
    for message in partial:
        if error_after is not None and len(lines) >= error_after:
            return [*lines, {"error": error}]
        lines.append(
            {"model": answer.model, "created_at": now(), "message": message, "done": False}
        )
    return [*lines, _done(answer, _message(""))]


def _embed_inputs(raw: Any) -> list[Any]:
    return list(raw) if isinstance(raw, list) else [raw]


def embed_response(model: str, raw_input: Any, dimensions: int) -> JSON:
    """``POST /api/embed`` response: one unit-length vector per input (string or list)."""
    items = _embed_inputs(raw_input)
    tokens = sum(len(str(item).split()) for item in items)
    prompt_ns = tokens * PROMPT_NS_PER_TOKEN
    return {
        "model": model,
        "embeddings": [embedding_vector(item, dimensions) for item in items],
        "total_duration": LOAD_DURATION_NS + prompt_ns,
        "load_duration": LOAD_DURATION_NS,
        "prompt_eval_count": tokens,
    }
