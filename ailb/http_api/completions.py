"""``POST /v1/completions``: OpenAI's legacy text completions, a door into the chat pipeline
(limits, budgets, metrics, cache and memory as for chat). The translation is
:mod:`ailb.http_api.completions_wire`."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from quart import Response, request

from ailb.http_api.chat import chat_call
from ailb.http_api.completions_wire import TextCompletionEncoder, to_chat, to_text_completion
from ailb.http_api.handling import HandOff, json_response, run_request
from ailb.http_api.sse import stream_response
from ailb.keys.auth import Principal
from ailb.pipeline.chat import Answer, run_chat
from ailb.pipeline.chat_parse import parse_chat
from ailb.pipeline.frame import Frame
from ailb.pipeline.services import Services
from ailb.routing.router import Hints


async def completions(services: Services) -> Response:
    async def step(frame: Frame, body: dict[str, Any], principal: Principal,
                   hints: Hints) -> Response | HandOff:
        request_id = frame.exchange.request_id
        translated = to_chat(body)
        chat = parse_chat(translated.chat_body, request_id)
        outcome = await run_chat(services, frame.exchange, principal,
                                 replace(chat_call(chat, request.headers, hints),
                                         operation="text_completion"))
        if isinstance(outcome, Answer):
            return json_response(to_text_completion(outcome.result.body, translated.echo,
                                                    request_id, chat.model))
        return stream_response(frame, outcome, TextCompletionEncoder(
            request_id, chat.model, chat.include_usage, translated.echo))

    return await run_request(services, step)
