"""Answer shapes, for the OpenAPI document only (answers are built as plain dicts)."""

from __future__ import annotations

from typing import Any

from ailb.schemas.common import JsonObject, Shape


class Usage(Shape):
    prompt_tokens: int
    completion_tokens: int = 0
    total_tokens: int = 0


class Choice(Shape):
    index: int
    message: JsonObject
    finish_reason: str | None = None


class ChatCompletion(Shape):
    """A chat answer; with ``stream: true``, ``text/event-stream`` of ``chat.completion.chunk``
    events ending with ``data: [DONE]``."""

    id: str
    object: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None = None


class AnthropicMessageAnswer(Shape):
    """A Messages answer; with ``stream: true``, Anthropic's SSE event sequence."""

    id: str
    type: str
    role: str
    model: str
    content: list[JsonObject]
    stop_reason: str | None
    usage: JsonObject


class AnthropicErrorDetail(Shape):
    type: str
    message: str


class AnthropicError(Shape):
    """Every error of ``/v1/messages``, in Anthropic's shape."""

    type: str
    error: AnthropicErrorDetail


class Embedding(Shape):
    object: str
    index: int
    embedding: list[float] | str


class EmbeddingList(Shape):
    object: str
    data: list[Embedding]
    model: str
    usage: Usage


class Model(Shape):
    id: str
    object: str
    created: int
    owned_by: str


class ModelList(Shape):
    object: str
    data: list[Model]


class Health(Shape):
    status: str
    version: str
    providers: dict[str, Any]


class Ready(Shape):
    ready: bool
