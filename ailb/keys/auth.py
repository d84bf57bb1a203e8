"""Authentication: turn a request's credential into a :class:`Principal`, or refuse it.

Two kinds of credential: the admin key (``AILB_ADMIN_KEY`` or the generated one), and virtual
keys (``sk-ailb-<id>-<secret>``) from the key registry. Both are compared in constant time.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ailb.config.values import Secret
from ailb.errors import AuthenticationFailed
from ailb.keys.records import KeyRecord, secret_matches, split_key


class HeaderSource(Protocol):
    """Case-insensitive header lookup (werkzeug's ``Headers``, a lowercase dict, gRPC metadata)."""

    def get(self, key: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller. ``key_id`` is safe to log; the secret never leaves the authenticator."""

    key_id: str
    is_admin: bool = False
    key: KeyRecord | None = None  # a virtual key's record (limits, budget, allowed models)


class Authenticator(Protocol):
    def authenticate(self, headers: HeaderSource) -> Principal:
        """Raises AuthenticationFailed for a missing, unknown, revoked or expired key."""
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
