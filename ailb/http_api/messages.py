"""``POST /v1/messages``: the Anthropic Messages door, in front of every routed model. The body
is translated into the pipeline's chat request (keeping the Anthropic body for Anthropic
deployments), and the answer or stream back into Anthropic's shape. POSTs are served by the
fast door (:mod:`ailb.http_api.fast_door`); the Quart view runs the same step when it is not."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from quart import Response, request

from ailb.http_api.anthropic_ingress import to_message, to_openai_chat
from ailb.http_api.anthropic_sse import AnthropicEncoder
from ailb.http_api.chat import chat_call
from ailb.http_api.errors import anthropic_error_response
from ailb.http_api.handling import HandOff, json_bytes, run_request
from ailb.http_api.sse import stream_response
from ailb.keys.auth import HeaderSource, Principal
from ailb.model import Usage
from ailb.pipeline.augment import OWN_FIELDS
from ailb.pipeline.chat import Answer, run_chat
from ailb.pipeline.chat_parse import parse_chat
from ailb.pipeline.frame import Frame
from ailb.pipeline.services import Services
from ailb.routing.router import Hints


async def messages_step(services: Services, frame: Frame, body: dict[str, Any],
                        principal: Principal, hints: Hints,
                        headers: HeaderSource) -> bytes | HandOff:
    """The messages door's own step: the JSON answer's body, or the stream."""
    request_id = frame.exchange.request_id
    # AILB's own fields (session_id, rag...) are not Anthropic's: the pipeline takes them
    own: dict[str, Any] = {name: body[name] for name in OWN_FIELDS if name in body}
    chat = replace(parse_chat({**to_openai_chat(body), **own}, request_id), native=body)
    outcome = await run_chat(services, frame.exchange, principal,
                             chat_call(chat, headers, hints))
    if isinstance(outcome, Answer):
        result = outcome.result
        if result.native is not None:  # an Anthropic deployment answered: relay its message
            return json_bytes(result.native)
        usage = result.usage or Usage.from_openai(result.body.get("usage"))  # cached: as sent
        return json_bytes(to_message(result.body, usage, chat.model, request_id))
    return stream_response(frame, outcome, AnthropicEncoder(f"msg_{request_id}", chat.model))


async def messages(services: Services) -> Response:
    async def step(frame: Frame, body: dict[str, Any], principal: Principal,
                   hints: Hints) -> bytes | HandOff:
        return await messages_step(services, frame, body, principal, hints, request.headers)

    return await run_request(services, step, anthropic_error_response)
