"""Anthropic's request shapes: ``POST /v1/messages`` and ``/v1/messages/count_tokens``.

Content blocks are one shape with optional fields (``text``, ``image``, ``tool_use``,
``tool_result``, ``document``, ``thinking``...): the translation decides what each type means;
the shape makes sure every field has the type Anthropic's API gives it."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from ailb.schemas.common import (
    INT32_MAX,
    JsonObject,
    NonEmpty,
    OwnFields,
    Shape,
    Tokens,
    Unit,
)


class CacheControl(Shape):
    type: NonEmpty
    ttl: str | None = None


class Source(Shape):
    type: NonEmpty
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class Block(Shape):
    type: NonEmpty
    text: str | None = None
    source: Source | str | None = None  # a search_result's source is a string
    id: str | None = None
    name: str | None = None
    input: JsonObject | None = None
    tool_use_id: str | None = None
    content: str | list[Block] | JsonObject | None = None  # a server tool's error object
    is_error: bool | None = None
    thinking: str | None = None
    signature: str | None = None
    cache_control: CacheControl | None = None


class AnthropicMessage(Shape):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class AnthropicTool(Shape):
    name: NonEmpty
    description: str | None = None
    input_schema: JsonObject | None = None
    type: str | None = None
    cache_control: CacheControl | None = None


class AnthropicToolChoice(Shape):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class AnthropicMetadata(Shape):
    user_id: str | None = None


class MessagesRequest(OwnFields, kw_only=True):
    """``POST /v1/messages``. AILB's own fields (``session_id``, ``rag``...) as in chat."""

    model: NonEmpty
    max_tokens: Tokens
    messages: Annotated[list[AnthropicMessage], msgspec.Meta(min_length=1)]
    system: str | list[Block] | None = None
    stop_sequences: list[str] | None = None
    stream: bool | None = None
    temperature: Unit | None = None
    top_p: Unit | None = None
    top_k: Annotated[int, msgspec.Meta(ge=0, le=INT32_MAX)] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None
    metadata: AnthropicMetadata | None = None
    thinking: JsonObject | None = None
    service_tier: str | None = None


class CountTokensRequest(Shape):
    """``POST /v1/messages/count_tokens``: a Messages request without ``max_tokens``."""

    model: NonEmpty
    messages: Annotated[list[AnthropicMessage], msgspec.Meta(min_length=1)]
    system: str | list[Block] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None
    thinking: JsonObject | None = None
