"""Validate a chat completion body into a :class:`~ailb.model.ChatRequest`. Pure.

Checks what AILB itself relies on (model, messages, stream, stream_options, max_tokens) and the
common sampling fields whose bad values are cheap to catch here; every other field passes through
untouched so that new OpenAI parameters work without a new release. Errors name the field in
``param`` like OpenAI's own.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from ailb.errors import InvalidRequest
from ailb.model import ChatRequest

ROLES: Final = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
_RANGES: Final[Mapping[str, tuple[float, float]]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON; upstreams (and httpx, re-encoding) refuse them.
    raise ValueError(f"{name} is not valid JSON")


def decode_json(data: bytes) -> dict[str, Any]:
    """Parse a request body that must be a JSON object. Raises InvalidRequest."""
    try:
        body = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly.)") from None
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return body


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _messages(value: Any) -> None:
    if value is None:
        raise InvalidRequest("Missing required parameter: 'messages'.", param="messages")
    if not isinstance(value, list):
        raise InvalidRequest("'messages' must be an array of message objects.", param="messages")
    if not value:
        raise InvalidRequest("'messages' must contain at least one message.", param="messages")
    for index, message in enumerate(value):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise InvalidRequest(f"{where} must be an object.", param=where)
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            raise InvalidRequest(
                f"Invalid value for '{where}.role': {role!r}. Supported values are: "
                f"{', '.join(sorted(ROLES))}.", param=f"{where}.role")
        content = message.get("content")
        if content is not None and not isinstance(content, str | list):
            raise InvalidRequest(f"'{where}.content' must be a string or an array of parts.",
                                 param=f"{where}.content")


def parse_chat(body: Mapping[str, Any], request_id: str) -> ChatRequest:
    """Validate ``body``. Raises InvalidRequest (400) naming the bad field."""
    model = body.get("model")
    if model is None:
        raise InvalidRequest("Missing required parameter: 'model'.", param="model")
    if not isinstance(model, str) or not model.strip():
        raise InvalidRequest("'model' must be a non-empty string.", param="model")
    _messages(body.get("messages"))
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean.", param="stream")
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, dict):
            raise InvalidRequest("'stream_options' must be an object.", param="stream_options")
        if not stream:
            raise InvalidRequest("The 'stream_options' parameter is only allowed when 'stream' "
                                 "is enabled.", param="stream_options")
        usage_flag = options.get("include_usage", False)
        if not isinstance(usage_flag, bool):
            raise InvalidRequest("'stream_options.include_usage' must be a boolean.",
                                 param="stream_options.include_usage")
        include_usage = usage_flag
    max_tokens: int | None = None
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not _is_int(value) or value < 1:
            raise InvalidRequest(f"'{name}' must be an integer of at least 1.", param=name)
        max_tokens = value if max_tokens is None else min(max_tokens, value)
    n = body.get("n")
    if n is not None and (not _is_int(n) or n < 1):
        raise InvalidRequest("'n' must be an integer of at least 1.", param="n")
    for name, (lo, hi) in _RANGES.items():
        value = body.get(name)
        if value is not None and (not _is_number(value) or not lo <= value <= hi):
            raise InvalidRequest(f"'{name}' must be a number from {lo:g} to {hi:g}.", param=name)
    return ChatRequest(body=body, model=model, stream=stream, include_usage=include_usage,
                       max_tokens=max_tokens, request_id=request_id)
