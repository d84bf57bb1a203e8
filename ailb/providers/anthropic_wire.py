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
  tool; ``parallel_tool_calls: false`` -> ``disable_parallel_tool_use``. Tool order is kept.
* ``response_format`` json_object / json_schema: a forced tool (``anthropic_structured``).
* ``cache_control`` markers on parts, messages and tools: on the corresponding Anthropic blocks,
  at most 4 (``anthropic_cache``). With a marker in a system message, ``system`` is a list of
  text blocks (one per part) instead of the joined string.

The translation depends only on the request: the same request gives the same bytes upstream
(providers' prefix caches rely on that).

Answers are translated back by ``anthropic_answer``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from ailb.errors import InvalidRequest
from ailb.model import ChatRequest
from ailb.providers import anthropic_structured as structured
from ailb.providers.anthropic_cache import check_markers, mark, mark_last, marker

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


def _user_blocks(content: Any, where: str, images: bool = True) -> list[dict[str, Any]]:
    """One block per part, each with its part's cache marker (text only unless ``images``)."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for index, part in enumerate(content or []):
        here = f"{where}[{index}]"
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            if part.get("text"):
                blocks.append(mark({"type": "text", "text": str(part["text"])},
                                   marker(part, here)))
        elif kind == "image_url" and images:
            blocks.append(mark(_image(part, here), marker(part, here)))
        elif not images:
            raise InvalidRequest(f"'{where}' may only contain text parts for this model.",
                                 param=where)
        else:
            raise InvalidRequest(f"Content part type {kind!r} is not supported for this model.",
                                 param=f"{here}.type")
    return blocks


def _marked(message: Mapping[str, Any], where: str) -> dict[str, Any] | None:
    """The message's own marker, else the last marker among its content parts."""
    found = marker(message, where)
    content = message.get("content")
    for index, part in enumerate(content if isinstance(content, list) else []):
        found = marker(part, f"{where}.content[{index}]") or found
    return found


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
    own = marker(message, where)
    if _marked(message, where) is not None:  # per-part blocks keep the markers in place
        blocks.extend(_user_blocks(message.get("content"), f"{where}.content", images=False))
    else:
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
    mark_last(blocks, own)
    return blocks


def _system(messages: list[Mapping[str, Any]]) -> str | list[dict[str, Any]] | None:
    """The system and developer messages: their texts joined by blank lines, or, when one
    carries a cache marker, one text block per part (markers kept)."""
    texts: list[str] = []
    blocks: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        if message.get("role") not in ("system", "developer"):
            continue
        where = f"messages[{index}]"
        text = _text(message.get("content"), f"{where}.content")
        if text:
            texts.append(text)
        own = _user_blocks(message.get("content"), f"{where}.content", images=False)
        mark_last(own, marker(message, where))
        blocks.extend(own)
    if any("cache_control" in block for block in blocks):
        return blocks
    return "\n\n".join(texts) if texts else None


def _turns(messages: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
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
        if role == "user":
            blocks = _user_blocks(message.get("content"), f"{where}.content")
            mark_last(blocks, marker(message, where))
            add("user", blocks)
        elif role == "assistant":
            add("assistant", _assistant_blocks(message, where))
        elif role in ("tool", "function"):
            call_id = message.get("tool_call_id") or message.get("name")
            if not call_id:
                raise InvalidRequest(f"'{where}.tool_call_id' is required.",
                                     param=f"{where}.tool_call_id")
            add("user", [mark({"type": "tool_result", "tool_use_id": str(call_id),
                               "content": _text(message.get("content"), f"{where}.content")},
                              _marked(message, where))])
    return turns


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
            converted.append(mark(entry, marker(tool, f"tools[{index}]")
                                  or marker(function, f"tools[{index}].function")))
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
    messages = list(body.get("messages") or [])
    answer = structured.answer_tool(body)
    out: dict[str, Any] = {
        "model": model,
        "messages": _turns(messages),
        "max_tokens": request.max_tokens or default_max_tokens(model),
    }
    system = _system(messages)
    if system:
        out["system"] = system
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
    if answer is not None:
        out.update(structured.force(answer))
    if request.stream:
        out["stream"] = True
    check_markers(out)
    return out
