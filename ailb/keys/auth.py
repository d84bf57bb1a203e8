"""Authentication: turn a request's credential into a :class:`Principal`, or refuse it.

Two kinds of credential: the admin key (``AILB_ADMIN_KEY`` or the generated one), and virtual
keys (``sk-ailb-<id>-<secret>``) from the key registry. Both are compared in constant time.
Every door (HTTP, gRPC, the admin API) authenticates through :class:`ThrottledAuthenticator`:
failed authentications are counted per client address, and an address that failed too often
gets 429 for every key that does not verify (the rules: :mod:`ailb.keys.throttle`).
"""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from ailb import logs
from ailb.config.values import Secret
from ailb.errors import AuthenticationFailed, AuthThrottled
from ailb.keys.records import KeyRecord, secret_matches, split_key
from ailb.keys.throttle import AuthThrottle

_log = logging.getLogger("ailb.auth")
Door = Literal["http", "grpc"]


class HeaderSource(Protocol):
    """Case-insensitive header lookup (werkzeug's ``Headers``, a lowercase dict, gRPC metadata)."""

    def get(self, key: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller. ``key_id`` is safe to log; the secret never leaves the authenticator."""

    key_id: str
    is_admin: bool = False
    key: KeyRecord | None = None  # a virtual key's record (limits, budget, allowed models)


@dataclass(frozen=True, slots=True)
class Caller:
    """Where a request comes from: the client's address ("" when unknown) and the door."""

    address: str
    door: Door


class Authenticator(Protocol):
    def authenticate(self, headers: HeaderSource, caller: Caller) -> Principal:
        """Raises AuthThrottled (429) while the caller's address may not try keys,
        AuthenticationFailed (401) for a missing, unknown, revoked or expired key."""
        ...


class KeyLookup(Protocol):
    def get(self, key_id: str) -> KeyRecord | None: ...


def bearer_token(headers: HeaderSource) -> str | None:
    """The key from ``Authorization: Bearer <key>``, or from ``x-api-key`` (Anthropic clients)."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        return None
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


class KeyAuthenticator:
    """The admin key and every virtual key of the registry."""

    def __init__(self, admin_key: Secret, keys: KeyLookup,
                 clock: Callable[[], datetime]) -> None:
        if not admin_key:
            raise ValueError("the admin key must not be empty")
        self._admin = admin_key.value.encode()
        self._keys = keys
        self._clock = clock

    def authenticate(self, headers: HeaderSource) -> Principal:
        """The key's principal. Raises AuthenticationFailed for a missing, unknown, revoked or
        expired key."""
        token = bearer_token(headers)
        if token is None:
            raise AuthenticationFailed(
                "You didn't provide an API key. Send it as `Authorization: Bearer <key>`.")
        if hmac.compare_digest(token.encode(), self._admin):
            return Principal(key_id="admin", is_admin=True)
        parts = split_key(token)
        record = self._keys.get(parts[0]) if parts else None
        if parts is None or record is None or not secret_matches(record, parts[1]):
            raise AuthenticationFailed("Incorrect API key provided.")
        if not record.active:
            raise AuthenticationFailed("This API key has been revoked.", code="key_revoked")
        if not record.usable(self._clock()):
            raise AuthenticationFailed("This API key has expired.", code="key_expired")
        return Principal(key_id=record.id, key=record)


AuthEvent = Literal["failed", "throttled"]


class ThrottledAuthenticator:
    """:class:`KeyAuthenticator` behind the failed-authentication throttle (per worker
    process). ``monotonic``: the throttle's clock; ``count``: told of each failure and each
    request refused by the throttle, with its door (the metrics)."""

    def __init__(self, keys: KeyAuthenticator, throttle: AuthThrottle,
                 monotonic: Callable[[], float],
                 count: Callable[[AuthEvent, Door], None] = lambda event, door: None) -> None:
        self._keys = keys
        self._throttle = throttle
        self._now = monotonic
        self._count = count

    def authenticate(self, headers: HeaderSource, caller: Caller) -> Principal:
        """A key that verifies passes even while its address is throttled (behind a proxy or
        NAT, one client's stale key must not lock everyone else out); a key that does not
        verify is refused 429 while the address is throttled, else 401 and counted. A revoked
        or expired key whose secret matched is no guess: 401, not counted."""
        now = self._now()
        try:
            return self._keys.authenticate(headers)
        except AuthenticationFailed as exc:
            self._count("failed", caller.door)
            wait = self._throttle.wait(caller.address, now)
            if wait is not None:
                self._count("throttled", caller.door)
                seconds = math.ceil(wait)
                raise AuthThrottled(
                    "Too many failed authentications from your address; try again in "
                    f"{seconds} second{'s' if seconds != 1 else ''}.",
                    retry_after_s=wait) from None
            if exc.code in ("key_revoked", "key_expired"):
                raise
            if self._throttle.failed(caller.address, now):
                policy = self._throttle.policy
                logs.event(_log, "authentication throttled: too many failed keys from one "
                           "address", logging.WARNING, address=caller.address,
                           door=caller.door, failures=policy.failures,
                           window_s=policy.window_s)
            raise
