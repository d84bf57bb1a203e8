"""Admin routes for operators (and the console): the last requests the workers finished
(``/admin/requests/recent``), the effective configuration, secrets masked (``/admin/config``),
and ending every console session (``DELETE /admin/console/sessions``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from quart import Response, request

from ailb.config.view import masked
from ailb.errors import InvalidRequest, StoreUnavailable
from ailb.http_api.admin import admin_call, audited, json_answer
from ailb.pipeline.recent import CAPACITY
from ailb.pipeline.services import Services
from ailb.workers.recent_files import every_worker

DEFAULT_LIMIT = 50


def _limit() -> int:
    """``?limit=`` from 1 to the ring's size. Raises InvalidRequest."""
    raw = request.args.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not raw.isdigit() or not 1 <= int(raw) <= CAPACITY:
        raise InvalidRequest(f"limit must be an integer from 1 to {CAPACITY}.", param="limit")
    return int(raw)


def routes(services: Services) -> list[tuple[str, str, Callable[..., Awaitable[Response]],
                                             list[str]]]:
    """(rule, endpoint, view, methods) for the app factory."""

    async def recent() -> Response:
        async def work() -> Response:
            data = await every_worker(services.recent, services.recent_files, _limit())
            return json_answer({"object": "list", "data": data})
        return await admin_call(services, work)

    async def config() -> Response:
        async def work() -> Response:
            state = services.config
            return json_answer({"object": "config", "generation": state.generation,
                          "loaded_at": state.loaded_at, "last_error": state.last_error,
                          "settings": masked(services.settings)})
        return await admin_call(services, work)

    async def revoke_sessions() -> Response:
        async def work() -> Response:
            if services.console is None:
                raise StoreUnavailable("The console's sessions are not available.")
            revoked = await services.console.close_all()
            await audited(services, "console.sessions_revoked", "console",
                          {"revoked": revoked})
            return json_answer({"object": "console.sessions_revoked", "revoked": revoked})
        return await admin_call(services, work, "console.sessions_revoked", "console")

    return [
        ("/admin/console/sessions", "admin_console_sessions_revoke", revoke_sessions,
         ["DELETE"]),
        ("/admin/requests/recent", "admin_recent_requests", recent, ["GET"]),
        ("/admin/config", "admin_config", config, ["GET"]),
    ]
