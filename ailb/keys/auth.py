"""Authentication: turn a request's credential into a :class:`Principal`, or refuse it.

Today one credential exists, the admin key. Virtual keys (their store, limits and budgets) plug in
behind the same :class:`Authenticator` protocol, so handlers never change.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ailb.config_values import Secret
from ailb.errors import AuthenticationFailed


class HeaderSource(Protocol):
    """Case-insensitive header lookup (werkzeug's ``Headers``, a lowercase dict, gRPC metadata)."""

    def get(self, key: str) -> str | None: ...


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller. ``key_id`` is safe to log; the secret never leaves the authenticator."""

    key_id: str
    is_admin: bool = False
    labels: Mapping[str, str] = field(default_factory=dict)


class Authenticator(Protocol):
    def authenticate(self, headers: HeaderSource) -> Principal:
        """Raises AuthenticationFailed for a missing, unknown, revoked or expired key."""
        ...


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


class AdminKeyAuthenticator:
    """Accepts exactly the admin key, compared in constant time."""

    def __init__(self, admin_key: Secret) -> None:
        if not admin_key:
            raise ValueError("the admin key must not be empty")
        self._key = admin_key.value.encode()

    def authenticate(self, headers: HeaderSource) -> Principal:
        token = bearer_token(headers)
        if token is None:
            raise AuthenticationFailed(
                "You didn't provide an API key. Send it as `Authorization: Bearer <key>`.")
        if not hmac.compare_digest(token.encode(), self._key):
            raise AuthenticationFailed("Incorrect API key provided.")
        return Principal(key_id="admin", is_admin=True)
