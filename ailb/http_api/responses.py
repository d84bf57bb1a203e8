"""``/v1/responses``: the OpenAI Responses API, in front of every routed model.

``POST`` translates the request (and the stored conversation of its ``previous_response_id``)
into a chat request (:mod:`ailb.responses.convert`), runs the chat pipeline, and answers a
``response`` object or the Responses event stream (:mod:`ailb.responses.events`). With
``store`` (the default) the response is written to the store before the answer's last byte is
sent. ``GET``, ``DELETE`` and ``GET .../input_items`` read a stored response; one made by
another key is "not found" (the admin key reads all)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from quart import Response, request

from ailb.errors import InternalError, InvalidRequest, NotFound
from ailb.http_api.chat import chat_call
from ailb.http_api.handling import HandOff, json_response, run_request
from ailb.http_api.sse import stream_response
from ailb.keys.auth import Principal
from ailb.model import Usage
from ailb.pipeline.chat import Answer, run_chat
from ailb.pipeline.chat_parse import parse_chat
from ailb.pipeline.frame import Frame
from ailb.pipeline.services import Services
from ailb.responses.convert import Converted, new_id, to_chat, validate
from ailb.responses.events import ResponsesEncoder
from ailb.responses.output import (
    Draft,
    assistant_message,
    finish_reason,
    output_items,
    response_object,
)
from ailb.responses.state import ResponseStore, StoredResponse
from ailb.routing.router import Hints

View = Callable[..., Awaitable[Response]]


def _store(services: Services) -> ResponseStore:
    if services.stored_responses is None:  # the supervisor always sets it
        raise InternalError()
    return services.stored_responses


async def _owned(store: ResponseStore, response_id: str, principal: Principal,
                 param: str | None = None) -> StoredResponse:
    """The stored response, if the caller may see it. Raises NotFound, StoreUnavailable."""
    stored = await store.get_response(response_id)
    if stored is None or not (principal.is_admin or stored.key_id == principal.key_id):
        raise NotFound(f"Response with id '{response_id}' not found.", param=param,
                       code="response_not_found")
    return stored


def _record(draft: Draft, principal: Principal, converted: Converted,
            history: list[dict[str, Any]], response: dict[str, Any]) -> StoredResponse:
    reply = assistant_message(response["output"])
    messages = [*history, *converted.turn, *([reply] if reply else [])]
    return StoredResponse(draft.id, principal.key_id, draft.created_at, response,
                          converted.input_items, messages)


async def create(services: Services) -> Response:
    async def step(frame: Frame, body: dict[str, Any], principal: Principal,
                   hints: Hints) -> Response | HandOff:
        validate(body)
        store = _store(services)
        history: list[dict[str, Any]] = []
        previous = body.get("previous_response_id")
        if previous:
            found = await _owned(store, previous, principal, "previous_response_id")
            history = found.messages
        converted = to_chat(body, history)
        chat = parse_chat(converted.chat, frame.exchange.request_id)
        outcome = await run_chat(services, frame.exchange, principal,
                                 chat_call(chat, request.headers, hints))
        draft = Draft(new_id("resp"), int(time.time()), chat.model, body)
        keep = body.get("store", True) is not False
        if isinstance(outcome, Answer):
            result = outcome.result
            usage = result.usage or Usage.from_openai(result.body.get("usage"))
            answer = response_object(draft, output_items(result.body, draft.id), usage,
                                     "completed", finish_reason(result.body))
            if keep:  # written before the answer leaves
                await store.put_response(_record(draft, principal, converted, history, answer))
            return json_response(answer)
        encoder = ResponsesEncoder(draft)

        async def save() -> None:
            await store.put_response(_record(draft, principal, converted, history,
                                             encoder.final()))

        return stream_response(frame, outcome, encoder, save if keep else None)

    return await run_request(services, step)


def _page(items: list[dict[str, Any]], args: Mapping[str, str]) -> dict[str, Any]:
    """A cursor page of input items (``order`` desc by default, ``after``, ``limit``)."""
    order = args.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("Invalid value for 'order': 'asc' or 'desc'.", param="order")
    try:
        limit = int(args.get("limit", "20"))
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise InvalidRequest("Invalid value for 'limit': an integer from 1 to 100.",
                             param="limit")
    ordered = items if order == "asc" else items[::-1]
    after = args.get("after")
    if after:
        ids = [item.get("id") for item in ordered]
        ordered = ordered[ids.index(after) + 1:] if after in ids else []
    data = ordered[:limit]
    return {"object": "list", "data": data,
            "first_id": data[0].get("id") if data else None,
            "last_id": data[-1].get("id") if data else None,
            "has_more": len(ordered) > limit}


def routes(services: Services) -> list[tuple[str, str, View, list[str]]]:
    """(rule, endpoint, view, methods) for the app factory."""

    async def framed(work: Callable[[ResponseStore, Principal], Awaitable[Any]]) -> Response:
        async def step(frame: Frame, body: dict[str, Any], principal: Principal,
                       hints: Hints) -> Response:
            return json_response(await work(_store(services), principal))
        return await run_request(services, step)

    async def retrieve(response_id: str) -> Response:
        async def work(store: ResponseStore, principal: Principal) -> Any:
            return (await _owned(store, response_id, principal)).response
        return await framed(work)

    async def delete(response_id: str) -> Response:
        async def work(store: ResponseStore, principal: Principal) -> Any:
            await _owned(store, response_id, principal)
            await store.delete_response(response_id)
            return {"id": response_id, "object": "response", "deleted": True}
        return await framed(work)

    async def input_items(response_id: str) -> Response:
        async def work(store: ResponseStore, principal: Principal) -> Any:
            stored = await _owned(store, response_id, principal)
            return _page(stored.input_items, request.args)
        return await framed(work)

    async def post() -> Response:
        return await create(services)

    return [
        ("/v1/responses", "responses_create", post, ["POST"]),
        ("/v1/responses/<response_id>", "responses_retrieve", retrieve, ["GET"]),
        ("/v1/responses/<response_id>", "responses_delete", delete, ["DELETE"]),
        ("/v1/responses/<response_id>/input_items", "responses_input_items", input_items,
         ["GET"]),
    ]

