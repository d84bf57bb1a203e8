"""Anthropic messages back to OpenAI chat completions. Pure.

Text blocks join into ``content``; ``tool_use`` blocks become ``tool_calls`` (except the forced
answer tool of a ``response_format`` request, whose input is the content: see
``anthropic_structured``); ``stop_reason`` end_turn/stop_sequence -> stop, max_tokens -> length,
tool_use -> tool_calls, refusal -> content_filter. Usage counts cache reads and writes as prompt
tokens, cache reads as ``cached_tokens`` and writes as ``cache_write_tokens``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from ailb.model import Usage

STOP_REASONS: Final[Mapping[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def usage_of(raw: Any) -> Usage:
    """Anthropic usage -> ours: cache reads and writes are prompt tokens too."""
    raw = raw if isinstance(raw, Mapping) else {}

    def count(key: str) -> int:
        value = raw.get(key)
        return value if isinstance(value, int) and value >= 0 else 0

    cached = count("cache_read_input_tokens")
    written = count("cache_creation_input_tokens")
    return Usage(prompt_tokens=count("input_tokens") + cached + written,
                 completion_tokens=count("output_tokens"), cached_tokens=cached,
                 cache_write_tokens=written)


def tool_call(block: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": block.get("id"), "type": "function",
            "function": {"name": block.get("name"),
                         "arguments": dump_json(block.get("input") or {})}}


def dump_json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def from_anthropic(message: Mapping[str, Any], created: int,
                   answer_tool: str | None = None) -> dict[str, Any]:
    """An Anthropic ``message`` as an OpenAI ``chat.completion``. ``answer_tool``: the forced
    tool of a ``response_format`` request, whose input is the answer (see
    ``anthropic_structured``)."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    answer: str | None = None
    for block in message.get("content") or []:
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use" and answer_tool is not None \
                and block.get("name") == answer_tool and answer is None:
            answer = dump_json(block.get("input") or {})
        elif block.get("type") == "tool_use":
            calls.append(tool_call(block))
    if answer_tool is not None:  # the JSON only, never the text around it
        texts = [answer] if answer is not None else []
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None,
                             "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    stop = str(message.get("stop_reason") or "end_turn")
    finish = STOP_REASONS.get(stop, "stop")
    if answer is not None and not calls and finish == "tool_calls":
        finish = "stop"
    return {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": created,
        "model": message.get("model"),
        "choices": [{"index": 0, "message": reply, "logprobs": None,
                     "finish_reason": finish}],
        "usage": usage_of(message.get("usage")).to_openai(),
    }
