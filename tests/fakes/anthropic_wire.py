"""Pure builders for Anthropic Messages API payloads (no I/O), used by the fake upstream.

Shapes follow api.anthropic.com (``anthropic-version: 2023-06-01``): the ``message`` object,
the named SSE events of a stream (``message_start`` ... ``message_stop``, ``ping``, ``error``),
the ``{"type": "error", "error": {...}}`` envelope and the ``/v1/models`` page.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]

MODELS_CREATED_AT = "2025-02-19T00:00:00Z"

# status -> (error type, default message), as the API sends them.
_ERRORS: dict[int, tuple[str, str]] = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    404: ("not_found_error", "Not found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "This request would exceed your organization's rate limit."),
    500: ("api_error", "Internal server error"),
    504: ("timeout_error", "Request timed out."),
    529: ("overloaded_error", "Overloaded"),
}


def error_body(type_: str, message: str, request_id: str | None = None) -> JSON:
    """The error envelope; HTTP error bodies also carry ``request_id`` (SSE errors do not)."""
    body: JSON = {"type": "error", "error": {"type": type_, "message": message}}
    if request_id is not None:
        body["request_id"] = request_id
    return body


def error_for_status(
    status: int,
    type_: str | None = None,
    message: str | None = None,
    request_id: str | None = None,
) -> JSON:
    """An error body suitable for ``status``; ``type_``/``message`` override the defaults."""
    default_type, default_message = _ERRORS.get(
        status, ("api_error" if status >= 500 else "invalid_request_error", "Error.")
    )
    return error_body(type_ or default_type, message or default_message, request_id)


def sse(event: JSON) -> bytes:
    """One named server-sent event: ``event: <type>\\ndata: <json>\\n\\n``."""
    data = json.dumps(event, separators=(",", ":"))
    return f"event: {event['type']}\ndata: {data}\n\n".encode()


def display_name(model_id: str) -> str:
    """``claude-sonnet-4-20250514`` -> ``Claude Sonnet 4``: words up to the date suffix."""
    words = [w for w in model_id.split("-") if not (w.isdigit() and len(w) == 8)]
    return " ".join(w.capitalize() if w.isalpha() else w for w in words)


def model_list(ids: list[str]) -> JSON:
    """``GET /v1/models`` response: one page holding every model."""
    data = [
        {
            "type": "model",
            "id": i,
            "display_name": display_name(i),
            "created_at": MODELS_CREATED_AT,
        }
        for i in ids
    ]
    first = ids[0] if ids else None
    last = ids[-1] if ids else None
    return {"data": data, "has_more": False, "first_id": first, "last_id": last}


def _text_of(content: Any) -> str:
    """The text of a ``system``/message ``content``: a string or a list of content blocks."""
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            parts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_result":
            parts.append(_text_of(block.get("content")))
    return " ".join(parts)


def count_input_tokens(body: JSON) -> int:
    """Deterministic input tokens: whitespace words of ``system`` and every message's text."""
    messages = body.get("messages")
    texts = [_text_of(body.get("system"))]
    if isinstance(messages, list):
        texts += [_text_of(m.get("content")) for m in messages if isinstance(m, dict)]
    return sum(len(text.split()) for text in texts)


@dataclass(frozen=True)
class PromptBlock:
    """One block of a request's prompt, in the order the API caches them (tools, system,
    messages): its canonical JSON (without its marker), its tokens, whether it is marked."""

    key: str
    tokens: int
    marked: bool


def _prompt_block(block: Any, tokens: int) -> PromptBlock:
    marked = isinstance(block, dict) and block.get("cache_control") is not None
    if isinstance(block, dict):
        block = {k: v for k, v in block.items() if k != "cache_control"}
    return PromptBlock(json.dumps(block, sort_keys=True), tokens, marked)


def prompt_blocks(body: JSON) -> list[PromptBlock]:
    """The request's prompt as blocks; their tokens add up to :func:`count_input_tokens`
    (tools count none)."""
    out = [_prompt_block(tool, 0) for tool in body.get("tools") or []]
    system = body.get("system")
    blocks = system if isinstance(system, list) else [{"type": "text", "text": system or ""}]
    out += [_prompt_block(b, len(_text_of([b]).split())) for b in blocks]
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        role = message.get("role") if isinstance(message, dict) else None
        out += [_prompt_block({"role": role, **b} if isinstance(b, dict) else b,
                              len(_text_of([b]).split())) for b in content or []]
    return out


@dataclass(frozen=True)
class Block:
    """One content block of the answer.

    ``pieces`` are the ``text_delta`` texts of a text block, or the ``partial_json`` fragments
    of a tool_use block; joined, they give the text / the tool input JSON byte for byte.
    """

    type: str  # "text" | "tool_use"
    pieces: list[str]
    tool_id: str = ""
    name: str = ""

    def final(self) -> JSON:
        """The block as it appears in a non-streamed ``message``."""
        if self.type == "text":
            return {"type": "text", "text": "".join(self.pieces)}
        raw = "".join(self.pieces)
        tool_input = json.loads(raw) if raw else {}
        return {"type": "tool_use", "id": self.tool_id, "name": self.name, "input": tool_input}

    def start(self) -> JSON:
        """The empty block sent in ``content_block_start``."""
        if self.type == "text":
            return {"type": "text", "text": ""}
        return {"type": "tool_use", "id": self.tool_id, "name": self.name, "input": {}}

    def delta(self, piece: str) -> JSON:
        if self.type == "text":
            return {"type": "text_delta", "text": piece}
        return {"type": "input_json_delta", "partial_json": piece}


@dataclass(frozen=True)
class MessageAnswer:
    """What the fake decided to answer; rendered as a ``message`` or as stream events."""

    id: str
    model: str
    blocks: list[Block]
    stop_reason: str
    stop_sequence: str | None
    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0

    def usage(self, output_tokens: int) -> JSON:
        return {
            "input_tokens": self.input_tokens,
            "cache_creation_input_tokens": self.cache_creation_input_tokens,
            "cache_read_input_tokens": self.cache_read_input_tokens,
            "output_tokens": output_tokens,
        }

    def envelope(self, content: list[JSON], stop_reason: str | None, output: int) -> JSON:
        return {
            "id": self.id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": self.stop_sequence if stop_reason else None,
            "usage": self.usage(output),
        }


def message(answer: MessageAnswer) -> JSON:
    """The non-streamed ``message`` object."""
    content = [block.final() for block in answer.blocks]
    return answer.envelope(content, answer.stop_reason, answer.output_tokens)


def stream_events(
    answer: MessageAnswer,
    *,
    error_after_deltas: int | None = None,
    error: JSON | None = None,
) -> list[JSON]:
    """Every event of a stream, in order; each event's ``type`` is also its SSE event name.

    ``message_start`` (empty content, ``output_tokens`` 1), per block ``content_block_start``,
    its deltas and ``content_block_stop`` (a ``ping`` follows the first block start, as the
    API does), then ``message_delta`` with the stop reason and final ``output_tokens``, and
    ``message_stop``. With ``error_after_deltas`` the stream ends with ``error`` (an error
    envelope) once that many ``content_block_delta`` events have been sent.
    """
    events: list[JSON] = [
        {"type": "message_start", "message": answer.envelope([], None, 1)},
    ]
    sent = 0
    for index, block in enumerate(answer.blocks):
        start = {"type": "content_block_start", "index": index, "content_block": block.start()}
        events.append(start)
        if index == 0:
            events.append({"type": "ping"})
        for piece in block.pieces:
            if error_after_deltas is not None and sent >= error_after_deltas:
                return [*events, error or error_for_status(529)]
            delta = {"type": "content_block_delta", "index": index, "delta": block.delta(piece)}
            events.append(delta)
            sent += 1
        events.append({"type": "content_block_stop", "index": index})
    stop = {"stop_reason": answer.stop_reason, "stop_sequence": answer.stop_sequence}
    usage = {"output_tokens": answer.output_tokens}
    events.append({"type": "message_delta", "delta": stop, "usage": usage})
    events.append({"type": "message_stop"})
    return events
