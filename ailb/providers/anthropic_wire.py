"""OpenAI chat requests to Anthropic's Messages API and Anthropic messages back. Pure.

Request rules (OpenAI -> Anthropic):

* ``system`` and ``developer`` messages become the top-level ``system`` (joined by blank lines);
  consecutive messages of one role are merged into one turn, as Anthropic requires.
* ``tool`` messages become ``tool_result`` blocks of a user turn; assistant ``tool_calls`` become
  ``tool_use`` blocks whose ``input`` is the parsed ``arguments``.
* ``image_url`` parts become image blocks: data URLs as base64 sources, http(s) URLs as URL sources.
* ``max_tokens`` (or ``max_completion_tokens``) defaults per model when absent; ``stop`` becomes
  ``stop_sequences``; ``user`` becomes ``metadata.user_id``; ``temperature`` is capped at 1.
* ``tools``/``tool_choice``: auto -> auto, none -> none, required -> any, a named function ->
  tool; ``parallel_tool_calls: false`` -> ``disable_parallel_tool_use``.

Response rules (Anthropic -> OpenAI): text blocks join into ``content``; ``tool_use`` blocks become
``tool_calls``; ``stop_reason`` end_turn/stop_sequence -> stop, max_tokens -> length, tool_use ->
tool_calls, refusal -> content_filter; usage counts cache reads and writes as prompt tokens, and
cache reads as ``prompt_tokens_details.cached_tokens``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from ailb.errors import InvalidRequest
from ailb.model import ChatRequest, Usage

STOP_REASONS: Final[Mapping[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
_DATA_URL: Final = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.S)


def default_max_tokens(model: str) -> int:
    """Anthropic requires ``max_tokens``; use the model family's usual output size."""
    if "opus-4" in model or "sonnet-4" in model or "haiku-4" in model or "3-7" in model:
        return 8192
    if "3-5" in model:
        return 8192
    return 4096


def _text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts: list[str] = []
    for part in content:
        if isinstance(part, Mapping) and part.get("type") == "text":
            parts.append(str(part.get("text", "")))
        else:
            raise InvalidRequest(f"'{where}' may only contain text parts for this model.",
                                 param=where)
    return "\n".join(parts)


def _image(part: Mapping[str, Any], where: str) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, Mapping) else image
    if not isinstance(url, str) or not url:
        raise InvalidRequest(f"'{where}.image_url.url' is required.", param=where)
    match = _DATA_URL.match(url)
    if match:
        return {"type": "image", "source": {"type": "base64", "media_type": match["type"],
                                            "data": match["data"]}}
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise InvalidRequest(f"'{where}.image_url.url' must be a data: or http(s) URL.", param=where)


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for index, part in enumerate(content or []):
        here = f"{where}[{index}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": str(part["text"])})
        elif kind == "image_url":
            blocks.append(_image(part, here))
        else:
            raise InvalidRequest(f"Content part type {kind!r} is not supported for this model.",
                                 param=f"{here}.type")
    return blocks


def _tool_input(arguments: Any, where: str) -> Any:
    if isinstance(arguments, Mapping):
        return dict(arguments)
    try:
        value = json.loads(arguments or "{}")
    except (TypeError, ValueError):
        raise InvalidRequest(f"'{where}' must be a JSON object string.", param=where) from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"'{where}' must be a JSON object string.", param=where)
    return value


def _assistant_blocks(message: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = _text(message.get("content"), f"{where}.content")
    if text:
        blocks.append({"type": "text", "text": text})
    for index, call in enumerate(message.get("tool_calls") or []):
        here = f"{where}.tool_calls[{index}]"
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not function.get("name") or not call.get("id"):
            raise InvalidRequest(f"'{here}' needs an id and function.name.", param=here)
        blocks.append({"type": "tool_use", "id": str(call["id"]), "name": str(function["name"]),
                       "input": _tool_input(function.get("arguments"),
                                            f"{here}.function.arguments")})
    return blocks


def _turns(messages: list[Mapping[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    system: list[str] = []
    turns: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if not blocks:
            return
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})

    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        role = message.get("role")
        if role in ("system", "developer"):
            text = _text(message.get("content"), f"{where}.content")
            if text:
                system.append(text)
        elif role == "user":
            add("user", _user_blocks(message.get("content"), f"{where}.content"))
        elif role == "assistant":
            add("assistant", _assistant_blocks(message, where))
        elif role in ("tool", "function"):
            call_id = message.get("tool_call_id") or message.get("name")
            if not call_id:
                raise InvalidRequest(f"'{where}.tool_call_id' is required.",
                                     param=f"{where}.tool_call_id")
            add("user", [{"type": "tool_result", "tool_use_id": str(call_id),
                          "content": _text(message.get("content"), f"{where}.content")}])
    return system, turns


def _tools(body: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    tools = body.get("tools")
    if tools:
        converted = []
        for index, tool in enumerate(tools):
            function = tool.get("function") if isinstance(tool, Mapping) else None
            if not isinstance(function, Mapping) or not function.get("name"):
                raise InvalidRequest("Only function tools with a name are supported.",
                                     param=f"tools[{index}]")
            entry: dict[str, Any] = {
                "name": function["name"],
                "input_schema": function.get("parameters") or {"type": "object",
                                                               "properties": {}},
            }
            if function.get("description"):
                entry["description"] = function["description"]
            converted.append(entry)
        out["tools"] = converted
    choice = body.get("tool_choice")
    mapped: dict[str, Any] | None = None
    if choice == "auto":
        mapped = {"type": "auto"}
    elif choice == "none":
        mapped = {"type": "none"}
    elif choice == "required":
        mapped = {"type": "any"}
    elif isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        mapped = {"type": "tool", "name": choice["function"].get("name")}
    elif choice is not None:
        raise InvalidRequest("Unsupported 'tool_choice'.", param="tool_choice")
    if body.get("parallel_tool_calls") is False and tools:
        mapped = {**(mapped or {"type": "auto"}), "disable_parallel_tool_use": True}
    if mapped is not None and (tools or mapped["type"] == "none"):
        out["tool_choice"] = mapped
    return out


def to_anthropic(request: ChatRequest, model: str) -> dict[str, Any]:
    """The Messages API body for ``request`` on upstream ``model``. Raises InvalidRequest."""
    body = request.body
    if (body.get("n") or 1) > 1:
        raise InvalidRequest("Anthropic models return one choice: 'n' must be 1.", param="n")
    system, turns = _turns(list(body.get("messages") or []))
    out: dict[str, Any] = {
        "model": model,
        "messages": turns,
        "max_tokens": request.max_tokens or default_max_tokens(model),
    }
    if system:
        out["system"] = "\n\n".join(system)
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("temperature") is not None:
        out["temperature"] = min(float(body["temperature"]), 1.0)
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    if body.get("user"):
        out["metadata"] = {"user_id": str(body["user"])}
    out.update(_tools(body))
    if request.stream:
        out["stream"] = True
    return out


def usage_of(raw: Any) -> Usage:
    """Anthropic usage -> ours: cache reads and writes are prompt tokens too."""
    raw = raw if isinstance(raw, Mapping) else {}

    def count(key: str) -> int:
        value = raw.get(key)
        return value if isinstance(value, int) and value >= 0 else 0

    cached = count("cache_read_input_tokens")
    prompt = count("input_tokens") + cached + count("cache_creation_input_tokens")
    return Usage(prompt_tokens=prompt, completion_tokens=count("output_tokens"),
                 cached_tokens=cached)


def tool_call(block: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": block.get("id"), "type": "function",
            "function": {"name": block.get("name"),
                         "arguments": json.dumps(block.get("input") or {},
                                                 separators=(",", ":"), ensure_ascii=False)}}


def from_anthropic(message: Mapping[str, Any], created: int) -> dict[str, Any]:
    """An Anthropic ``message`` as an OpenAI ``chat.completion``."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in message.get("content") or []:
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            calls.append(tool_call(block))
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None,
                             "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    stop = str(message.get("stop_reason") or "end_turn")
    return {
        "id": message.get("id"),
        "object": "chat.completion",
        "created": created,
        "model": message.get("model"),
        "choices": [{"index": 0, "message": reply, "logprobs": None,
                     "finish_reason": STOP_REASONS.get(stop, "stop")}],
        "usage": usage_of(message.get("usage")).to_openai(),
    }
