"""``ailb.v1.Gateway``: chat and embeddings over gRPC, through the same admission, routing,
limits, budgets, accounting and metrics as the HTTP API.

Handlers run on the asyncio loop that trio-asyncio drives inside the Trio nursery; every call
into AILB's Trio code goes through ``trio_as_aio``. A client that cancels its call cancels the
upstream call (the stream is closed in ``finally``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
from grpclib.server import Stream
from trio_asyncio import trio_as_aio

from ailb.admission import admit, admit_chat, enter, precheck, release
from ailb.augment import observer, prepare, remember
from ailb.chat_parse import parse_chat
from ailb.embeddings import parse_embeddings
from ailb.errors import GatewayError, InvalidRequest, ShuttingDown, UpstreamError
from ailb.exchange import Exchange
from ailb.grpc_api.gen.ailb.v1 import gateway_grpc
from ailb.grpc_api.gen.ailb.v1 import gateway_pb2 as pb
from ailb.grpc_api.metadata import MetadataHeaders, grpc_error, request_id_of
from ailb.keys.auth import Principal
from ailb.memory.turns import answer_message
from ailb.model import StreamChunk, Usage
from ailb.routing.router import Hints
from ailb.routing.stream import OpenStream
from ailb.services import Services

T = TypeVar("T")


def _usage(usage: Usage | None) -> pb.Usage:
    usage = usage or Usage()
    return pb.Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                    cached_tokens=usage.cached_tokens)


def chat_body(request: pb.ChatRequest) -> dict[str, Any]:
    """The OpenAI chat body a ChatRequest stands for. Raises InvalidRequest."""
    typed = bool(request.messages) or request.HasField("max_tokens") or request.HasField(
        "temperature") or request.HasField("top_p")
    if request.body_json:
        if typed:
            raise InvalidRequest("Give either body_json or the typed fields, not both.",
                                 param="body_json")
        try:
            body = json.loads(request.body_json)
        except ValueError:
            raise InvalidRequest("body_json is not valid JSON.", param="body_json") from None
        if not isinstance(body, dict):
            raise InvalidRequest("body_json must be a JSON object.", param="body_json")
    else:
        body = {"messages": [{"role": m.role, "content": m.content,
                              **({"name": m.name} if m.name else {})}
                             for m in request.messages]}
        if request.HasField("max_tokens"):
            body["max_tokens"] = request.max_tokens
        if request.HasField("temperature"):
            body["temperature"] = request.temperature
        if request.HasField("top_p"):
            body["top_p"] = request.top_p
    if request.model:
        body["model"] = request.model
    return body


class GatewayService(gateway_grpc.GatewayBase):
    def __init__(self, services: Services) -> None:
        self._services = services

    async def _framed(self, stream: Any, work: Callable[[Exchange, Principal],
                                                        Awaitable[T]]) -> T:
        """Admission frame of one gRPC request (the gRPC twin of ``run_request``)."""
        services = self._services
        exchange = Exchange(request_id_of(stream.metadata))
        enter(services)
        status, key_id = 499, "-"
        try:
            if services.drain.draining:
                raise ShuttingDown("AILB is shutting down; retry on another instance.")
            principal = services.auth.authenticate(MetadataHeaders(stream.metadata))
            key_id = principal.key_id
            value = await work(exchange, principal)
            status = 200
            return value
        except GatewayError as exc:
            status = exc.status
            exchange.error_kind = exc.kind if isinstance(exc, UpstreamError) else exc.type
            raise grpc_error(exc) from None
        finally:
            await trio_as_aio(release)(services, exchange, status, key_id)  # shielded

    async def ChatComplete(self, stream: Stream[pb.ChatRequest, pb.ChatResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None

        async def work(exchange: Exchange, principal: Principal) -> pb.ChatResponse:
            chat = parse_chat({**chat_body(request), "stream": False}, exchange.request_id)
            exchange.model = chat.model
            precheck(self._services, principal, chat.model)
            prepared = await trio_as_aio(prepare)(self._services, principal, chat,
                                                  MetadataHeaders(stream.metadata),
                                                  request.session_id)
            chat = await trio_as_aio(admit_chat)(self._services, exchange, principal,
                                                 prepared.chat)
            result = await trio_as_aio(self._services.router.complete)(chat, exchange, Hints())
            await trio_as_aio(remember)(self._services, prepared, answer_message(result.body))
            body = result.raw.decode() if result.raw else json.dumps(result.body)
            notes.update(prepared.notes)
            return pb.ChatResponse(body_json=body, usage=_usage(result.usage),
                                   request_id=exchange.request_id,
                                   deployment=exchange.deployment, provider=exchange.provider)

        notes: dict[str, str] = {}  # x-ailb-memory, x-ailb-rag-sources: as initial metadata
        response = await self._framed(stream, work)
        if notes:
            await stream.send_initial_metadata(metadata=notes)
        await stream.send_message(response)

    async def ChatStream(self, stream: Stream[pb.ChatRequest, pb.ChatChunk]) -> None:
        request = await stream.recv_message()
        assert request is not None

        async def work(exchange: Exchange, principal: Principal) -> None:
            body = {**chat_body(request), "stream": True,
                    "stream_options": {"include_usage": True}}
            chat = parse_chat(body, exchange.request_id)
            exchange.model, exchange.stream = chat.model, True
            precheck(self._services, principal, chat.model)
            prepared = await trio_as_aio(prepare)(self._services, principal, chat,
                                                  MetadataHeaders(stream.metadata),
                                                  request.session_id)
            chat = await trio_as_aio(admit_chat)(self._services, exchange, principal,
                                                 prepared.chat)
            watcher = observer(self._services, prepared)
            if prepared.notes:
                await stream.send_initial_metadata(metadata=dict(prepared.notes))
            held: list[OpenStream] = []  # set on the Trio side: a cancel that lands between
            # open_stream's return and this task waking up cannot lose the stream

            async def open_() -> OpenStream:
                stream_ = await self._services.router.open_stream(chat, exchange, Hints())
                held.append(stream_)
                return stream_

            cut = _DrainCut()
            self._services.drain.add_stream(cut)
            try:
                opened = await trio_as_aio(open_)()
                first = True
                chunk = opened.first
                while chunk is not None:
                    if watcher is not None:
                        watcher.seen(chunk)
                    message = pb.ChatChunk(chunk_json=chunk.data)
                    if chunk.usage is not None:
                        message.usage.CopyFrom(_usage(chunk.usage))
                    if first:
                        message.request_id = exchange.request_id
                        message.deployment = exchange.deployment
                        message.provider = exchange.provider
                        first = False
                    await stream.send_message(message)
                    chunk = await trio_as_aio(cut.next)(opened)
                if watcher is not None:
                    await trio_as_aio(watcher.done)()
            finally:
                self._services.drain.discard_stream(cut)
                for stream_ in held:
                    await trio_as_aio(stream_.aclose)()

        await self._framed(stream, work)

    async def Embed(self, stream: Stream[pb.EmbedRequest, pb.EmbedResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None

        async def work(exchange: Exchange, principal: Principal) -> pb.EmbedResponse:
            body: dict[str, Any] = {"input": list(request.input)}
            if request.body_json:
                try:
                    body = json.loads(request.body_json)
                except ValueError:
                    raise InvalidRequest("body_json is not valid JSON.", param="body_json") \
                        from None
                if not isinstance(body, dict):
                    raise InvalidRequest("body_json must be a JSON object.", param="body_json")
            if request.model:
                body["model"] = request.model
            if request.HasField("dimensions"):
                body["dimensions"] = request.dimensions
            parsed = parse_embeddings(body, exchange.request_id)
            exchange.model = parsed.model
            await trio_as_aio(admit)(
                self._services, exchange, principal, parsed.model,
                {"messages": [{"role": "user", "content": " ".join(parsed.inputs)}]}, 1)
            result = await trio_as_aio(self._services.router.embed)(parsed, exchange, Hints())
            return pb.EmbedResponse(body_json=json.dumps(result.body), usage=_usage(result.usage),
                                    request_id=exchange.request_id,
                                    deployment=exchange.deployment, provider=exchange.provider)

        await stream.send_message(await self._framed(stream, work))


class _DrainCut:
    """A gRPC stream's place in the drain: when the grace period is over, its wait on the
    upstream is cancelled and the call ends with UNAVAILABLE (trailers and all) rather than a
    dropped connection."""

    def __init__(self) -> None:
        self._scope: trio.CancelScope | None = None
        self._cut = False

    def cut(self) -> None:
        self._cut = True
        if self._scope is not None:
            self._scope.cancel()

    async def next(self, opened: OpenStream) -> StreamChunk | None:
        """The next chunk (Trio side). Raises ShuttingDown once the stream is cut."""
        if self._cut:
            raise ShuttingDown("AILB is shutting down; the stream was ended.")
        with trio.CancelScope() as scope:
            self._scope = scope
            chunk = await opened.next()
        self._scope = None
        if scope.cancelled_caught:
            raise ShuttingDown("AILB is shutting down; the stream was ended.")
        return chunk
