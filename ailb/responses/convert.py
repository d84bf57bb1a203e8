"""Responses API requests -> the pipeline's OpenAI-shaped chat body. Pure.

AILB answers ``POST /v1/responses`` on every provider by running it as a chat request, so the
providers' existing translation (Anthropic, Ollama, echo) applies. Mapping:

* ``instructions`` -> a leading system message (for this request only: a continuation does not
  inherit them, as in OpenAI's API); ``input`` as a string -> one user message;
* message items (``input_text`` / ``output_text`` parts, ``input_image`` -> ``image_url``) ->
  messages of their role; ``function_call`` items -> an assistant message's ``tool_calls``
  (consecutive calls share one message); ``function_call_output`` -> a ``tool`` message;
* the stored conversation of ``previous_response_id`` comes first;
* function ``tools`` (flat) -> chat tools; ``tool_choice`` ``{"type": "function", "name"}`` ->
  the chat form; ``text.format`` json_schema / json_object -> ``response_format``;
  ``max_output_tokens`` -> ``max_tokens``; ``temperature``, ``top_p``, ``user``,
  ``parallel_tool_calls`` as they are.

``reasoning.effort`` -> ``reasoning_effort`` (for the reasoning models that take it).

Built-in tools, item references, file inputs, ``background: true`` (AILB answers in the
request: it queues nothing to poll), ``prompt`` templates and ``conversation`` objects are
refused with a 400 naming the field. Fields that only ask for extra output AILB does not make
(``include``, ``truncation``, ``prompt_cache_key``...) are accepted and have no effect.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ailb.errors import InvalidRequest
from ailb.pipeline.augment import OWN_FIELDS
from ailb.schemas.check import conform
from ailb.schemas.responses_api import ResponsesRequest

_TEXT_PARTS = frozenset(("input_text", "output_text", "text"))


@dataclass(frozen=True, slots=True)
class Converted:
    chat: dict[str, Any]  # the chat completion body
    input_items: list[dict[str, Any]]  # the request's input items, each with an id
    turn: list[dict[str, Any]]  # this request's input as chat messages (instructions left out)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _part(part: Mapping[str, Any], where: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind in _TEXT_PARTS:
        return {"type": "text", "text": str(part.get("text") or "")}
    if kind == "input_image" and part.get("image_url"):
        image: dict[str, Any] = {"url": str(part["image_url"])}
        if part.get("detail"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise InvalidRequest(f"Invalid value for '{where}.type': {kind!r} is not supported here "
                         f"(input_text, output_text, input_image with image_url).",
                         param=f"{where}.type")


def _content(content: Any, where: str) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    parts = [_part(p, f"{where}.{i}") for i, p in enumerate(content or [])]
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return "".join(str(p.get("text") or "") for p in value or [] if isinstance(p, Mapping))


def _item_message(item: Mapping[str, Any], where: str,
                  messages: list[dict[str, Any]]) -> dict[str, Any]:
    """Append ``item``'s chat message(s) to ``messages``; returns the item as stored."""
    kind = item.get("type") or ("message" if item.get("role") else None)
    if kind == "message":
        role = item.get("role")
        if role not in ("user", "assistant", "system", "developer"):
            raise InvalidRequest(f"Missing or invalid '{where}.role'.", param=f"{where}.role")
        messages.append({"role": role, "content": _content(item.get("content"),
                                                           f"{where}.content")})
        content = item.get("content")
        parts = [{"type": "input_text" if role != "assistant" else "output_text",
                  "text": content}] if isinstance(content, str) else list(content or [])
        return {"id": item.get("id") or new_id("msg"), "type": "message", "role": role,
                "status": "completed", "content": parts}
    if kind == "function_call":
        for name in ("call_id", "name"):
            if not item.get(name):
                raise InvalidRequest(f"Missing required parameter: '{where}.{name}'.",
                                     param=f"{where}.{name}")
        call = {"id": item["call_id"], "type": "function",
                "function": {"name": item["name"], "arguments": item.get("arguments") or "{}"}}
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant" and "tool_calls" in last:
            last["tool_calls"].append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        return {"id": item.get("id") or new_id("fc"), "type": "function_call",
                "status": "completed", "call_id": item["call_id"], "name": item["name"],
                "arguments": item.get("arguments") or "{}"}
    if kind == "function_call_output":
        if not item.get("call_id"):
            raise InvalidRequest(f"Missing required parameter: '{where}.call_id'.",
                                 param=f"{where}.call_id")
        output = _text(item.get("output"))
        messages.append({"role": "tool", "tool_call_id": item["call_id"], "content": output})
        return {"id": item.get("id") or new_id("fco"), "type": "function_call_output",
                "status": "completed", "call_id": item["call_id"], "output": output}
    raise InvalidRequest(f"Invalid value for '{where}.type': {kind!r} is not supported "
                         f"(message, function_call, function_call_output).",
                         param=f"{where}.type")


def _tools(body: Mapping[str, Any], chat: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools:
        out = []
        for index, tool in enumerate(tools):
            if tool.get("type") != "function" or not tool.get("name"):
                raise InvalidRequest(f"Invalid value for 'tools.{index}': only function tools "
                                     f"(with a name) are supported.", param=f"tools.{index}")
            function = {"name": tool["name"], "parameters": tool.get("parameters")
                        or {"type": "object", "properties": {}}}
            for name in ("description", "strict"):
                if tool.get(name) is not None:
                    function[name] = tool[name]
            out.append({"type": "function", "function": function})
        chat["tools"] = out
    choice = body.get("tool_choice")
    if isinstance(choice, str):
        chat["tool_choice"] = choice
    elif isinstance(choice, Mapping):
        if choice.get("type") != "function" or not choice.get("name"):
            raise InvalidRequest("Invalid value for 'tool_choice': 'none', 'auto', 'required' "
                                 "or {'type': 'function', 'name': ...}.", param="tool_choice")
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    if body.get("parallel_tool_calls") is not None and tools:
        chat["parallel_tool_calls"] = body["parallel_tool_calls"]


def _format(body: Mapping[str, Any], chat: dict[str, Any]) -> None:
    text = body.get("text") or {}
    fmt = text.get("format")
    if not fmt or fmt.get("type") == "text":
        return
    if fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    elif fmt.get("type") == "json_schema":
        if not fmt.get("name") or fmt.get("schema") is None:
            raise InvalidRequest("'text.format' json_schema needs a 'name' and a 'schema'.",
                                 param="text.format")
        schema: dict[str, Any] = {"name": fmt["name"], "schema": fmt["schema"]}
        for name in ("description", "strict"):
            if fmt.get(name) is not None:
                schema[name] = fmt[name]
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    else:
        raise InvalidRequest(f"Invalid value for 'text.format.type': {fmt.get('type')!r}.",
                             param="text.format.type")


def validate(body: Mapping[str, Any]) -> None:
    """Hold ``body`` to :class:`ResponsesRequest`. Raises InvalidRequest naming the field."""
    conform(body, ResponsesRequest)
    if not str(body["model"]).strip():
        raise InvalidRequest("'model' must be a non-empty string.", param="model")
    if body.get("input") is None:
        raise InvalidRequest("Missing required parameter: 'input'.", param="input")
    if body.get("background"):
        raise InvalidRequest("'background' responses are not supported: AILB answers within "
                             "the request (send it without 'background').", param="background")
    for name in ("prompt", "conversation"):
        if body.get(name) is not None:
            raise InvalidRequest(f"'{name}' is not supported by this gateway: send the input "
                                 "itself (and previous_response_id to continue).", param=name)


def to_chat(body: Mapping[str, Any], history: Sequence[Mapping[str, Any]]) -> Converted:
    """A validated Responses request (see :func:`validate`) and the conversation of its
    ``previous_response_id`` (empty without one) as a chat body. Raises InvalidRequest."""
    raw = body["input"]
    turn: list[dict[str, Any]] = []
    if isinstance(raw, str):
        items = [_item_message({"type": "message", "role": "user", "content": raw}, "input",
                               turn)]
    else:
        items = [_item_message(item, f"input.{i}", turn) for i, item in enumerate(raw)]
    messages: list[dict[str, Any]] = [dict(m) for m in history]
    if body.get("instructions"):
        messages.insert(0, {"role": "system", "content": body["instructions"]})
    messages += turn
    if not messages:
        raise InvalidRequest("'input' must not be empty.", param="input")
    chat: dict[str, Any] = {"model": body["model"], "messages": messages}
    for name in ("temperature", "top_p", "user"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    reasoning = body.get("reasoning")
    if isinstance(reasoning, Mapping) and isinstance(reasoning.get("effort"), str):
        chat["reasoning_effort"] = reasoning["effort"]
    _tools(body, chat)
    _format(body, chat)
    for name in OWN_FIELDS:
        if name in body:
            chat[name] = body[name]
    if body.get("stream"):
        chat["stream"] = True
        chat["stream_options"] = {"include_usage": True}
    return Converted(chat, items, turn)
