"""``POST /v1/messages/count_tokens``: the Anthropic SDK's ``messages.count_tokens``. Answers
``{"input_tokens": N}``; the header ``x-ailb-token-count`` says whose number it is:
``upstream`` (an Anthropic deployment counted it) or ``estimate`` (AILB's own prompt
estimate, for models served elsewhere). Errors in Anthropic's shape."""

from __future__ import annotations

from typing import Any

from quart import Response

from ailb.http_api.anthropic_ingress import to_openai_chat
from ailb.http_api.errors import anthropic_error_response
from ailb.http_api.handling import HandOff, json_response, run_request
from ailb.keys.auth import Principal
from ailb.pipeline.count import run_count_tokens
from ailb.pipeline.frame import Frame
from ailb.pipeline.services import Services
from ailb.routing.router import Hints
from ailb.schemas.anthropic import CountTokensRequest
from ailb.schemas.check import anthropic_path, conform

HEADER = "x-ailb-token-count"


async def count_tokens(services: Services) -> Response:
    async def step(frame: Frame, body: dict[str, Any], principal: Principal,
                   hints: Hints) -> Response | HandOff:
        conform(body, CountTokensRequest, anthropic_path)
        # the same translation as /v1/messages (for the estimate); max_tokens is not asked
        chat_body = to_openai_chat({**body, "max_tokens": 1, "stream": False})
        count = await run_count_tokens(services, frame.exchange, principal, body, chat_body,
                                       hints)
        response = json_response({"input_tokens": count.input_tokens})
        response.headers[HEADER] = "estimate" if count.estimated else "upstream"
        return response

    return await run_request(services, step, anthropic_error_response)
