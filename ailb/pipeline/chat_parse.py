"""Validate a chat completion body into a :class:`~ailb.model.ChatRequest`. Pure.

Every field OpenAI's API declares is held to its type and range by the declared shape
(:mod:`ailb.schemas.openai`); fields it does not name pass through untouched so that new OpenAI
parameters work without a new release. Errors name the field in ``param`` like OpenAI's own.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, get_args

from ailb.errors import InvalidRequest
from ailb.model import ChatRequest
from ailb.schemas.check import conform, decode_object
from ailb.schemas.openai import ChatCompletionRequest, Role

ROLES: Final = frozenset(get_args(Role))


def decode_json(data: bytes) -> dict[str, Any]:
    """Parse a request body that must be a JSON object. Raises InvalidRequest."""
    return decode_object(data)


def parse_chat(body: Mapping[str, Any], request_id: str) -> ChatRequest:
    """Validate ``body`` against :class:`ChatCompletionRequest`. Raises InvalidRequest (400)
    naming the bad field."""
    shape = conform(body, ChatCompletionRequest)
    if not shape.model.strip():
        raise InvalidRequest("'model' must be a non-empty string.", param="model")
    stream = bool(shape.stream)
    include_usage = False
    if shape.stream_options is not None:
        if not stream:
            raise InvalidRequest("The 'stream_options' parameter is only allowed when 'stream' "
                                 "is enabled.", param="stream_options")
        include_usage = bool(shape.stream_options.include_usage)
    limits = [v for v in (shape.max_completion_tokens, shape.max_tokens) if v is not None]
    return ChatRequest(body=body, model=shape.model, stream=stream, include_usage=include_usage,
                       max_tokens=min(limits) if limits else None, request_id=request_id)
