"""OpenAI's request shapes: chat completions, embeddings and (legacy) completions.

Each field's type and range is what OpenAI's API accepts; fields not named here pass through
to OpenAI-compatible upstreams as sent."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from ailb.schemas.common import (
    INT32_MAX,
    Int64,
    JsonObject,
    NonEmpty,
    OwnFields,
    Shape,
    Tokens,
    Unit,
)

Role = Literal["system", "developer", "user", "assistant", "tool", "function"]
Temperature = Annotated[float, msgspec.Meta(ge=0, le=2)]
Penalty = Annotated[float, msgspec.Meta(ge=-2, le=2)]


class ImageURL(Shape):
    url: str
    detail: str | None = None


class ContentPart(Shape):
    """One part of a message's content (``text``, ``image_url``, ``input_audio``, ``file``,
    ``refusal``...)."""

    type: NonEmpty
    text: str | None = None
    image_url: ImageURL | str | None = None
    input_audio: JsonObject | None = None
    file: JsonObject | None = None
    refusal: str | None = None
    # a prompt-cache breakpoint ({"type": "ephemeral", "ttl"?: "5m"|"1h"}): Anthropic's, carried
    # to Anthropic deployments, passed on to OpenAI-compatible ones
    cache_control: JsonObject | None = None


class FunctionCall(Shape):
    name: str
    arguments: str | JsonObject  # OpenAI sends a JSON string; some clients an object


class ToolCall(Shape):
    id: str | None = None
    type: str | None = None
    function: FunctionCall | None = None


class Message(Shape):
    role: Role
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    function_call: FunctionCall | None = None
    refusal: str | None = None
    cache_control: JsonObject | None = None  # on the message's last block (see ContentPart)


class FunctionDefinition(Shape):
    name: NonEmpty
    description: str | None = None
    parameters: JsonObject | None = None
    strict: bool | None = None


class Tool(Shape):
    type: NonEmpty
    function: FunctionDefinition | None = None
    cache_control: JsonObject | None = None  # a prompt-cache breakpoint after this tool


class NamedFunction(Shape):
    name: str


class ToolChoice(Shape):
    type: NonEmpty
    function: NamedFunction | None = None


class JsonSchemaFormat(Shape):
    name: NonEmpty
    description: str | None = None
    schema_: JsonObject | None = msgspec.field(default=None, name="schema")
    strict: bool | None = None


class ResponseFormat(Shape):
    """``text``, ``json_object``, ``json_schema``, or a server's own (vLLM's
    ``structural_tag``...)."""

    type: NonEmpty
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(Shape):
    include_usage: bool | None = None


class ChatCompletionRequest(OwnFields, kw_only=True):
    """``POST /v1/chat/completions``. AILB's own fields (``session_id``, ``rag``,
    ``rag_collection``, ``rag_top_k``) are taken out before the upstream sees the body."""

    model: NonEmpty
    messages: Annotated[list[Message], msgspec.Meta(min_length=1)]
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    max_tokens: Tokens | None = None
    max_completion_tokens: Tokens | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=128)] | None = None
    temperature: Temperature | None = None
    top_p: Unit | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    stop: str | list[str] | None = None
    seed: Int64 | None = None
    user: str | None = None
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[FunctionDefinition] | None = None
    function_call: str | NamedFunction | None = None
    response_format: ResponseFormat | None = None
    logit_bias: dict[str, Annotated[float, msgspec.Meta(ge=-100, le=100)]] | None = None
    logprobs: bool | None = None
    top_logprobs: Annotated[int, msgspec.Meta(ge=0, le=20)] | None = None
    metadata: JsonObject | None = None
    store: bool | None = None
    reasoning_effort: str | None = None
    service_tier: str | None = None
    modalities: list[str] | None = None


EmbeddingInput = NonEmpty | Annotated[list[NonEmpty], msgspec.Meta(min_length=1)]


class EmbeddingRequest(Shape):
    """``POST /v1/embeddings``: ``input`` is a string or a non-empty array of strings (token
    arrays are not supported by every provider)."""

    model: NonEmpty
    input: EmbeddingInput
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Annotated[int, msgspec.Meta(ge=1, le=INT32_MAX)] | None = None
    user: str | None = None


class CompletionRequest(OwnFields, kw_only=True):
    """``POST /v1/completions`` (legacy text completions), answered through chat: ``prompt``
    is a string (or a list of one string); ``suffix``, ``logprobs`` and a ``best_of`` other
    than ``n`` have no chat equivalent and are refused."""

    model: NonEmpty
    prompt: str | Annotated[list[str | int | list[int]], msgspec.Meta(min_length=1)]
    suffix: str | None = None
    max_tokens: Tokens | None = None
    temperature: Temperature | None = None
    top_p: Unit | None = None
    n: Annotated[int, msgspec.Meta(ge=1, le=128)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    logprobs: Annotated[int, msgspec.Meta(ge=0, le=5)] | None = None
    echo: bool | None = None
    stop: str | Annotated[list[str], msgspec.Meta(max_length=4)] | None = None
    presence_penalty: Penalty | None = None
    frequency_penalty: Penalty | None = None
    best_of: Annotated[int, msgspec.Meta(ge=1, le=20)] | None = None
    logit_bias: dict[str, Annotated[float, msgspec.Meta(ge=-100, le=100)]] | None = None
    seed: Int64 | None = None
    user: str | None = None
