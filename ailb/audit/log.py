"""Recording admin actions in the store, and reading them back (``GET /admin/audit``).

How a door records an action (HTTP, gRPC, the console, a team route...)::

    await services.audit.record(actor="admin-key", door="http", address=caller.address,
                                action="team.create", target=team_id,
                                changes=diff(None, view_of_team))

The CLI, with a store it opened itself::

    await AuditLog(store).record(actor=cli_actor(), door="cli", action="key.create",
                                 target=key_id, changes=diff(None, view))

``record`` returns once the entry is written (durable), shielded from cancellation: a change
that was made is never left unrecorded because its caller was cancelled meanwhile. Record
*after* the change is committed, and only for callers who authenticated as the admin (so an
anonymous client cannot fill the log); a refused attempt after that is ``outcome="refused"``.

When the store refuses the write, the action has already happened: ``record`` logs an ERROR
(with the entry, which holds no secret), counts ``ailb_audit_write_failures_total`` and
returns None; the admin's answer still says what happened. Failing the answer of a change that
was made would only invite the caller to make it again.
"""

from __future__ import annotations

import getpass
import logging
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import trio

from ailb import logs
from ailb.audit.entry import AuditEntry, new_entry
from ailb.errors import StoreUnavailable

MAX_PAGE: Final = 500
DEFAULT_PAGE: Final = 100
_log = logging.getLogger("ailb.audit")


class AuditStore(Protocol):
    async def add_audit(self, entry: AuditEntry) -> int:
        """Append an entry (its ``id`` is ignored); returns the id given to it. Raises
        StoreUnavailable."""
        ...

    async def audit(self, limit: int, before: int | None = None, action: str | None = None,
                    target: str | None = None) -> list[AuditEntry]:
        """Up to ``limit`` entries, newest (largest id) first, with an id below ``before``, of
        that exact ``action`` and ``target`` when given. Raises StoreUnavailable."""
        ...


class FailureCounter(Protocol):
    def inc(self, amount: float = 1) -> None: ...


def cli_actor() -> str:
    """The actor of a CLI change: ``cli:<the OS user running it>``."""
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no user name for this uid (a bare container)
        return f"cli:uid-{os.getuid()}"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class AuditLog:
    """The log over a store. ``failures`` counts the writes the store refused (the metrics'
    ``audit_write_failures``; none for the CLI)."""

    def __init__(self, store: AuditStore, failures: FailureCounter | None = None,
                 now: Callable[[], datetime] = _utc_now) -> None:
        self._store = store
        self._failures = failures
        self._now = now

    async def record(self, *, actor: str, door: str, action: str, target: str = "",
                     changes: Mapping[str, Any] | None = None, address: str = "",
                     outcome: str = "ok") -> AuditEntry | None:
        """Write one entry (``changes`` redacted: see :mod:`ailb.audit.entry`); returns it
        with its id once it is in the store, or None when the store refused it (logged and
        counted, see the module docstring). ``door``: http, grpc, cli, console or process;
        ``outcome``: ok or refused (ValueError otherwise: a bug of the caller)."""
        entry = new_entry(self._now(), actor=actor, door=door, action=action, target=target,
                          changes=changes, address=address, outcome=outcome)
        with trio.CancelScope(shield=True):
            try:
                entry_id = await self._store.add_audit(entry)
            except StoreUnavailable as exc:
                if self._failures is not None:
                    self._failures.inc()
                logs.event(_log, "audit entry not written", logging.ERROR, error=exc.message,
                           **{k: v for k, v in entry.view().items() if k != "id"})
                return None
        return AuditEntry(entry.at, entry.actor, entry.door, entry.address, entry.action,
                          entry.target, entry.changes, entry.outcome, entry_id)

    async def page(self, limit: int = DEFAULT_PAGE, before: int | None = None,
                   action: str | None = None, target: str | None = None) -> dict[str, Any]:
        """``GET /admin/audit``'s answer: ``{"object": "list", "data": [...], "has_more"}``,
        newest first. ``limit`` is clamped to 1..500. Raises StoreUnavailable."""
        limit = max(1, min(MAX_PAGE, limit))
        rows = await self._store.audit(limit + 1, before, action or None, target or None)
        return {"object": "list", "data": [e.view() for e in rows[:limit]],
                "has_more": len(rows) > limit}
