"""OpenAI chat requests to Ollama's native ``/api/chat`` and its answers back. Pure.

* Message text parts are joined; ``image_url`` data URLs become ``images`` (base64). Ollama
  cannot fetch http(s) images, so those are refused with 400.
* Assistant ``tool_calls`` carry their arguments as objects; ``tool`` messages keep their role.
* ``options``: temperature, top_p, seed, stop, presence/frequency penalty, and ``num_predict``
  from ``max_tokens``. ``response_format`` json_object -> ``format: "json"``, json_schema -> the
  schema (``"json"`` when it has none), text -> nothing; another type is refused with 400.
  ``tools`` are sent as they are (Ollama takes OpenAI's function format).
* Answers: ``done_reason`` stop -> stop, length -> length, and tool_calls when tools were called;
  usage from ``prompt_eval_count`` and ``eval_count``. Ollama gives tool calls no id, so AILB
  makes ``call_<request id>_<n>``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from ailb.errors import InvalidRequest
from ailb.model import ChatRequest, Usage

_DATA_URL: Final = re.compile(r"^data:[\w.+-]+/[\w.+-]+;base64,(?P<data>.*)$", re.S)
_OPTIONS: Final = {"temperature": "temperature", "top_p": "top_p", "seed": "seed",
                   "presence_penalty": "presence_penalty",
                   "frequency_penalty": "frequency_penalty"}


def _content(content: Any, where: str) -> tuple[str, list[str]]:
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: list[str] = []
    images: list[str] = []
    for index, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            texts.append(str(part.get("text", "")))
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            match = _DATA_URL.match(url) if isinstance(url, str) else None
            if not match:
                raise InvalidRequest("Ollama models take images only as base64 data: URLs.",
                                     param=f"{where}[{index}].image_url.url")
            images.append(match["data"])
        else:
            raise InvalidRequest(f"Content part type {kind!r} is not supported for this model.",
                                 param=f"{where}[{index}].type")
    return "\n".join(texts), images


def _message(message: Mapping[str, Any], where: str) -> dict[str, Any]:
    text, images = _content(message.get("content"), f"{where}.content")
    role = message.get("role")
    out: dict[str, Any] = {"role": "system" if role == "developer" else role, "content": text}
    if images:
        out["images"] = images
    calls = []
    for index, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping):
            raise InvalidRequest("tool call without function", param=f"{where}.tool_calls")
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments or "{}")
            except ValueError:
                raise InvalidRequest(
                    f"'{where}.tool_calls[{index}].function.arguments' must be JSON.",
                    param=f"{where}.tool_calls[{index}].function.arguments") from None
        calls.append({"function": {"name": function.get("name"), "arguments": arguments}})
    if calls:
        out["tool_calls"] = calls
    if role == "tool" and message.get("name"):
        out["tool_name"] = message["name"]
    return out


def to_ollama(request: ChatRequest, model: str) -> dict[str, Any]:
    """The ``/api/chat`` body for ``request`` on upstream ``model``. Raises InvalidRequest."""
    body = request.body
    if (body.get("n") or 1) > 1:
        raise InvalidRequest("Ollama models return one choice: 'n' must be 1.", param="n")
    messages = [_message(m, f"messages[{i}]") for i, m in enumerate(body.get("messages") or [])]
    out: dict[str, Any] = {"model": model, "messages": messages, "stream": request.stream}
    options = {target: body[source] for source, target in _OPTIONS.items()
               if body.get(source) is not None}
    if body.get("stop"):
        options["stop"] = [body["stop"]] if isinstance(body["stop"], str) else list(body["stop"])
    if request.max_tokens is not None:
        options["num_predict"] = request.max_tokens
    if options:
        out["options"] = options
    if body.get("tools"):
        out["tools"] = body["tools"]
    fmt = _format(body.get("response_format"))
    if fmt is not None:
        out["format"] = fmt
    return out


def _format(fmt: Any) -> str | Mapping[str, Any] | None:
    """``response_format`` as Ollama's ``format``: "json", a JSON schema, or None for text.
    Any other type has no Ollama counterpart and is refused rather than dropped."""
    kind = fmt.get("type") if isinstance(fmt, Mapping) else None
    if fmt is None or kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, Mapping):
            raise InvalidRequest("'response_format.json_schema' is required.",
                                 param="response_format.json_schema")
        schema = spec.get("schema")
        return schema if isinstance(schema, Mapping) and schema else "json"
    raise InvalidRequest(f"'response_format' type {kind!r} is not supported for Ollama models "
                         "(use text, json_object or json_schema).", param="response_format.type")


def usage_of(line: Mapping[str, Any]) -> Usage:
    def count(key: str) -> int:
        value = line.get(key)
        return value if isinstance(value, int) and value >= 0 else 0

    return Usage(prompt_tokens=count("prompt_eval_count"), completion_tokens=count("eval_count"))


def tool_calls(message: Mapping[str, Any], call_prefix: str, start: int = 0) -> list[Any]:
    """Ollama's tool calls as OpenAI's (arguments as a JSON string, ids made up)."""
    calls = []
    for offset, call in enumerate(message.get("tool_calls") or []):
        function = call.get("function") or {}
        arguments = function.get("arguments")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments if arguments is not None else {},
                                   separators=(",", ":"), ensure_ascii=False)
        calls.append({"id": f"{call_prefix}_{start + offset}", "type": "function",
                      "function": {"name": function.get("name"), "arguments": arguments}})
    return calls


def finish_reason(done_reason: Any, called_tools: bool) -> str:
    if called_tools:
        return "tool_calls"
    return "length" if done_reason == "length" else "stop"


def from_ollama(answer: Mapping[str, Any], request_id: str, model: str,
                created: int) -> dict[str, Any]:
    """A non-streamed ``/api/chat`` answer as an OpenAI ``chat.completion``."""
    message = answer.get("message") or {}
    calls = tool_calls(message, f"call_{request_id}")
    reply: dict[str, Any] = {"role": "assistant", "content": message.get("content") or None,
                             "refusal": None}
    if calls:
        reply["tool_calls"] = calls
    elif reply["content"] is None:
        reply["content"] = ""
    return {
        "id": f"chatcmpl-{request_id}",
        "object": "chat.completion",
        "created": created,
        "model": answer.get("model") or model,
        "choices": [{"index": 0, "message": reply, "logprobs": None,
                     "finish_reason": finish_reason(answer.get("done_reason"), bool(calls))}],
        "usage": usage_of(answer).to_openai(),
    }
