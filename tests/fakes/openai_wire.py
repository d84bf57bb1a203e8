"""Pure builders for OpenAI wire-format payloads (no I/O), used by the fake upstream.

Shapes follow what api.openai.com returns for Chat Completions, Embeddings and Models,
including the fields clients and gateways tend to trip over (``refusal``, ``logprobs``,
``usage: null`` on stream chunks when usage is requested, ``choices: []`` on the usage chunk).
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import re
import struct
from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]

SYSTEM_FINGERPRINT = "fp_fake0000001"
MODELS_CREATED = 1_700_000_000

# status -> (error type, error code, default message), as OpenAI sends them.
_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", None, "You are not allowed to access this resource."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached. Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
}


def dumps(obj: Any, *, pretty: bool = False) -> bytes:
    """Serialise like OpenAI: indented bodies for plain responses, compact for SSE events."""
    if pretty:
        return json.dumps(obj, indent=2).encode()
    return json.dumps(obj, separators=(",", ":")).encode()


def sse(obj: JSON | str) -> bytes:
    """One server-sent event: ``data: <json>\\n\\n`` (or a literal such as ``[DONE]``)."""
    payload = obj.encode() if isinstance(obj, str) else dumps(obj)
    return b"data: " + payload + b"\n\n"


def error_body(
    message: str, type_: str, *, param: str | None = None, code: str | None = None
) -> JSON:
    """The ``{"error": {...}}`` envelope every OpenAI error response carries."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_for_status(status: int, message: str | None = None) -> JSON:
    """An OpenAI-shaped error body suitable for ``status`` (type/code as OpenAI uses them)."""
    type_, code, default = _ERRORS.get(
        status, ("server_error" if status >= 500 else "invalid_request_error", None, "Error.")
    )
    return error_body(message or default, type_, code=code)


def model_list(ids: list[str]) -> JSON:
    """``GET /v1/models`` response."""
    data = [
        {"id": i, "object": "model", "created": MODELS_CREATED, "owned_by": "fake"} for i in ids
    ]
    return {"object": "list", "data": data}


def split_reply(text: str, chunks: int | None) -> list[str]:
    """Split ``text`` at word boundaries into ``chunks`` pieces (one per word when None).

    Joining the pieces gives back ``text`` exactly.
    """
    words = re.findall(r"\s*\S+\s*", text) if text.strip() else ([text] if text else [])
    if not words:
        return []
    n = len(words) if chunks is None else max(1, min(chunks, len(words)))
    size, extra = divmod(len(words), n)
    pieces, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        pieces.append("".join(words[start:end]))
        start = end
    return pieces


def split_fixed(text: str, parts: int) -> list[str]:
    """Split ``text`` into ``parts`` contiguous fragments of near-equal length (for arguments)."""
    if not text:
        return [""]
    step = max(1, math.ceil(len(text) / parts))
    return [text[i : i + step] for i in range(0, len(text), step)]


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: [{"type": "text", "text": ...}, ...]
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def count_prompt_tokens(messages: Any) -> int:
    """Deterministic prompt token count: whitespace words of every message + 3 per message."""
    if not isinstance(messages, list):
        return 0
    return sum(len(_text_of(m.get("content")).split()) + 3 for m in messages if isinstance(m, dict))


def usage(prompt_tokens: int, completion_tokens: int) -> JSON:
    """Chat ``usage`` object with the detail sub-objects OpenAI includes."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


@dataclass(frozen=True)
class ChatAnswer:
    """What the fake decided to answer; rendered as a completion or as stream chunks.

    ``pieces`` are content deltas, or argument fragments when ``tool_call``
    (``{"id", "name", "arguments"}``) is set. Joined, they form the full content/arguments.
    """

    id: str
    created: int
    model: str
    pieces: list[str]
    tool_call: JSON | None
    finish_reason: str
    usage: JSON

    def envelope(self, obj: str) -> JSON:
        """The fields every completion object and chunk starts with."""
        return {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
        }


def chat_completion(answer: ChatAnswer) -> JSON:
    """Non-streaming ``chat.completion`` object."""
    content = None if answer.tool_call else "".join(answer.pieces)
    message: JSON = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
    if answer.tool_call is not None:
        call = answer.tool_call
        function = {"name": call["name"], "arguments": call["arguments"]}
        message["tool_calls"] = [{"id": call["id"], "type": "function", "function": function}]
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": answer.finish_reason,
    }
    return {**answer.envelope("chat.completion"), "choices": [choice], "usage": answer.usage}


def chat_chunks(answer: ChatAnswer, *, include_usage: bool) -> list[JSON]:
    """Every ``chat.completion.chunk`` of a stream, in order (without the ``[DONE]`` marker).

    With ``include_usage`` (the request's ``stream_options.include_usage``) every chunk carries
    ``"usage": null`` and a last chunk with ``"choices": []`` carries the usage.
    """

    def chunk(delta: JSON, finish: str | None = None) -> JSON:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        out = {**answer.envelope("chat.completion.chunk"), "choices": [choice]}
        return {**out, "usage": None} if include_usage else out

    call = answer.tool_call
    if call is None:
        chunks = [chunk({"role": "assistant", "content": "", "refusal": None})]
        chunks += [chunk({"content": piece}) for piece in answer.pieces]
    else:
        function = {"name": call["name"], "arguments": ""}
        head = {"index": 0, "id": call["id"], "type": "function", "function": function}
        first = {"role": "assistant", "content": None, "tool_calls": [head], "refusal": None}
        chunks = [chunk(first)]
        for piece in answer.pieces:
            chunks.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
    chunks.append(chunk({}, answer.finish_reason))
    if include_usage:
        usage_chunk = {**answer.envelope("chat.completion.chunk"), "choices": []}
        chunks.append({**usage_chunk, "usage": answer.usage})
    return chunks


def _embedding_inputs(raw: Any) -> list[Any]:
    """Normalise ``input``: a string, list of strings, token list, or list of token lists."""
    if isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int)):
        return [raw]
    return list(raw) if isinstance(raw, list) else [raw]


def embedding_vector(item: Any, dimensions: int) -> list[float]:
    """Deterministic unit-length vector for one input, exactly representable as float32."""
    seed = hashlib.sha256(json.dumps(item).encode()).digest()
    raw = [(seed[i % len(seed)] + 7 * i) % 256 / 127.5 - 1.0 for i in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [struct.unpack("<f", struct.pack("<f", x / norm))[0] for x in raw]


def embeddings(model: str, raw_input: Any, dimensions: int, encoding_format: str) -> JSON:
    """``POST /v1/embeddings`` response; "base64" ``encoding_format`` packs little-endian f32."""
    items = _embedding_inputs(raw_input)
    data = []
    for index, item in enumerate(items):
        vector = embedding_vector(item, dimensions)
        value: list[float] | str = vector
        if encoding_format == "base64":
            value = base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": value})
    tokens = sum(len(i) if isinstance(i, list) else len(str(i).split()) for i in items)
    return {
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
