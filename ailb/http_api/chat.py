"""``POST /v1/chat/completions``: the OpenAI chat door. It parses the body and the headers into
a :class:`~ailb.pipeline.chat.ChatCall`, runs the chat pipeline, and writes the answer as JSON
or the stream as OpenAI's SSE. POSTs are served by the fast door (:mod:`ailb.http_api.fast_door`);
the Quart view runs the same step when it is not (an application mounted under a root path)."""

from __future__ import annotations

from typing import Any

from quart import Response, request

from ailb.http_api.handling import HandOff, json_bytes, run_request
from ailb.http_api.sse import OpenAIEncoder, stream_response
from ailb.keys.auth import HeaderSource, Principal
from ailb.model import ChatRequest
from ailb.pipeline.chat import Answer, ChatCall, run_chat
from ailb.pipeline.chat_parse import parse_chat
from ailb.pipeline.frame import Frame
from ailb.pipeline.services import Services
from ailb.rag.options import HEADER as RAG_HEADER
from ailb.routing.router import Hints


def chat_call(chat: ChatRequest, headers: HeaderSource, hints: Hints) -> ChatCall:
    """The pipeline's request for an HTTP door: ``X-Session-ID``, ``x-ailb-rag-collection``."""
    return ChatCall(chat, hints, headers.get("x-session-id") or None, headers.get(RAG_HEADER))


async def chat_step(services: Services, frame: Frame, body: dict[str, Any],
                    principal: Principal, hints: Hints, headers: HeaderSource) -> bytes | HandOff:
    """The chat door's own step: the JSON answer's body, or the stream."""
    chat = parse_chat(body, frame.exchange.request_id)
    outcome = await run_chat(services, frame.exchange, principal,
                             chat_call(chat, headers, hints))
    if isinstance(outcome, Answer):
        result = outcome.result
        return json_bytes(result.raw or result.body)
    return stream_response(frame, outcome, OpenAIEncoder(chat.include_usage))


async def chat_completions(services: Services) -> Response:
    async def step(frame: Frame, body: dict[str, Any], principal: Principal,
                   hints: Hints) -> bytes | HandOff:
        return await chat_step(services, frame, body, principal, hints, request.headers)

    return await run_request(services, step)
