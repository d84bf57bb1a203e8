"""A fake OpenAI upstream: a raw ASGI app served by Hypercorn (Trio) on loopback.

Usage in a pytest-trio test::

    app = FakeOpenAI()
    base_url = await start_fake(nursery, app)      # "http://127.0.0.1:PORT/v1"
    app.chunk_delay_s = 0.05                       # knobs are plain attributes
    ...
    assert app.requests[-1].body["model"] == "gpt-4o-mini"

Knobs are read when a request arrives, so tests may change them between requests.
``latency_s``, ``hang`` and ``status`` apply to the inference endpoints (chat completions and
embeddings); ``/v1/models`` only obeys ``models`` and ``models_status``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import hypercorn.trio
import trio
from hypercorn.config import Config

from . import openai_wire as wire
from .asgi_common import Observed

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_MODELS = ["gpt-4o-mini", "gpt-4o", "text-embedding-3-small"]
DEFAULT_REPLY = "Hello from the fake upstream."
_SERVER_LOG = logging.getLogger("tests.fakes.hypercorn")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it (``body`` is the parsed JSON, or None)."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any


class _Response:
    """Wraps ASGI ``send``; remembers whether the response has been fully sent."""

    def __init__(self, send: Send, request_id: str) -> None:
        self._send = send
        self.request_id = request_id
        self.finished = False

    async def start(self, status: int, headers: dict[str, str]) -> None:
        all_headers = {**headers, "x-request-id": self.request_id}
        raw = [(k.encode(), v.encode()) for k, v in all_headers.items()]
        await self._send({"type": "http.response.start", "status": status, "headers": raw})

    async def body(self, data: bytes, *, more: bool) -> None:
        self.finished = not more  # set before sending: hypercorn reports a disconnect on close
        await self._send({"type": "http.response.body", "body": data, "more_body": more})

    async def json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        data = wire.dumps(obj, pretty=True)
        extra = {"content-type": "application/json", "content-length": str(len(data))}
        await self.start(status, {**extra, **(headers or {})})
        await self.body(data, more=False)


class FakeOpenAI(Observed):
    """ASGI app imitating api.openai.com. See the module docstring for the knobs."""

    def __init__(
        self,
        *,
        models: list[str] | None = None,
        reply: str = DEFAULT_REPLY,
        api_key: str | None = None,
    ) -> None:
        super().__init__()  # requests, disconnects, in_flight, shutdown, waiting helpers
        # --- knobs ---------------------------------------------------------------------
        self.api_key = api_key  # require "Authorization: Bearer <api_key>" when set
        self.models: list[str] = list(DEFAULT_MODELS if models is None else models)
        self.models_status: int | None = None  # answer GET /v1/models with this error status
        self.reply = reply  # assistant text
        self.chunks: int | None = None  # content chunks when streaming (None: one per word)
        self.latency_s = 0.0  # sleep before the response headers
        self.first_token_delay_s = 0.0  # streaming: after headers, before the first chunk
        self.chunk_delay_s = 0.0  # streaming: between chunks
        self.status: int | None = None  # answer inference requests with this error status
        self.error_message: str | None = None  # message for `status` errors
        self.retry_after: float | str | None = None  # retry-after on status/models_status errors
        self.cut_after_chunks: int | None = None  # streaming: drop the connection after N chunks
        self.hang = False  # accept the request and never answer
        self.tool_call: dict[str, Any] | None = None  # {"name": ..., "arguments": str | dict}
        self.embedding_dimensions = 8  # when the request has no "dimensions"
        # --- observations --------------------------------------------------------------

    async def _handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        received = await self._read_request(scope, receive)
        if received is None:
            return
        parsed, headers = received
        request = RecordedRequest(scope["method"], scope["path"], headers, parsed)
        self.requests.append(request)
        self._notify()
        response = _Response(send, f"req_fake{next(self._ids):06d}")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._watch_disconnect, receive, response, nursery.cancel_scope)
            await self._dispatch(request, response)
            nursery.cancel_scope.cancel()

    async def _watch_disconnect(
        self, receive: Receive, response: _Response, scope: trio.CancelScope
    ) -> None:
        """Count a client disconnect that arrives before the response is complete; stop work."""
        while (await receive())["type"] != "http.disconnect":
            pass
        if not response.finished:
            self._note_disconnect()
            scope.cancel()

    async def _error(self, response: _Response, status: int, message: str | None = None) -> None:
        headers = {} if self.retry_after is None else {"retry-after": str(self.retry_after)}
        await response.json(status, wire.error_for_status(status, message), headers)

    async def _dispatch(self, request: RecordedRequest, response: _Response) -> None:
        if self.api_key is not None:
            if request.headers.get("authorization") != f"Bearer {self.api_key}":
                body = wire.error_body(
                    "Incorrect API key provided.", "invalid_request_error", code="invalid_api_key"
                )
                await response.json(401, body)
                return
        route = (request.method, request.path)
        if route == ("GET", "/v1/models"):
            if self.models_status is not None:
                await self._error(response, self.models_status, self.error_message)
            else:
                await response.json(200, wire.model_list(self.models))
            return
        if route not in {("POST", "/v1/chat/completions"), ("POST", "/v1/embeddings")}:
            message = f"Invalid URL ({request.method} {request.path})"
            await response.json(404, wire.error_body(message, "invalid_request_error"))
            return
        if self.hang:
            await trio.sleep_forever()
        await trio.sleep(self.latency_s)
        body = request.body if isinstance(request.body, dict) else {}
        if self.status is not None:
            await self._error(response, self.status, self.error_message)
        elif "model" not in body:
            message = "you must provide a model parameter"
            await response.json(400, wire.error_body(message, "invalid_request_error"))
        elif request.path == "/v1/embeddings":
            dims = int(body.get("dimensions") or self.embedding_dimensions)
            fmt = str(body.get("encoding_format") or "float")
            await response.json(200, wire.embeddings(body["model"], body.get("input"), dims, fmt))
        else:
            await self._chat(body, response)

    def _tool_call_for(self, body: dict[str, Any]) -> dict[str, Any] | None:
        if self.tool_call is None or not body.get("tools") or body.get("tool_choice") == "none":
            return None
        arguments = self.tool_call.get("arguments", "{}")
        if not isinstance(arguments, str):
            arguments = json.dumps(arguments)
        call_id = f"call_fake{next(self._ids):06d}"
        return {"id": call_id, "name": self.tool_call["name"], "arguments": arguments}

    async def _chat(self, body: dict[str, Any], response: _Response) -> None:
        tool_call = self._tool_call_for(body)
        if tool_call is None:
            pieces, finish = wire.split_reply(self.reply, self.chunks), "stop"
            limit = body.get("max_completion_tokens") or body.get("max_tokens")
            if isinstance(limit, int) and limit < len(pieces):
                pieces, finish = pieces[:limit], "length"
        else:
            pieces = wire.split_fixed(tool_call["arguments"], self.chunks or 3)
            finish = "tool_calls"
        answer = wire.ChatAnswer(
            id=f"chatcmpl-fake{next(self._ids):06d}",
            created=int(time.time()),
            model=str(body["model"]),
            pieces=pieces,
            tool_call=tool_call,
            finish_reason=finish,
            usage=wire.usage(wire.count_prompt_tokens(body.get("messages")), len(pieces)),
        )
        if not body.get("stream"):
            await response.json(200, wire.chat_completion(answer))
            return
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        events = wire.chat_chunks(answer, include_usage=include_usage)
        await self._stream(response, events)

    async def _stream(self, response: _Response, events: list[dict[str, Any]]) -> None:
        await response.start(200, {"content-type": "text/event-stream; charset=utf-8"})
        await trio.sleep(self.first_token_delay_s)
        cut = self.cut_after_chunks
        for index, event in enumerate(events):
            if cut is not None and index >= cut:
                break
            if index:
                await trio.sleep(self.chunk_delay_s)
            await response.body(wire.sse(event), more=True)
        if cut is not None:
            # Return without ending the chunked body: hypercorn then closes the connection,
            # so the client sees a truncated stream (no final chunk, no [DONE]).
            return
        await response.body(wire.sse("[DONE]"), more=False)


async def start_fake(nursery: trio.Nursery, app: FakeOpenAI, *, port: int = 0) -> str:
    """Serve ``app`` on 127.0.0.1 as a child of ``nursery``; return ``http://127.0.0.1:PORT/v1``.

    The server runs until ``nursery`` is cancelled or ``app.shutdown.set()`` is called
    (graceful stop: the port closes, in-flight requests get ``graceful_timeout``).
    Pass the previous ``port`` to bring a stopped upstream back on the same address.
    """
    app.shutdown = trio.Event()
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.accesslog = None
    config.errorlog = _SERVER_LOG  # INFO is below the default WARNING level: quiet
    config.graceful_timeout = 0.5
    config.include_server_header = False
    asgi: Any = app  # hypercorn's Framework type is a union of callables; ours is an object
    serve = partial(hypercorn.trio.serve, asgi, config, shutdown_trigger=app.shutdown.wait)
    binds: list[str] = await nursery.start(serve)
    return f"{binds[0]}/v1"
