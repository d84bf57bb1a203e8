"""The OpenAI Responses API's request shape (``POST /v1/responses``) and its answer shapes, for
the document. AILB answers the Responses API on every provider by translating to chat
(:mod:`ailb.responses.convert`), so the shape names what that translation understands: message,
``function_call`` and ``function_call_output`` items, function tools, ``text.format``."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from ailb.schemas.common import (
    JsonObject,
    NonEmpty,
    OwnFields,
    Shape,
    Tokens,
    Unit,
)
from ailb.schemas.openai import Temperature

ResponseId = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class InputPart(Shape):
    """A part of an input message: ``input_text`` (or ``output_text`` in an assistant turn
    sent back), ``input_image``."""

    type: NonEmpty
    text: str | None = None
    image_url: str | None = None
    detail: str | None = None


class InputItem(Shape):
    """A message (``type`` ``message`` or absent, with a ``role``), a ``function_call`` the
    model made, or a ``function_call_output`` the caller sends back."""

    type: NonEmpty | None = None
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[InputPart] | None = None
    id: str | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[InputPart] | None = None
    status: str | None = None


class FunctionTool(Shape):
    """A tool in the Responses API's flat shape: ``{"type": "function", "name", ...}``."""

    type: NonEmpty
    name: str | None = None
    description: str | None = None
    parameters: JsonObject | None = None
    strict: bool | None = None


class NamedTool(Shape):
    type: NonEmpty
    name: str | None = None


class TextFormat(Shape):
    """``text`` (the default), ``json_object``, or ``json_schema`` with its ``name`` and
    ``schema``."""

    type: NonEmpty
    name: str | None = None
    description: str | None = None
    schema_: JsonObject | None = msgspec.field(default=None, name="schema")
    strict: bool | None = None


class TextConfig(Shape):
    format: TextFormat | None = None
    verbosity: str | None = None


class Reasoning(Shape):
    effort: str | None = None
    summary: str | None = None


class ResponsesRequest(OwnFields, kw_only=True):
    """``POST /v1/responses``. AILB's own fields (``session_id``, ``rag``...) work as in chat."""

    model: NonEmpty
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    previous_response_id: ResponseId | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | NamedTool | None = None
    parallel_tool_calls: bool | None = None
    store: bool | None = None
    stream: bool | None = None
    max_output_tokens: Tokens | None = None
    temperature: Temperature | None = None
    top_p: Unit | None = None
    text: TextConfig | None = None
    reasoning: Reasoning | None = None  # effort -> chat's reasoning_effort
    background: bool | None = None  # true is refused: nothing is queued to poll
    include: list[str] | None = None  # extra output AILB does not make: no effect
    truncation: str | None = None  # no effect
    prompt: JsonObject | None = None  # refused: no prompt templates here
    conversation: str | JsonObject | None = None  # refused: use previous_response_id
    metadata: dict[str, str] | None = None
    user: str | None = None


class ResponseObject(Shape):
    """A response (``object: "response"``): its ``output`` items and ``usage``."""

    id: str
    object: Literal["response"]
    created_at: float
    model: str
    status: str
    output: list[JsonObject]
    usage: JsonObject | None = None


class ResponseDeleted(Shape):
    id: str
    object: Literal["response"]
    deleted: bool


class InputItemList(Shape):
    object: Literal["list"]
    data: list[JsonObject]
    has_more: bool
    first_id: str | None = None
    last_id: str | None = None

