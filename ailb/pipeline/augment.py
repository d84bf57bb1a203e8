"""Memory and retrieval around a chat request, for every ingress (HTTP and gRPC).

Before the call, :func:`prepare` takes AILB's own fields out of the body (``session_id``,
``rag``, ``rag_collection``, ``rag_top_k``: an upstream never sees them), puts the session's
memory and the retrieved passages in front of the messages, and notes the response headers
(``x-ailb-memory``, ``x-ailb-rag-sources``). After a complete answer, :func:`remember` queues
the turn for the memory writer. The order of what the upstream receives:

1. the client's leading system/developer messages;
2. the retrieved passages (one system message, ``<ailb-context>``; :mod:`ailb.rag.context`);
3. the session's memory (``<ailb-memory>`` and the recent turns; :mod:`ailb.memory.assemble`);
4. the client's other messages.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Final

from ailb.errors import InvalidRequest
from ailb.keys.auth import Principal
from ailb.memory.assemble import prompt_end
from ailb.memory.turns import (
    Message,
    last_user_text,
    new_messages,
    session_of,
)
from ailb.model import ChatRequest
from ailb.pipeline.services import Services
from ailb.rag.context import context_block, sources_header
from ailb.rag.options import BODY_FIELDS, rag_options
from ailb.rag.service import require_read
from ailb.telemetry.spans import Trace, step

OWN_FIELDS: Final = ("session_id", *BODY_FIELDS)  # AILB's own fields of a chat body


@dataclass(frozen=True, slots=True)
class Prepared:
    """A chat request made ready: ``chat`` is what goes upstream; ``memory`` is set when the
    answer is to be stored in a session's memory; ``notes`` are response headers."""

    chat: ChatRequest
    notes: Mapping[str, str]
    memory: tuple[str, str, tuple[Message, ...]] | None = None  # (owner, session, new messages)


async def prepare(services: Services, principal: Principal, chat: ChatRequest,
                  session_header: str | None, rag_header: str | None,
                  trace: Trace | None = None) -> Prepared:
    """Strip AILB's fields, add memory and retrieved context. ``session_header`` is a session
    id given out of band (``X-Session-ID``, gRPC's ``session_id``), ``rag_header`` the
    ``x-ailb-rag-collection`` header. A request that came in as an Anthropic body
    (``chat.native``) and had context added is sent translated from then on: the native body
    does not hold the context. Raises InvalidRequest (bad session id or RAG options, RAG not
    enabled), PermissionDenied (a collection the key may not read), NotFound (no such
    collection), StoreUnavailable, EmbedderMismatch."""
    if session_header is None and rag_header is None and not any(
            name in chat.body for name in OWN_FIELDS):
        return Prepared(chat, {})  # the common case: nothing to do, nothing copied
    body = dict(chat.body)
    session = session_of(session_header, body)
    body.pop("session_id", None)
    options, body = rag_options(body, rag_header, services.settings.rag)
    if options is not None:  # refused before any memory work is done for the request
        if services.rag is None:
            raise InvalidRequest("RAG is not enabled on this gateway (ENABLE_RAG).",
                                 param="rag", code="rag_disabled")
        require_read(principal, options.collection)
    messages: list[Message] = [dict(m) for m in body["messages"]]
    notes: dict[str, str] = {}
    memory = None
    lead = prompt_end(messages)
    if session is not None and services.memory is not None:
        new = tuple(new_messages(messages))
        with step(trace, "ailb.memory.load"):
            recall = await services.memory.recall(principal.key_id, session, messages)
        messages = recall.messages
        notes["x-ailb-memory"] = f"recent={recall.recent}, recalled={recall.recalled}"
        memory = (principal.key_id, session, new)
    if options is not None and services.rag is not None:
        with step(trace, "ailb.rag.retrieve", {"ailb.rag.collection": options.collection,
                                                "ailb.rag.top_k": options.top_k}):
            passages = await services.rag.retrieve(options.collection, last_user_text(messages),
                                                   options.top_k, options.min_score)
        if passages:
            block, passages = context_block(passages, services.settings.rag.max_context_chars)
            messages.insert(lead, block)
        notes["x-ailb-rag-sources"] = sources_header(passages)
    body["messages"] = messages
    native = chat.native
    if native is not None:
        changed = len(messages) != len(chat.body["messages"])
        native = None if changed else {k: v for k, v in native.items() if k not in OWN_FIELDS}
    return Prepared(replace(chat, body=body, native=native), notes, memory)


async def remember(services: Services, prepared: Prepared, answer: Message | None,
                   trace: Trace | None = None) -> None:
    """Queue the turn of a complete answer (no-op without a session)."""
    if prepared.memory is None or services.memory is None or answer is None:
        return
    owner, session, new = prepared.memory
    with step(trace, "ailb.memory.save"):  # queued for the memory writer (its backpressure)
        await services.memory.remember(owner, session, new, answer)
