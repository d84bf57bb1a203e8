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


class TokenCount(Shape):
    """``/v1/messages/count_tokens``: header ``x-ailb-token-count`` is ``upstream`` (counted by
    an Anthropic deployment) or ``estimate`` (AILB's own estimate)."""

    input_tokens: int


class TextChoice(Shape):
    text: str
    index: int
    logprobs: JsonObject | None = None
    finish_reason: str | None = None


class TextCompletion(Shape):
    """A legacy completion; with ``stream: true``, ``text/event-stream`` of
    ``text_completion`` chunks ending with ``data: [DONE]``."""

    id: str
    object: str
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage | None = None


class Embedding(Shape):
    object: str
    index: int
    embedding: list[float] | str


class EmbeddingList(Shape):
    object: str
    data: list[Embedding]
    model: str
    usage: Usage


class ModelInfo(Shape):
    """OpenAI's model (``object``, ``created``, ``owned_by``), or with the
    ``anthropic-version`` header Anthropic's (``type``, ``display_name``, ``created_at``)."""

    id: str
    object: str | None = None
    created: int | None = None
    owned_by: str | None = None
    type: str | None = None
    display_name: str | None = None
    created_at: str | None = None


class ModelList(Shape):
    """OpenAI's list; with the ``anthropic-version`` header, Anthropic's page (``data`` of
    ``{type, id, display_name, created_at}``, ``has_more``, ``first_id``, ``last_id``)."""

    data: list[ModelInfo]
    object: str | None = None
    has_more: bool | None = None
    first_id: str | None = None
    last_id: str | None = None


class Health(Shape):
    status: str
    version: str
    providers: dict[str, Any]


class Ready(Shape):
    ready: bool
