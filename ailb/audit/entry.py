"""An audit entry and what goes into its ``changes``. Pure: no I/O, time passed in.

The rule this module owns: **no secret is ever recorded.** A field is a secret by its name
(:func:`is_secret`: a key's ``secret_hash``, the key itself, passwords, tokens, API keys...), at
any depth: :func:`redact` replaces its value by ``"[redacted]"`` (the entry still says that it
changed, never what to), and both :func:`diff` and :func:`new_entry` go through it, so nothing
a caller passes can bypass it.

``changes`` is a JSON object. For a change to a record (a key, a team), :func:`diff` of the
record before and after: ``{"field": {"from": old, "to": new}}`` for each field that differs (a
created record: ``from`` is null; a deleted one: ``to`` is null). For other actions (a rate
limit set, routes updated), the caller's own description of what was asked, redacted.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

Door = Literal["http", "grpc", "cli", "console", "process"]
Outcome = Literal["ok", "refused"]
DOORS: Final = ("http", "grpc", "cli", "console", "process")
OUTCOMES: Final = ("ok", "refused")
REDACTED: Final = "[redacted]"
MAX_TEXT: Final = 200  # actor, address, action, target: bounded (they come from callers)
# A client's word about itself (``ailb keys`` sends ``cli:<os user>``): a hint in the actor,
# not proof (anyone with the admin key can send anything)
CLIENT_HEADER: Final = "x-ailb-client"
MAX_CLIENT_HINT: Final = 64
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9._:@+-]")

_SECRET_NAMES: Final = frozenset({
    "key", "secret", "secret_hash", "api_key", "apikey", "password", "passwd", "token",
    "access_token", "refresh_token", "authorization", "admin_key", "private_key",
    "client_secret", "session", "cookie", "csrf", "csrf_token", "database_url", "redis_url",
})
_SECRET_ENDINGS: Final = ("_secret", "_password", "_token", "_api_key", "_key_file",
                          "_apikey")


def is_secret(name: str) -> bool:
    """Whether a field of this name holds a secret (case and ``-``/``_`` insensitive)."""
    folded = name.strip().lower().replace("-", "_")
    return folded in _SECRET_NAMES or folded.endswith(_SECRET_ENDINGS) or "secret" in folded \
        or "password" in folded


def client_hint(value: str | None) -> str:
    """A client's ``x-ailb-client`` header as it may go in an actor: at most
    :data:`MAX_CLIENT_HINT` characters of ``A-Z a-z 0-9 . _ : @ + -`` (any other character
    becomes ``_``); "" for none."""
    return _UNSAFE.sub("_", (value or "").strip()[:MAX_CLIENT_HINT])


def with_client_hint(actor: str, hint: str | None) -> str:
    """``admin-key (cli:alice)``: the actor, and what the client said it is, if anything."""
    shown = client_hint(hint)
    return f"{actor} ({shown})" if shown else actor


def redact(value: Any) -> Any:
    """``value`` as JSON-able data with every secret-named field's value replaced, at any depth
    (mappings and lists are copied; other values that JSON has no word for become text)."""
    if isinstance(value, Mapping):
        return {str(k): REDACTED if is_secret(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, datetime):
        return rfc3339(value)
    return str(value)


def diff(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> dict[str, Any]:
    """``{"field": {"from": old, "to": new}}`` for each field whose value differs between two
    views of a record (None: the record did not exist / no longer exists). A secret field that
    changed is listed with both sides ``"[redacted]"`` (an entry then shows the whole field as
    ``"[redacted]"``: :func:`new_entry` redacts again, by name)."""
    old, new = dict(before or {}), dict(after or {})
    changed: dict[str, Any] = {}
    for name in sorted(set(old) | set(new)):
        was, now = old.get(name), new.get(name)
        if was != now:  # compared as they are; shown redacted
            changed[str(name)] = {"from": redact({name: was})[str(name)],
                                  "to": redact({name: now})[str(name)]}
    return changed


def rfc3339(when: datetime) -> str:
    """UTC, milliseconds, ``Z``: ``2026-12-06T07:41:11.123Z``."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _bounded(text: str) -> str:
    return text[:MAX_TEXT]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One admin action. ``id`` is 0 until the store gives it one (increasing: newer is
    larger)."""

    at: datetime
    actor: str
    door: str
    address: str
    action: str
    target: str
    changes: dict[str, Any]
    outcome: str = "ok"
    id: int = 0

    def view(self) -> dict[str, Any]:
        """The entry as ``GET /admin/audit`` shows it."""
        return {"id": self.id, "at": rfc3339(self.at), "actor": self.actor, "door": self.door,
                "address": self.address, "action": self.action, "target": self.target,
                "changes": self.changes, "outcome": self.outcome}


def new_entry(at: datetime, *, actor: str, door: str, action: str, target: str = "",
              changes: Mapping[str, Any] | None = None, address: str = "",
              outcome: str = "ok") -> AuditEntry:
    """An entry to record, its ``changes`` redacted. Raises ValueError for a door or outcome
    that is not one of :data:`DOORS` / :data:`OUTCOMES` (a bug of the caller)."""
    if door not in DOORS:
        raise ValueError(f"audit door {door!r}: one of {', '.join(DOORS)}")
    if outcome not in OUTCOMES:
        raise ValueError(f"audit outcome {outcome!r}: one of {', '.join(OUTCOMES)}")
    return AuditEntry(at.astimezone(UTC), _bounded(actor), door, _bounded(address),
                      _bounded(action), _bounded(target), redact(dict(changes or {})), outcome)
