"""The chat pipeline: one flow for every door that takes a chat request.

A door turns its wire format into a :class:`ChatCall` (a provider-neutral
:class:`~ailb.model.ChatRequest`, routing hints, and the session and RAG collection given out
of band), calls :func:`run_chat` inside its :class:`~ailb.pipeline.frame.Frame`, and maps the
:class:`Answer` or :class:`Opened` stream (or the GatewayError raised) back to its wire. The
steps, in order, each once per request::

    router snapshot     services.router is read once: a reload mid-request cannot mix two
    precheck            the model routes, and the key may use it (before any work for it)
    memory / RAG        AILB's own fields stripped; session memory and passages added
    estimate            the prompt's tokens, once, for admission and routing alike
    admit               runtime limits, the key's RPM/TPM/parallel limits and budget
    response cache      a deterministic request may be answered (or replayed as a stream)
    route               strategy, retries, failover, hedging (ailb.routing.router)
    remember            a complete answer's turn is queued for the memory writer; a
                        complete deterministic answer is cached

What the request did for the response's notes (``x-ailb-*``) is in the frame's exchange.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from ailb.caches.replay import StreamRecorder, replay_chunks, replayable
from ailb.caches.response import ResponseCache
from ailb.keys.auth import Principal
from ailb.memory.turns import answer_message
from ailb.model import ChatRequest, ChatResult, StreamChunk
from ailb.pipeline.admission import admit_chat, precheck
from ailb.pipeline.augment import Prepared, prepare, remember
from ailb.pipeline.exchange import Exchange
from ailb.pipeline.services import Services
from ailb.pricing import estimate_prompt_tokens
from ailb.providers.sse_block import events_of
from ailb.routing.router import Hints
from ailb.routing.stream import OpenStream
from ailb.telemetry.spans import Trace, answered, asked, step


@dataclass(frozen=True, slots=True)
class ChatCall:
    """What a door hands the pipeline."""

    chat: ChatRequest
    hints: Hints = Hints()
    session: str | None = None  # X-Session-ID, gRPC session_id
    rag_collection: str | None = None  # x-ailb-rag-collection
    operation: str = "chat"  # gen_ai.operation.name: "text_completion" for /v1/completions


@dataclass(frozen=True, slots=True)
class Answer:
    """A whole answer. ``result.usage`` is None for an answer from the cache (nothing was
    called, nothing is charged)."""

    result: ChatResult


@dataclass(frozen=True, slots=True)
class Opened:
    """A stream whose first chunk is in hand. The door relays ``stream.first`` and then
    ``stream.next()`` until None, calls ``watch.seen`` on every chunk (when ``watch`` is set)
    and ``await watch.done()`` once the stream ended cleanly, and always ``stream.aclose()``."""

    stream: OpenStream
    watch: StreamWatch | None = None


class StreamWatch:
    """Sees a stream's chunks; once it ended cleanly, remembers the turn and caches the answer."""

    __slots__ = ("_cache", "_key", "_prepared", "_recorder", "_services", "_trace")

    def __init__(self, services: Services, prepared: Prepared, cache: ResponseCache | None,
                 key: str | None, trace: Trace | None = None) -> None:
        self._services = services
        self._trace = trace
        self._prepared = prepared
        self._cache = cache
        self._key = key
        self._recorder = StreamRecorder()

    def seen(self, chunk: StreamChunk) -> None:
        for event in events_of(chunk):  # a block's events one by one
            if not event.data:
                continue  # an Anthropic event relayed as it is, with nothing of its own
            try:
                parsed = json.loads(event.data)
            except ValueError:
                continue
            if isinstance(parsed, dict):
                self._recorder.add(event, parsed)

    async def done(self) -> None:
        completion = self._recorder.completion()
        if self._cache is not None and self._key is not None and completion is not None:
            await self._cache.put(self._key, _encode(completion))
        await remember(self._services, self._prepared, self._recorder.message(), self._trace)


def _encode(body: Mapping[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def _usable(stream: bool, raw: bytes) -> tuple[dict[str, Any], bytes] | None:
    """A cached answer and its bytes; None for a stream it cannot say whole (upstream asked)."""
    completion: dict[str, Any] = json.loads(raw)
    return None if stream and not replayable(completion) else (completion, raw)


def _replay(completion: Mapping[str, Any]) -> OpenStream:
    """A cached answer as a stream (not bound to the exchange: it uses and costs nothing)."""
    chunks = replay_chunks(completion)

    async def rest() -> Any:
        for chunk in chunks[1:]:
            yield chunk

    return OpenStream(chunks[0], rest(), lambda exc: None, lambda: None)


async def run_chat(services: Services, exchange: Exchange, principal: Principal,
                   call: ChatCall) -> Answer | Opened:
    """Answer ``call`` for ``principal``. Raises any GatewayError of the tree: InvalidRequest,
    NotFound, PermissionDenied, RateLimited, BudgetExceeded, StoreUnavailable,
    NoHealthyDeployment, UpstreamError."""
    router = services.router  # one snapshot for the whole request
    chat = call.chat
    exchange.model, exchange.stream = chat.model, chat.stream
    trace = exchange.trace
    if trace is not None:
        asked(trace, call.operation, chat.body, chat.stream)
    route = precheck(router, principal, chat.model)  # before memory and retrieval work for it
    prepared = await prepare(services, principal, chat, call.session, call.rag_collection,
                             trace)
    exchange.notes.update(prepared.notes)
    prompt_tokens = estimate_prompt_tokens(prepared.chat.body)
    with step(trace, "ailb.admission"):
        chat = await admit_chat(services, exchange, principal, prepared.chat, route,
                                prompt_tokens)
    cache = services.responses
    # An Anthropic body sent as it is gets the upstream's own message back (thinking blocks,
    # stop sequences): the cache, which keeps OpenAI's shape, would lose them.
    native = chat.native is not None and any(t.provider == "anthropic" for t in route.targets)
    key = cache.key(principal.key_id, chat.body) if cache is not None and not native else None
    if cache is not None and key is not None:
        hit = await cache.get(key, partial(_usable, chat.stream))
        exchange.notes["x-ailb-cache"] = "miss" if hit is None else "hit"
        if hit is not None:
            completion, raw = hit
            if trace is not None:
                answered(trace, completion)
            await remember(services, prepared, answer_message(completion), trace)
            if chat.stream:
                return Opened(_replay(completion))
            return Answer(ChatResult(completion, None, raw=raw))
    if chat.stream:
        stream = await router.open_stream(chat, exchange, call.hints, route=route,
                                          prompt_tokens=prompt_tokens)
        watch = None
        if prepared.memory is not None or key is not None:
            watch = StreamWatch(services, prepared, cache, key, trace)
        return Opened(stream, watch)
    result = await router.complete(chat, exchange, call.hints, route=route,
                                   prompt_tokens=prompt_tokens)
    if cache is not None and key is not None:
        await cache.put(key, result.raw or _encode(result.body))
    if trace is not None:
        answered(trace, result.body)
    await remember(services, prepared, answer_message(result.body), trace)
    return Answer(result)
