"""The web console's sessions: sign-in with the admin key gives a random session id (the
cookie) and a CSRF token; sign-out forgets the session everywhere.

Rules, stated once:

* The id is 256 random bits (``secrets.token_urlsafe(32)``). The store keeps only its SHA-256
  (a copy of the table lets no one sign in), with when it was made and last used.
* A session is valid while it was used within ``session_idle_s`` and made within
  ``session_max_s``; each valid use moves "last used" (one store call that checks and touches).
* Each session is tied to the admin key that opened it: the store keeps a fingerprint of that
  key (an HMAC-SHA256 keyed by the key over a constant, so it reveals nothing of it) and a
  session is valid only while the gateway's current admin key has the same fingerprint. Rotating
  the admin key (and restarting) ends every session opened with the old one.
  ``DELETE /admin/console/sessions`` ends them all at once.
* Sessions live in the store, not in a process: every worker process and every instance sharing
  the store accepts a session any of them made, and a sign-out on one ends it on all.
* The CSRF token is an HMAC of the session id: the server recomputes it from the cookie, so it
  needs no column, and a page that cannot read the (HttpOnly) cookie learns it only from the
  sign-in answer or ``GET /console/session`` (a same-origin read).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Protocol

from ailb.config.schema import ConsoleSettings

COOKIE: Final = "ailb_console"  # over plain http
# a Secure cookie's name: browsers take a __Host- cookie only when Secure, Path=/ and without
# Domain, so no sibling host (or plain-http page) can set or shadow it
SECURE_COOKIE: Final = "__Host-ailb_console"
CSRF_HEADER: Final = "x-ailb-csrf"


class SessionStore(Protocol):
    """Where sessions live (the SQLite and PostgreSQL stores). Every call raises
    StoreUnavailable when the store cannot answer."""

    async def put_session(self, id_hash: str, key_fp: str, now: float, idle_s: float,
                          max_s: float) -> None:
        """Record a new session made at ``now`` by the admin key whose fingerprint is
        ``key_fp``, and drop the sessions that expired."""
        ...

    async def touch_session(self, id_hash: str, key_fp: str, now: float, idle_s: float,
                            max_s: float) -> bool:
        """True and "last used" set to ``now`` when the session exists, was opened by the
        admin key with fingerprint ``key_fp`` and has not expired; else False (nothing
        changes)."""
        ...

    async def delete_all_sessions(self) -> int:
        """Forget every session; how many there were."""
        ...

    async def delete_session(self, id_hash: str) -> bool:
        """Forget the session; False when there was none."""
        ...


def cookie_secure(mode: str, scheme: str) -> bool:
    """Whether the session cookie is Secure: ``CONSOLE__SECURE_COOKIE`` "always", or "auto"
    and the request came over https."""
    return mode == "always" or scheme == "https"


def cookie_name(secure: bool) -> str:
    return SECURE_COOKIE if secure else COOKIE


def key_fingerprint(admin_key: str) -> str:
    """What a session keeps of the admin key that opened it (reveals nothing of the key)."""
    return hmac.new(admin_key.encode(), b"ailb-console-session-admin-key",
                    hashlib.sha256).hexdigest()


def id_hash(session_id: str) -> str:
    """What the store keeps of a session id."""
    return hashlib.sha256(session_id.encode()).hexdigest()


def csrf_token(session_id: str) -> str:
    """The session's CSRF token (see the module docstring)."""
    return hmac.new(session_id.encode(), b"ailb-console-csrf", hashlib.sha256).hexdigest()


def csrf_matches(session_id: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(csrf_token(session_id).encode(),
                                                     given.encode())


@dataclass(frozen=True, slots=True)
class Opened:
    session_id: str  # the cookie's value
    csrf: str


class ConsoleSessions:
    """Sessions over a :class:`SessionStore`, with the lifetimes of the live settings (read at
    each call, so a reload applies them), a wall clock and the current admin key."""

    def __init__(self, store: SessionStore, settings: Callable[[], ConsoleSettings],
                 clock: Callable[[], float], admin_key: str) -> None:
        self._store = store
        self._settings = settings
        self._clock = clock
        self._key_fp = key_fingerprint(admin_key)

    async def open(self) -> Opened:
        """A new session. Raises StoreUnavailable."""
        session_id = secrets.token_urlsafe(32)
        s = self._settings()
        await self._store.put_session(id_hash(session_id), self._key_fp, self._clock(),
                                      s.session_idle_s, s.session_max_s)
        return Opened(session_id, csrf_token(session_id))

    async def valid(self, session_id: str) -> bool:
        """Whether the session is live (and mark it used). Raises StoreUnavailable."""
        s = self._settings()
        return await self._store.touch_session(id_hash(session_id), self._key_fp,
                                               self._clock(), s.session_idle_s,
                                               s.session_max_s)

    async def close(self, session_id: str) -> bool:
        """End the session on every gateway. Raises StoreUnavailable."""
        return await self._store.delete_session(id_hash(session_id))

    async def close_all(self) -> int:
        """End every session on every gateway; how many there were. Raises
        StoreUnavailable."""
        return await self._store.delete_all_sessions()
