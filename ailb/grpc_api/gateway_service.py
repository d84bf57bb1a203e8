"""``ailb.v1.Gateway``: the gRPC doors for chat and embeddings. Each converts its messages
into the pipeline's request (:mod:`ailb.pipeline.chat`, :mod:`ailb.pipeline.embed`) and maps
the answer, the stream or the error back, in the same frame as the HTTP doors.

Handlers run on the asyncio loop that trio-asyncio drives inside the Trio nursery; each hands
its whole request to the Trio side at once (``trio_as_aio``). A client that cancels its call
cancels the upstream call (the stream is closed in ``finally``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

from grpclib import Status
from grpclib.exceptions import StreamTerminatedError
from grpclib.server import Stream
from h2.exceptions import StreamClosedError
from trio_asyncio import aio_as_trio, trio_as_aio

from ailb.errors import GatewayError, InternalError, InvalidRequest
from ailb.grpc_api.gen.ailb.v1 import gateway_grpc
from ailb.grpc_api.gen.ailb.v1 import gateway_pb2 as pb
from ailb.grpc_api.metadata import MetadataHeaders, grpc_caller, grpc_status
from ailb.keys.auth import Principal
from ailb.model import StreamChunk, Usage
from ailb.pipeline.chat import Answer, ChatCall, Opened, run_chat
from ailb.pipeline.chat_parse import parse_chat
from ailb.pipeline.drain import StreamCut
from ailb.pipeline.embed import run_embed
from ailb.pipeline.embeddings_parse import parse_embeddings
from ailb.pipeline.exchange import Exchange
from ailb.pipeline.frame import Frame
from ailb.pipeline.hints import route_hints
from ailb.pipeline.notes import error_headers, opening_notes
from ailb.pipeline.services import Services
from ailb.providers.sse_block import events_of
from ailb.rag.options import HEADER as RAG_HEADER
from ailb.schemas.check import decode_object


def _usage(usage: Usage | None) -> pb.Usage:
    usage = usage or Usage()
    return pb.Usage(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                    cached_tokens=usage.cached_tokens)


def _json_object(text: str) -> dict[str, Any]:
    """``body_json`` decoded as the HTTP doors decode a body (lone surrogates refused, naming
    the field). Raises InvalidRequest."""
    try:
        return decode_object(text.encode())
    except InvalidRequest as exc:
        param = f"body_json.{exc.param}" if exc.param else "body_json"
        raise InvalidRequest(f"body_json: {exc.message}", param=param) from None


def chat_body(request: pb.ChatRequest) -> dict[str, Any]:
    """The OpenAI chat body a ChatRequest stands for. Raises InvalidRequest."""
    typed = bool(request.messages) or request.HasField("max_tokens") or request.HasField(
        "temperature") or request.HasField("top_p")
    if request.body_json:
        if typed:
            raise InvalidRequest("Give either body_json or the typed fields, not both.",
                                 param="body_json")
        body = _json_object(request.body_json)
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


def _chat_call(request: pb.ChatRequest, metadata: MetadataHeaders, request_id: str,
               stream: bool) -> ChatCall:
    """The pipeline's request for a gRPC ChatRequest: the session from ``session_id`` or the
    ``x-session-id`` metadata, the RAG collection from ``x-ailb-rag-collection``, and the
    routing hints from ``x-ailb-strategy`` / ``x-ailb-hedge-ms``. Raises InvalidRequest."""
    body = {**chat_body(request), "stream": stream}
    if stream:  # usage arrives in the last chunk's ``usage`` field, asked for or not
        body["stream_options"] = {"include_usage": True}
    chat = parse_chat(body, request_id)
    return ChatCall(chat, route_hints(metadata),
                    metadata.get("x-session-id") or request.session_id or None,
                    metadata.get(RAG_HEADER))


def _embed_body(request: pb.EmbedRequest) -> dict[str, Any]:
    """The OpenAI embeddings body an EmbedRequest stands for. Raises InvalidRequest."""
    body: dict[str, Any] = {"input": list(request.input)}
    if request.body_json:
        body = _json_object(request.body_json)
    if request.model:
        body["model"] = request.model
    if request.HasField("dimensions"):
        body["dimensions"] = request.dimensions
    return body


Work = Callable[[Any, Frame, Principal], Awaitable[None]]


class GatewayService(gateway_grpc.GatewayBase):
    """The gRPC door. AILB's notes (``x-request-id``, ``x-ailb-*``, a key's
    ``x-ratelimit-*``) are sent as initial metadata with the answer's start (as known then:
    request id, memory, RAG, cache, deployment, limits) and, final (the key's spend after
    settling), as trailing metadata with the status; an error sends them as trailing
    metadata only.

    Each handler reads its request on the asyncio side, then runs the whole request on the
    Trio side (:meth:`_framed`), where the frame is opened and closed: grpclib cancels a
    handler more than once when its client leaves, and a close scheduled from asyncio could be
    dropped. The Trio side reaches grpclib's stream through ``aio_as_trio``."""

    def __init__(self, services: Services) -> None:
        self._services = services

    async def _framed(self, stream: Any, work: Work) -> None:
        """(Trio) Run ``work`` in the request's frame; errors become the call's status, with
        the notes as trailing metadata. The frame is closed however the call ends."""
        metadata = MetadataHeaders(stream.metadata)
        frame = Frame(self._services, metadata)
        try:
            try:
                await work(stream, frame, frame.open(metadata, grpc_caller(stream)))
            except GatewayError as exc:
                notes = await frame.failed(exc)
                await aio_as_trio(stream.send_trailing_metadata)(
                    status=grpc_status(exc), status_message=exc.message,
                    metadata={**notes, **error_headers(exc)})
            except (StreamTerminatedError, StreamClosedError):
                return  # the client went away: nothing to tell it (499)
            except Exception:  # a bug of ours: INTERNAL, logged under the request's id
                notes = frame.crashed()
                await aio_as_trio(stream.send_trailing_metadata)(
                    status=Status.INTERNAL, status_message=InternalError().message,
                    metadata=notes)
        finally:
            await frame.close()

    async def _door(self, stream: Any, work: Callable[..., Awaitable[None]]) -> None:
        """(asyncio) Read the call's one message, then run ``work(message, stream, frame,
        principal)`` in its frame on the Trio side."""
        request = await stream.recv_message()
        assert request is not None
        await trio_as_aio(self._framed)(stream, partial(work, request))

    async def ChatComplete(self, stream: Stream[pb.ChatRequest, pb.ChatResponse]) -> None:
        await self._door(stream, self._complete)

    async def _complete(self, request: pb.ChatRequest, stream: Any, frame: Frame,
                        principal: Principal) -> None:
        exchange = frame.exchange
        call = _chat_call(request, MetadataHeaders(stream.metadata), exchange.request_id, False)
        outcome = await run_chat(self._services, exchange, principal, call)
        assert isinstance(outcome, Answer)
        result = outcome.result
        usage = result.usage or Usage.from_openai(result.body.get("usage"))  # cached: as sent
        body = result.raw.decode() if result.raw else json.dumps(result.body)
        await aio_as_trio(stream.send_initial_metadata)(metadata=opening_notes(exchange))
        await aio_as_trio(stream.send_message)(pb.ChatResponse(
            body_json=body, usage=_usage(usage), request_id=exchange.request_id,
            deployment=exchange.deployment, provider=exchange.provider))
        await aio_as_trio(stream.send_trailing_metadata)(metadata=await frame.succeeded())

    async def ChatStream(self, stream: Stream[pb.ChatRequest, pb.ChatChunk]) -> None:
        await self._door(stream, self._stream)

    async def _stream(self, request: pb.ChatRequest, stream: Any, frame: Frame,
                      principal: Principal) -> None:
        exchange = frame.exchange
        call = _chat_call(request, MetadataHeaders(stream.metadata), exchange.request_id, True)
        outcome = await run_chat(self._services, exchange, principal, call)
        assert isinstance(outcome, Opened)
        cut = StreamCut(self._services.drain, outcome.stream)
        try:
            await aio_as_trio(stream.send_initial_metadata)(metadata=opening_notes(exchange))
            await self._relay(stream, outcome, cut, exchange)
        finally:
            cut.discard()
            await outcome.stream.aclose()  # shielded: the upstream call ends here
        await aio_as_trio(stream.send_trailing_metadata)(metadata=await frame.succeeded())

    @staticmethod
    async def _relay(stream: Any, opened: Opened, cut: StreamCut, exchange: Exchange) -> None:
        """Send every chunk; tell the watch (memory, cache) once the stream ended cleanly."""
        watch = opened.watch
        send = aio_as_trio(stream.send_message)
        first = True
        chunk: StreamChunk | None = opened.stream.first
        while chunk is not None:
            if watch is not None:
                watch.seen(chunk)
            for event in events_of(chunk):  # a block's events, one message each
                message = pb.ChatChunk(chunk_json=event.data)
                if event.usage is not None:
                    message.usage.CopyFrom(_usage(event.usage))
                if first:
                    message.request_id = exchange.request_id
                    message.deployment = exchange.deployment
                    message.provider = exchange.provider
                    first = False
                await send(message)
            chunk = await cut.next()
        if watch is not None:
            await watch.done()

    async def Embed(self, stream: Stream[pb.EmbedRequest, pb.EmbedResponse]) -> None:
        await self._door(stream, self._embed)

    async def _embed(self, request: pb.EmbedRequest, stream: Any, frame: Frame,
                     principal: Principal) -> None:
        exchange = frame.exchange
        parsed = parse_embeddings(_embed_body(request), exchange.request_id)
        result = await run_embed(self._services, exchange, principal, parsed,
                                 route_hints(MetadataHeaders(stream.metadata)))
        await aio_as_trio(stream.send_initial_metadata)(metadata=opening_notes(exchange))
        await aio_as_trio(stream.send_message)(pb.EmbedResponse(
            body_json=json.dumps(result.body), usage=_usage(result.usage),
            request_id=exchange.request_id, deployment=exchange.deployment,
            provider=exchange.provider))
        await aio_as_trio(stream.send_trailing_metadata)(metadata=await frame.succeeded())
