"""The memory API: a caller's conversation sessions (``/v1/memory``).

Every key sees only its own sessions. The admin key may act for another key with
``?key_id=<id>`` (privacy requests: ``DELETE /v1/memory/<session>?key_id=<id>``).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from quart import Response, request

from ailb.errors import InvalidRequest, NotFound, PermissionDenied
from ailb.http_api.handling import run_request
from ailb.keys.auth import Principal
from ailb.memory.service import Memory
from ailb.memory.turns import SESSION_ID
from ailb.pipeline.frame import Frame
from ailb.pipeline.services import Services
from ailb.routing.router import Hints


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, separators=(",", ":"), ensure_ascii=False), status=status,
                    content_type="application/json")


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")


def _session(session_id: str) -> str:
    if not SESSION_ID.match(session_id):
        raise InvalidRequest("A session id must be 1-128 of A-Z a-z 0-9 . _ : @ -.",
                             param="session_id")
    return session_id


def _memory(services: Services, principal: Principal) -> tuple[Memory, str]:
    """The memory and the owner whose sessions are meant. Raises NotFound (memory off),
    PermissionDenied (another key's, asked by a virtual key)."""
    if services.memory is None:
        raise NotFound("Conversation memory is not enabled on this gateway (ENABLE_MEMORY).",
                       code="memory_disabled")
    owner = principal.key_id
    other = request.args.get("key_id")
    if other is not None and other != owner:
        if not principal.is_admin:
            raise PermissionDenied("Only the admin key may read another key's memory.",
                                   code="admin_only")
        owner = other
    return services.memory, owner


Work = Callable[[Memory, str], Awaitable[Response]]


def routes(services: Services) -> list[tuple[str, str, Callable[..., Awaitable[Response]],
                                             list[str]]]:
    """(rule, endpoint, view, methods) for the app factory."""

    async def framed(work: Work) -> Response:
        async def step(frame: Frame, body: dict[str, Any], principal: Principal,
                       hints: Hints) -> Response:
            memory, owner = _memory(services, principal)
            return await work(memory, owner)
        return await run_request(services, step)

    async def sessions() -> Response:
        async def work(memory: Memory, owner: str) -> Response:
            found = await memory.sessions(owner)
            return _json({"object": "list", "data": [
                {"id": s.id, "object": "memory.session", "turns": s.turns,
                 "first_at": _iso(s.first_at), "last_at": _iso(s.last_at)} for s in found]})
        return await framed(work)

    async def session(session_id: str) -> Response:
        async def work(memory: Memory, owner: str) -> Response:
            turns = await memory.turns(owner, _session(session_id))
            if not turns:
                raise NotFound(f"No memory for session '{session_id}'.",
                               code="session_not_found")
            return _json({"id": session_id, "object": "memory.session", "turns": [
                {"id": t.id, "at": _iso(t.at), "tokens": t.tokens,
                 "messages": list(t.messages)} for t in turns]})
        return await framed(work)

    async def forget(session_id: str) -> Response:
        async def work(memory: Memory, owner: str) -> Response:
            removed = await memory.forget(owner, _session(session_id))
            return _json({"id": session_id, "object": "memory.session.deleted",
                          "deleted": True, "turns_removed": removed})
        return await framed(work)

    return [
        ("/v1/memory/sessions", "memory_sessions", sessions, ["GET"]),
        ("/v1/memory/<session_id>", "memory_session", session, ["GET"]),
        ("/v1/memory/<session_id>", "memory_forget", forget, ["DELETE"]),
    ]
