"""The web console's door: its page and assets (``/console``), and its sessions
(``/console/session``: sign in with the admin key, read the CSRF token, sign out).

The pages themselves call the admin API with the session cookie
(:mod:`ailb.http_api.admin_auth`). Signing in and out are recorded in the audit log (door
"console"); so is every change made through the console, by the admin API's own records.
Every console answer forbids framing and caching, and the page runs under a
Content-Security-Policy that allows only its own script and style.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from quart import Response, request
from werkzeug.exceptions import HTTPException

from ailb.console import assets
from ailb.console.sessions import CSRF_HEADER, cookie_name, csrf_matches, csrf_token
from ailb.errors import GatewayError, PermissionDenied, StoreUnavailable
from ailb.http_api.admin import json_answer
from ailb.http_api.admin_auth import check_browser_write, console_session, cookie_is_secure
from ailb.http_api.caller import http_caller
from ailb.http_api.errors import error_response, from_http_exception
from ailb.pipeline.services import Services
from ailb.schemas.admin import ConsoleSignIn
from ailb.schemas.check import conform, decode_object

CSP: Final = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
              "img-src 'self' data:; base-uri 'none'; form-action 'none'; "
              "frame-ancestors 'none'")
_GUARD: Final = {"cache-control": "no-store", "x-frame-options": "DENY",
                 "x-content-type-options": "nosniff", "referrer-policy": "no-referrer"}


def _asset(body: str, content_type: str) -> Callable[[], Awaitable[Response]]:
    async def serve() -> Response:
        response = Response(body, content_type=content_type)
        response.headers.update({**_GUARD, "content-security-policy": CSP})
        return response
    return serve


def _json(body: Any, status: int = 200) -> Response:
    response = json_answer(body, status)
    response.headers.update(_GUARD)
    return response


def _session_view(services: Services, csrf: str) -> dict[str, Any]:
    s = services.settings.console
    return {"object": "console.session", "csrf_token": csrf, "csrf_header": CSRF_HEADER,
            "idle_s": s.session_idle_s, "max_s": s.session_max_s}


def routes(services: Services) -> list[tuple[str, str, Callable[..., Awaitable[Response]],
                                             list[str]]]:
    """(rule, endpoint, view, methods) for the app factory."""

    async def sign_in() -> Response:
        try:
            check_browser_write()  # no signing a victim in from another site's form
            try:
                data = await request.get_data(cache=False, as_text=False,
                                              parse_form_data=False)
            except HTTPException as exc:
                raise from_http_exception(exc) from exc
            given = conform(decode_object(data), ConsoleSignIn)
            # through the failed-authentication throttle, like the key on any other door
            headers = {"authorization": f"Bearer {given.admin_key}"}
            if not services.auth.authenticate(headers, http_caller()).is_admin:
                raise PermissionDenied("The console needs the admin key.", code="admin_only")
            if services.console is None:
                raise StoreUnavailable("The console's sessions are not available.")
            opened = await services.console.open()
        except GatewayError as exc:
            return error_response(exc)
        await services.audit.record(actor="admin-key", door="console", action="console.sign_in",
                                    address=http_caller().address)
        response = _json(_session_view(services, opened.csrf))
        secure = cookie_is_secure(services)
        response.set_cookie(cookie_name(secure), opened.session_id,
                            max_age=int(services.settings.console.session_max_s), path="/",
                            secure=secure, httponly=True, samesite="Strict")
        return response

    async def session() -> Response:
        try:
            session_id = await console_session(services)
        except GatewayError as exc:
            return error_response(exc)
        return _json(_session_view(services, csrf_token(session_id)))

    async def sign_out() -> Response:
        try:
            session_id = await console_session(services)
            check_browser_write()
            if not csrf_matches(session_id, request.headers.get(CSRF_HEADER)):
                raise PermissionDenied(f"Signing out needs the session's {CSRF_HEADER} "
                                       "header.", code="csrf_failed")
            assert services.console is not None  # console_session checked it
            await services.console.close(session_id)
        except GatewayError as exc:
            return error_response(exc)
        await services.audit.record(actor="admin-key", door="console", action="console.sign_out",
                                    address=http_caller().address)
        response = _json({"object": "console.session", "signed_out": True})
        secure = cookie_is_secure(services)
        response.delete_cookie(cookie_name(secure), path="/", secure=secure, httponly=True,
                               samesite="Strict")
        return response

    return [
        ("/console", "console_page", _asset(assets.PAGE, "text/html; charset=utf-8"), ["GET"]),
        ("/console/app.css", "console_css", _asset(assets.STYLE, "text/css; charset=utf-8"),
         ["GET"]),
        ("/console/app.js", "console_js",
         _asset(assets.script(), "text/javascript; charset=utf-8"), ["GET"]),
        ("/console/session", "console_sign_in", sign_in, ["POST"]),
        ("/console/session", "console_session", session, ["GET"]),
        ("/console/session", "console_sign_out", sign_out, ["DELETE"]),
    ]
