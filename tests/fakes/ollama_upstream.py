"""A fake Ollama server (native API): a raw ASGI app served by Hypercorn (Trio) on loopback.

Usage in a pytest-trio test::

    app = FakeOllama()
    base_url = await start_fake(nursery, app)      # "http://127.0.0.1:PORT"
    app.tool_calls = [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    ...
    assert app.requests[-1].body["model"] == "llama3:8b"

Endpoints: ``GET /`` ("Ollama is running"), ``GET /api/version``, ``GET /api/tags``,
``POST /api/chat`` (streams NDJSON unless ``"stream": false`` -- Ollama's default is to
stream), ``POST /api/embed``. Unknown paths get Go's plain-text ``404 page not found``.

Knobs are plain attributes read when a request arrives. ``latency_s``, ``hang`` and ``status``
apply to chat and embed; ``/api/tags`` obeys ``models`` and ``tags_status``. A chat/embed for a
model not in ``models`` (``name`` or ``name:latest``) gets 404 ``{"error": "model 'x' not
found"}``. With ``tool_calls`` set and ``tools`` in the request the answer is those calls
(never streamed piecewise); otherwise ``reply``, cut to ``options.num_predict`` words
(``done_reason`` "length"). Counts: prompt = words of message contents, eval = reply words +
one per tool call; durations are derived from the counts (see ``ollama_wire.durations``).
"""

from __future__ import annotations

from typing import Any

import trio

from . import ollama_wire as wire
from .asgi_common import FakeServer, RecordedRequest, Response, serve, stream_frames
from .openai_wire import split_reply

__all__ = ["DEFAULT_MODELS", "DEFAULT_REPLY", "FakeOllama", "RecordedRequest", "start_fake"]

DEFAULT_MODELS = ["llama3:8b", "qwen2.5:0.5b", "nomic-embed-text:latest"]
DEFAULT_REPLY = "Hello from the fake Ollama."
VERSION = "0.6.2"
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
NDJSON_CONTENT_TYPE = "application/x-ndjson"


class FakeOllama(FakeServer):
    """ASGI app imitating an Ollama server. See the module docstring for the behaviour."""

    request_id_header = None  # Ollama sends no request id

    def __init__(self, *, models: list[str] | None = None, reply: str = DEFAULT_REPLY) -> None:
        super().__init__()
        # --- knobs ---------------------------------------------------------------------
        self.models: list[str] = list(DEFAULT_MODELS if models is None else models)
        self.tags_status: int | None = None  # answer GET /api/tags with this error status
        self.reply = reply  # assistant content
        self.chunks: int | None = None  # content lines when streaming (None: one per word)
        self.tool_calls: list[dict[str, Any]] | None = None  # [{"name", "arguments": dict}]
        self.done_reason: str | None = None  # override the final done_reason
        self.latency_s = 0.0  # sleep before the response headers
        self.first_token_delay_s = 0.0  # streaming: after the headers, before the first line
        self.chunk_delay_s = 0.0  # streaming: between lines
        self.status: int | None = None  # answer chat/embed with this error status
        self.error_message: str | None = None  # {"error": ...} text for status errors
        self.stream_error: int | None = None  # streaming: {"error"} line after N lines, then end
        self.stream_error_message = "an error was encountered while running the model"
        self.cut_after_lines: int | None = None  # streaming: drop the connection after N lines
        self.hang = False  # accept the request and never answer
        self.embedding_dimensions = 8  # when the embed request has no "dimensions"

    async def _error(self, response: Response, status: int, message: str) -> None:
        await response.json(status, {"error": message}, content_type=JSON_CONTENT_TYPE)

    async def _dispatch(self, request: RecordedRequest, response: Response) -> None:
        route = (request.method, request.path)
        body = request.body if isinstance(request.body, dict) else {}
        if route in {("GET", "/"), ("HEAD", "/")}:
            text = b"Ollama is running"
            await response.send_bytes(200, text, "text/plain; charset=utf-8")
        elif route == ("GET", "/api/version"):
            await response.json(200, {"version": VERSION}, content_type=JSON_CONTENT_TYPE)
        elif route == ("GET", "/api/tags"):
            if self.tags_status is not None:
                await self._error(response, self.tags_status, self.error_message or "error")
            else:
                await response.json(200, wire.tags(self.models), content_type=JSON_CONTENT_TYPE)
        elif route in {("POST", "/api/chat"), ("POST", "/api/embed")}:
            if self.hang:
                await trio.sleep_forever()
            await trio.sleep(self.latency_s)
            model = body.get("model")
            if self.status is not None:
                await self._error(response, self.status, self.error_message or "error")
            elif not model or not isinstance(model, str):
                await self._error(response, 400, "model is required")
            elif wire.find_model(model, self.models) is None:
                await self._error(response, 404, f"model '{model}' not found")
            elif request.path == "/api/embed":
                dims = int(body.get("dimensions") or self.embedding_dimensions)
                answer = wire.embed_response(model, body.get("input"), dims)
                await response.json(200, answer, content_type=JSON_CONTENT_TYPE)
            else:
                await self._chat(body, model, response)
        else:
            await response.send_bytes(404, b"404 page not found", "text/plain")

    def _answer(self, body: dict[str, Any], model: str) -> wire.ChatAnswer:
        prompt_tokens = wire.count_prompt_tokens(body.get("messages"))
        if self.tool_calls and body.get("tools"):
            calls = [
                {"function": {"name": c["name"], "arguments": c.get("arguments", {})}}
                for c in self.tool_calls
            ]
            pieces: list[str] = []
            reason = "stop"
        else:
            calls = None
            pieces, reason = split_reply(self.reply, None), "stop"
            options = body.get("options")
            limit = options.get("num_predict") if isinstance(options, dict) else None
            if isinstance(limit, int) and 0 <= limit < len(pieces):
                pieces, reason = pieces[:limit], "length"
            if self.chunks is not None:
                pieces = split_reply("".join(pieces), self.chunks)
        eval_tokens = len("".join(pieces).split()) + len(calls or [])
        return wire.ChatAnswer(
            model=model,
            pieces=pieces,
            tool_calls=calls,
            done_reason=self.done_reason or reason,
            prompt_tokens=prompt_tokens,
            eval_tokens=eval_tokens,
        )

    async def _chat(self, body: dict[str, Any], model: str, response: Response) -> None:
        answer = self._answer(body, model)
        if body.get("stream", True) is False:
            await response.json(200, wire.chat_response(answer), content_type=JSON_CONTENT_TYPE)
            return
        lines = wire.chat_lines(
            answer, error_after=self.stream_error, error=self.stream_error_message
        )
        await stream_frames(
            response,
            [wire.ndjson(line) for line in lines],
            content_type=NDJSON_CONTENT_TYPE,
            first_delay_s=self.first_token_delay_s,
            delay_s=self.chunk_delay_s,
            cut_after=self.cut_after_lines,
        )


async def start_fake(nursery: trio.Nursery, app: FakeOllama, *, port: int = 0) -> str:
    """Serve ``app`` on 127.0.0.1; return ``http://127.0.0.1:PORT``.

    Stops with ``nursery`` or on ``app.shutdown.set()``; pass ``port`` to restart in place.
    """
    return await serve(nursery, app, port=port)
