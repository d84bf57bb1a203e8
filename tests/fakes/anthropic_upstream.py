"""A fake Anthropic upstream (Messages API): a raw ASGI app served by Hypercorn (Trio) on loopback.

Usage in a pytest-trio test::

    app = FakeAnthropic()
    base_url = await start_fake(nursery, app)      # "http://127.0.0.1:PORT" (no /v1, as the SDK)
    app.tool_uses = [{"name": "get_weather", "input": {"city": "Paris"}}]
    ...
    assert app.requests[-1].body["model"] == "claude-sonnet-4-20250514"

Every request needs an API key, as ``x-api-key`` or (as the anthropic SDK 2.x sends it)
``Authorization: Bearer`` -- equal to ``api_key`` when that is set; 401 ``authentication_error``
otherwise -- and ``anthropic-version`` (400 without it). Every response carries a ``request-id``
header; HTTP error bodies also carry ``request_id``.

Knobs are plain attributes read when a request arrives. ``latency_s``, ``hang`` and ``status``
apply to ``POST /v1/messages`` only; ``GET /v1/models`` obeys ``models`` and ``models_status``;
``POST /v1/messages/count_tokens`` is always answered.

Answers: with ``tool_uses`` set and ``tools`` in the request (and ``tool_choice`` not "none"),
an optional text block (``tool_text``) then one tool_use block per entry, stop reason
``tool_use``. Otherwise ``reply`` as one text block, cut at the first of the request's
``stop_sequences`` ("stop_sequence") or after ``max_tokens`` words ("max_tokens").
``stop_reason``/``stop_sequence`` override the stop reason. Token counts are deterministic:
input = words of ``system`` + message texts, output = reply words + one per tool_use block.

Prompt caching, as the API does it: a request whose blocks (tools, then system, then messages)
carry ``cache_control`` markers reads the longest marked prefix seen before on that model
(``cache_read_input_tokens``: its words) and writes the rest up to its last marker
(``cache_creation_input_tokens``); ``input_tokens`` are the words after that. ``cache_reads``
and ``cache_writes`` count the requests that read / wrote. The knobs
``cache_read_input_tokens`` / ``cache_creation_input_tokens``, when not 0, report fixed numbers
instead.
"""

from __future__ import annotations

import json
from typing import Any

import trio

from . import anthropic_wire as wire
from .asgi_common import FakeServer, RecordedRequest, Response, serve, stream_frames
from .openai_wire import split_fixed, split_reply

__all__ = ["DEFAULT_MODELS", "DEFAULT_REPLY", "FakeAnthropic", "RecordedRequest", "start_fake"]

DEFAULT_MODELS = ["claude-sonnet-4-20250514", "claude-3-5-haiku-20241022"]
DEFAULT_REPLY = "Hello from the fake Anthropic."
SSE_CONTENT_TYPE = "text/event-stream; charset=utf-8"


class FakeAnthropic(FakeServer):
    """ASGI app imitating api.anthropic.com. See the module docstring for the behaviour."""

    request_id_header = "request-id"
    request_id_prefix = "req_fake"

    def __init__(
        self,
        *,
        models: list[str] | None = None,
        reply: str = DEFAULT_REPLY,
        api_key: str | None = None,
    ) -> None:
        super().__init__()
        # --- knobs ---------------------------------------------------------------------
        self.api_key = api_key  # require this key when set (else any key)
        self.models: list[str] = list(DEFAULT_MODELS if models is None else models)
        self.models_status: int | None = None  # answer GET /v1/models with this error status
        self.strict_models = False  # 404 not_found_error for a model not in `models`
        self.reply = reply  # assistant text
        self.chunks: int | None = None  # text deltas when streaming (None: one per word)
        # [{"id"?: str, "name": str, "input": dict, "input_json"?: raw str}, ...]
        self.tool_uses: list[dict[str, Any]] | None = None
        self.tool_text: str | None = None  # text block before the tool_use blocks
        self.tool_input_json: str | None = None  # raw input JSON for entries without input_json
        self.tool_chunks = 3  # input_json_delta fragments per tool_use block (after a "")
        self.stop_reason: str | None = None  # override, e.g. "max_tokens", "stop_sequence"
        self.stop_sequence: str | None = None  # reported with stop_reason "stop_sequence"
        self.cache_read_input_tokens = 0  # fixed usage instead of the cache's (when not 0)
        self.cache_creation_input_tokens = 0
        self.prompt_cache: set[str] = set()  # the cached prefixes (model + marked blocks)
        self.cache_reads = 0
        self.cache_writes = 0
        self.latency_s = 0.0  # sleep before the response headers
        self.first_token_delay_s = 0.0  # streaming: after the headers, before the first event
        self.chunk_delay_s = 0.0  # streaming: between events
        self.status: int | None = None  # answer POST /v1/messages with this error status
        self.error_type: str | None = None  # error.type for `status` (default: per status)
        self.error_message: str | None = None  # error.message for `status` errors
        self.retry_after: float | str | None = None  # retry-after on status/models_status errors
        self.stream_error: int | None = None  # streaming: `event: error` after N deltas, then end
        self.stream_error_type = "overloaded_error"
        self.stream_error_message = "Overloaded"
        self.cut_after_events: int | None = None  # streaming: drop the connection after N events
        self.hang = False  # accept the request and never answer

    # --- routing -------------------------------------------------------------------------
    async def _error(
        self,
        response: Response,
        status: int,
        type_: str | None = None,
        message: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        body = wire.error_for_status(status, type_, message, response.request_id)
        await response.json(status, body, headers)

    async def _status_error(self, response: Response, status: int) -> None:
        headers = {} if self.retry_after is None else {"retry-after": str(self.retry_after)}
        await self._error(response, status, self.error_type, self.error_message, headers)

    async def _dispatch(self, request: RecordedRequest, response: Response) -> None:
        key = request.headers.get("x-api-key")
        authorization = request.headers.get("authorization", "")
        if key is None and authorization.startswith("Bearer "):
            key = authorization.removeprefix("Bearer ")  # what anthropic SDK 2.x sends
        if key is None:
            await self._error(response, 401, message="x-api-key header is required")
            return
        if self.api_key is not None and key != self.api_key:
            await self._error(response, 401, message="invalid x-api-key")
            return
        if "anthropic-version" not in request.headers:
            message = "anthropic-version: header is required"
            await self._error(response, 400, message=message)
            return
        route = (request.method, request.path)
        body = request.body if isinstance(request.body, dict) else {}
        if route == ("GET", "/v1/models"):
            if self.models_status is not None:
                await self._status_error(response, self.models_status)
            else:
                await response.json(200, wire.model_list(self.models))
        elif route == ("POST", "/v1/messages/count_tokens"):
            if await self._invalid(body, response, ("model", "messages")):
                return
            await response.json(200, {"input_tokens": wire.count_input_tokens(body)})
        elif route == ("POST", "/v1/messages"):
            if self.hang:
                await trio.sleep_forever()
            await trio.sleep(self.latency_s)
            if self.status is not None:
                await self._status_error(response, self.status)
            elif not await self._invalid(body, response, ("model", "max_tokens", "messages")):
                await self._messages(body, response)
        else:
            await self._error(response, 404, message="Not Found")

    async def _invalid(
        self, body: dict[str, Any], response: Response, fields: tuple[str, ...]
    ) -> bool:
        """Answer 400/404 like the API for a missing field or an unknown model."""
        for name in fields:
            if name not in body:
                await self._error(response, 400, message=f"{name}: Field required")
                return True
        if self.strict_models and body["model"] not in self.models:
            await self._error(response, 404, message=f"model: {body['model']}")
            return True
        return False

    # --- answers -------------------------------------------------------------------------
    def _tool_blocks(self, body: dict[str, Any]) -> list[wire.Block] | None:
        choice = body.get("tool_choice")
        if not self.tool_uses or not body.get("tools"):
            return None
        if isinstance(choice, dict) and choice.get("type") == "none":
            return None
        blocks = []
        for entry in self.tool_uses:
            raw = entry.get("input_json") or self.tool_input_json
            if raw is None:
                raw = json.dumps(entry.get("input", {}))
            pieces = ["", *split_fixed(raw, self.tool_chunks)]  # the API starts with ""
            tool_id = entry.get("id") or self.next_id("toolu_fake")
            blocks.append(wire.Block("tool_use", pieces, tool_id=tool_id, name=entry["name"]))
        return blocks

    def _cache(self, body: dict[str, Any]) -> tuple[int, int]:
        """(tokens read from the prompt cache, tokens written to it) for this request."""
        blocks = wire.prompt_blocks(body)
        marks = [i for i, block in enumerate(blocks) if block.marked]
        keys = {i: json.dumps([body.get("model"), *(b.key for b in blocks[:i + 1])])
                for i in marks}
        hit = max((i for i in marks if keys[i] in self.prompt_cache), default=-1)
        read = sum(b.tokens for b in blocks[:hit + 1])
        written = sum(b.tokens for b in blocks[hit + 1:marks[-1] + 1]) if marks else 0
        self.prompt_cache.update(keys.values())
        self.cache_reads += hit >= 0
        self.cache_writes += bool(marks) and marks[-1] > hit
        return read, written

    def _answer(self, body: dict[str, Any]) -> wire.MessageAnswer:
        stop_sequence: str | None = None
        tools = self._tool_blocks(body)
        if tools is not None:
            text = self.tool_text or ""
            stop_reason = "tool_use"
        else:
            text, stop_reason = self.reply, "end_turn"
            hits = [(text.find(s), s) for s in body.get("stop_sequences") or [] if s in text]
            if hits:
                cut, stop_sequence = min(hits)
                text, stop_reason = text[:cut], "stop_sequence"
            limit = body.get("max_tokens")
            if isinstance(limit, int) and len(text.split()) > limit:
                text = "".join(split_reply(text, None)[:limit])
                stop_reason, stop_sequence = "max_tokens", None
        if self.stop_reason is not None:
            stop_reason = self.stop_reason
            stop_sequence = self.stop_sequence if stop_reason == "stop_sequence" else None
        blocks = [wire.Block("text", split_reply(text, self.chunks))] if text else []
        blocks += tools or []
        read, written = self._cache(body)
        if self.cache_read_input_tokens or self.cache_creation_input_tokens:
            read, written = self.cache_read_input_tokens, self.cache_creation_input_tokens
            uncached = wire.count_input_tokens(body)
        else:
            uncached = wire.count_input_tokens(body) - read - written
        return wire.MessageAnswer(
            id=self.next_id("msg_fake"),
            model=str(body["model"]),
            blocks=blocks,
            stop_reason=stop_reason,
            stop_sequence=stop_sequence,
            input_tokens=uncached,
            output_tokens=len(text.split()) + len(tools or []),
            cache_creation_input_tokens=written,
            cache_read_input_tokens=read,
        )

    async def _messages(self, body: dict[str, Any], response: Response) -> None:
        answer = self._answer(body)
        if not body.get("stream"):
            await response.json(200, wire.message(answer))
            return
        error = wire.error_body(self.stream_error_type, self.stream_error_message)
        events = wire.stream_events(answer, error_after_deltas=self.stream_error, error=error)
        await stream_frames(
            response,
            [wire.sse(event) for event in events],
            content_type=SSE_CONTENT_TYPE,
            first_delay_s=self.first_token_delay_s,
            delay_s=self.chunk_delay_s,
            cut_after=self.cut_after_events,
        )


async def start_fake(nursery: trio.Nursery, app: FakeAnthropic, *, port: int = 0) -> str:
    """Serve ``app`` on 127.0.0.1; return ``http://127.0.0.1:PORT`` (the SDK's ``base_url``).

    Stops with ``nursery`` or on ``app.shutdown.set()``; pass ``port`` to restart in place.
    """
    return await serve(nursery, app, port=port)
