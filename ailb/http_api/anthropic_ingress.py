"""Anthropic Messages API requests -> AILB's OpenAI-shaped chat, and answers back. Pure.

This is the ``POST /v1/messages`` side: applications written for the Anthropic SDK send Anthropic
requests, AILB routes them like any chat (to Anthropic, OpenAI or Ollama deployments) and answers
in Anthropic's shape. Mapping, request side:

* ``system`` (string or text blocks) -> a system message; ``max_tokens`` (required, as Anthropic
  requires it) -> ``max_tokens``; ``stop_sequences`` -> ``stop``; ``metadata.user_id`` -> ``user``;
  ``temperature``, ``top_p`` as they are (``top_k`` has no OpenAI equivalent and is dropped).
* user ``tool_result`` blocks -> ``tool`` messages (placed before the rest of that user turn);
  ``image`` blocks -> ``image_url`` parts (base64 as data URLs); assistant ``tool_use`` ->
  ``tool_calls`` with ``arguments`` the JSON of ``input``; ``thinking`` blocks are dropped.
* ``tools`` -> function tools; ``tool_choice`` auto/any/tool/none -> auto/required/named/none;
  ``disable_parallel_tool_use`` -> ``parallel_tool_calls: false``.

Answer side: content text -> a text block, ``tool_calls`` -> ``tool_use`` blocks; finish reasons
stop -> end_turn, length -> max_tokens, tool_calls -> tool_use, content_filter -> refusal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from ailb.errors import GatewayError, InvalidRequest
from ailb.model import Usage, content_text
from ailb.schemas.anthropic import MessagesRequest
from ailb.schemas.check import anthropic_path, conform

STOP_REASONS: Final[Mapping[str, str]] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}
ERROR_TYPES: Final[Mapping[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


def error_object(exc: GatewayError) -> dict[str, Any]:
    """Anthropic's error body for any gateway error."""
    return {"type": "error", "error": {"type": ERROR_TYPES.get(exc.status, "api_error"),
                                       "message": exc.message}}


def _system(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "\n\n".join(str(b.get("text", "")) for b in value
                           if isinstance(b, Mapping) and b.get("type") == "text")
    raise InvalidRequest("system: must be a string or a list of text blocks.", param="system")


def _image(block: Mapping[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif source.get("type") == "url":
        url = str(source.get("url"))
    else:
        raise InvalidRequest(f"{where}.source: unsupported image source.", param=where)
    return {"type": "image_url", "image_url": {"url": url}}


def _blocks(content: Any, where: str) -> list[Mapping[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if isinstance(content, list) and all(isinstance(b, Mapping) for b in content):
        return content
    raise InvalidRequest(f"{where}: must be a string or a list of content blocks.", param=where)


def _user(content: Any, where: str) -> list[dict[str, Any]]:
    tool_messages: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for index, block in enumerate(_blocks(content, where)):
        kind = block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append(_image(block, f"{where}.{index}"))
        elif kind == "tool_result":
            text = content_text(block.get("content"), "\n")
            if block.get("is_error"):
                text = f"Error: {text}"
            tool_messages.append({"role": "tool", "tool_call_id": str(block.get("tool_use_id")),
                                  "content": text})
        else:
            raise InvalidRequest(f"{where}.{index}.type: {kind!r} is not supported.",
                                 param=f"{where}.{index}.type")
    messages = tool_messages
    if parts:
        only_text = all(p["type"] == "text" for p in parts)
        messages.append({"role": "user", "content": "".join(p["text"] for p in parts)
                         if only_text and len(parts) == 1 else parts})
    return messages


def _assistant(content: Any, where: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in _blocks(content, where):
        if block.get("type") == "text":
            texts.append(str(block.get("text", "")))
        elif block.get("type") == "tool_use":
            calls.append({"id": str(block.get("id")), "type": "function", "function": {
                "name": str(block.get("name")),
                "arguments": json.dumps(block.get("input") or {}, separators=(",", ":"),
                                        ensure_ascii=False)}})
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(body: Mapping[str, Any], out: dict[str, Any]) -> None:
    tools = body.get("tools")
    if tools:
        out["tools"] = [{"type": "function", "function": {
            "name": t.get("name"), "description": t.get("description", ""),
            "parameters": t.get("input_schema") or {"type": "object", "properties": {}}}}
            for t in tools if isinstance(t, Mapping)]
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping):
        kind = choice.get("type")
        if kind == "auto":
            out["tool_choice"] = "auto"
        elif kind == "any":
            out["tool_choice"] = "required"
        elif kind == "none":
            out["tool_choice"] = "none"
        elif kind == "tool":
            out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
        if choice.get("disable_parallel_tool_use") and tools:
            out["parallel_tool_calls"] = False


def to_openai_chat(body: Mapping[str, Any]) -> dict[str, Any]:
    """An Anthropic Messages request as an OpenAI chat body. Raises InvalidRequest naming
    the field (Anthropic's way: ``messages.0.content``)."""
    conform(body, MessagesRequest, anthropic_path)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: Field required", param="model")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InvalidRequest("max_tokens: Field required (a positive integer)",
                             param="max_tokens")
    raw_messages = body.get("messages")
    if not isinstance(raw_messages, list) or not raw_messages:
        raise InvalidRequest("messages: at least one message is required", param="messages")
    messages: list[dict[str, Any]] = []
    system = _system(body.get("system"))
    if system:
        messages.append({"role": "system", "content": system})
    for index, message in enumerate(raw_messages):
        where = f"messages.{index}"
        role = message.get("role") if isinstance(message, Mapping) else None
        if role == "user":
            messages += _user(message.get("content"), f"{where}.content")
        elif role == "assistant":
            messages.append(_assistant(message.get("content"), f"{where}.content"))
        else:
            raise InvalidRequest(f"{where}.role: must be 'user' or 'assistant'",
                                 param=f"{where}.role")
    out: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens}
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    for name in ("temperature", "top_p"):
        if body.get(name) is not None:
            out[name] = body[name]
    metadata = body.get("metadata")
    if isinstance(metadata, Mapping) and metadata.get("user_id"):
        out["user"] = str(metadata["user_id"])
    _tools(body, out)
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def tool_input(arguments: Any) -> Any:
    """Tool arguments as the object Anthropic's ``input`` must be."""
    try:
        value = json.loads(arguments or "{}")
    except (TypeError, ValueError):
        return {"arguments": arguments}
    return value if isinstance(value, dict) else {"value": value}


def usage_object(usage: Usage | None) -> dict[str, int]:
    usage = usage or Usage()
    return {"input_tokens": max(0, usage.prompt_tokens - usage.cached_tokens
                                - usage.cache_write_tokens),
            "output_tokens": usage.completion_tokens,
            "cache_read_input_tokens": usage.cached_tokens,
            "cache_creation_input_tokens": usage.cache_write_tokens}


def to_message(completion: Mapping[str, Any], usage: Usage | None, model: str,
               request_id: str) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` as an Anthropic ``message``."""
    choice = (completion.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if reply.get("content"):
        content.append({"type": "text", "text": str(reply["content"])})
    for call in reply.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id"), "name": function.get("name"),
                        "input": tool_input(function.get("arguments"))})
    return {
        "id": f"msg_{request_id}",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": STOP_REASONS.get(str(choice.get("finish_reason")), "end_turn"),
        "stop_sequence": None,
        "usage": usage_object(usage),
    }
