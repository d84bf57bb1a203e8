"""Who may call the admin API: the one check every ``/admin/...`` route makes.

Two credentials pass, and :func:`require_admin` is the only place that knows both:

* ``Authorization: Bearer <admin key>`` (or ``x-api-key``): scripts, the CLI, curl. It goes
  through the failed-authentication throttle like every key (:mod:`ailb.keys.auth`).
* the web console's session cookie (:mod:`ailb.console.sessions`). A browser sends a cookie
  with any request to this host, whoever wrote the page that caused it, so a method that
  changes something (anything but GET and HEAD) must also carry the session's CSRF token in
  ``x-ailb-csrf``, and its ``Origin`` header, when the browser sends one, must name this host.
  A page on another origin cannot read the token, and cannot forge ``Origin``.

A request with a key header is judged by the key alone (a cookie beside it changes nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import urlsplit

from quart import g, request

from ailb.console.sessions import CSRF_HEADER, cookie_name, cookie_secure, csrf_matches
from ailb.errors import AuthenticationFailed, PermissionDenied
from ailb.http_api.caller import http_caller
from ailb.keys.auth import bearer_token
from ailb.pipeline.services import Services

SAFE_METHODS: Final = frozenset({"GET", "HEAD"})


@dataclass(frozen=True, slots=True)
class AdminIdentity:
    """The admin, and the way in: ``via_console`` when the call came with a console session
    (the audit records its door as "console" then, else "http")."""

    via_console: bool = False

    @property
    def actor(self) -> str:
        return "admin-key"

    @property
    def door(self) -> Literal["http", "console"]:
        return "console" if self.via_console else "http"


def origin_allowed() -> bool:
    """No ``Origin`` header (not a browser, or a same-origin GET), or one naming this host."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(netloc) and netloc.lower() == (request.host or "").lower()


def check_browser_write() -> None:
    """A mutating call's ``Origin`` must be this host. Raises PermissionDenied (403)."""
    if not origin_allowed():
        raise PermissionDenied("The request's Origin is not this gateway.",
                               code="origin_mismatch")


def cookie_is_secure(services: Services) -> bool:
    """Whether this request's session cookie is (to be) Secure."""
    return cookie_secure(services.settings.console.secure_cookie, request.scheme)


def session_cookie(services: Services) -> str | None:
    """The session cookie's value, under the name this request's cookie has
    (:func:`ailb.console.sessions.cookie_name`)."""
    return request.cookies.get(cookie_name(cookie_is_secure(services)))


async def console_session(services: Services) -> str:
    """The request's live console session id. Raises AuthenticationFailed (401) when there is
    no cookie, or it names no live session; StoreUnavailable (503)."""
    session_id = session_cookie(services)
    if not session_id or services.console is None or len(session_id) > 200:
        raise AuthenticationFailed("No console session: sign in again.",
                                   code="console_session_missing")
    if not await services.console.valid(session_id):
        raise AuthenticationFailed("The console session has ended (signed out or expired): "
                                   "sign in again.", code="console_session_expired")
    return session_id


async def require_admin(services: Services) -> AdminIdentity:
    """The admin behind the current request, by admin key or console session. Raises
    AuthenticationFailed (401) without a valid credential, AuthThrottled (429), PermissionDenied
    (403) for a virtual key, or a console write without its CSRF token or from another origin,
    and StoreUnavailable (503) when the sessions cannot be read."""
    if bearer_token(request.headers) is None and session_cookie(services):
        session_id = await console_session(services)
        if request.method not in SAFE_METHODS:
            check_browser_write()
            if not csrf_matches(session_id, request.headers.get(CSRF_HEADER)):
                raise PermissionDenied(f"A console call that changes something needs the "
                                       f"session's {CSRF_HEADER} header.", code="csrf_failed")
        return AdminIdentity(via_console=True)
    if not services.auth.authenticate(request.headers, http_caller()).is_admin:
        raise PermissionDenied("The admin API needs the admin key.", code="admin_only")
    return AdminIdentity()


async def key_or_console(services: Services) -> None:
    """Reads open to any key (``/api/routing/stats``): a key, or a console session. Raises
    like :func:`require_admin`, but lets any valid key through."""
    if bearer_token(request.headers) is None and session_cookie(services):
        await console_session(services)
        return
    services.auth.authenticate(request.headers, http_caller())


def remember_admin(identity: AdminIdentity) -> None:
    """Keep the identity for the rest of the request (``current_admin``)."""
    g.ailb_admin = identity


def current_admin() -> AdminIdentity:
    """The admin :func:`require_admin` let in during this request (the audit's actor and
    door)."""
    identity = g.get("ailb_admin")
    return identity if isinstance(identity, AdminIdentity) else AdminIdentity()
