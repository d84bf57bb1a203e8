"""The store seam: what the gateway keeps that must outlive a process, or that several gateways
must agree on (keys, teams, spend per key and period, reservations, the spend ledger).

A team's spend and reservations are kept like a key's, under the subject id ``team:<id>``
(:func:`ailb.accounting.teams.subject`): the same calls serve both.

The interface is shaped for a database across a network: every call may fail or time out, and
then raises ``StoreUnavailable`` (503) -- never a driver's own exception. A reservation is one
atomic check-and-take that returns its id; settling names that id, so a settle retried after a
timeout is harmless (the second one finds nothing to settle). Settlements travel with their
ledger rows, in batches: one transaction settles many requests. The audit log of admin
actions (:mod:`ailb.audit`) is kept here too, so every gateway sharing the store shows the
same one. The embedded implementation is :class:`ailb.keys.store.SqliteStore`; PostgreSQL and
Redis can stand behind the same methods.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from ailb.audit.entry import AuditEntry
from ailb.keys.records import KeyRecord, TeamRecord


@dataclass(frozen=True, slots=True)
class LedgerRow:
    request_id: str
    at: datetime
    key_id: str
    model: str
    deployment: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost_usd: float
    status: int
    latency_ms: float
    team: str = ""  # the key's team at request time ("" for none)


@dataclass(frozen=True, slots=True)
class Settlement:
    """A reservation replaced by what the call actually cost."""

    reservation_id: str
    usd: float


class Reserved(NamedTuple):
    """A reservation recorded in the store."""

    id: str
    spent: float  # the key's spend for the period right after it (every gateway's)


class Store(Protocol):
    async def reserve(self, key_id: str, period: str, usd: float,
                      budget_usd: float | None) -> Reserved | None:
        """Add ``usd`` to the key's spend for ``period`` and record the reservation, in one
        atomic step, before the call it pays for (write-ahead: a process killed mid-call leaves
        the spend at or above what was served). With a ``budget_usd``, nothing is taken if the
        spend would pass it. Returns the reservation (its id, and the spend after it), or None when
        the budget refused it.
        Raises StoreUnavailable."""
        ...

    async def settle(self, settlements: Sequence[Settlement],
                     rows: Sequence[LedgerRow]) -> None:
        """Replace each reservation's amount by its actual cost in its key's spend (and forget
        the reservation), and append the ledger rows: one transaction, all or none. A
        reservation already settled (or unknown) changes nothing, so a batch retried after a
        failure settles nothing twice (a store that can fail *after* committing should also
        skip rows whose ``request_id`` it already holds). Raises StoreUnavailable."""
        ...

    async def read(self, key_id: str, period: str) -> float:
        """The key's spend for ``period`` (open reservations included). Raises
        StoreUnavailable."""
        ...

    async def usage(self, key_id: str, since: datetime) -> list[dict[str, Any]]:
        """The key's ledger since ``since``: requests, prompt and completion tokens and cost
        per (day, model), ordered by day then model. Raises StoreUnavailable."""
        ...

    async def keys(self) -> list[KeyRecord]:
        """Every key, oldest first. Raises StoreUnavailable."""
        ...

    async def put_key(self, key: KeyRecord) -> None:
        """Insert or replace a key (all fields), and advance ``keys_version``. Raises
        StoreUnavailable."""
        ...

    async def keys_version(self) -> int:
        """A number that changes whenever a key or a team is put or a team deleted (by any
        gateway sharing the store): gateways keep the keys and teams in memory and reload them
        when it moves. Raises StoreUnavailable."""
        ...

    async def teams(self) -> list[TeamRecord]:
        """Every team, oldest first. Raises StoreUnavailable."""
        ...

    async def put_team(self, team: TeamRecord) -> None:
        """Insert or replace a team (all fields), and advance ``keys_version``. Raises
        StoreUnavailable."""
        ...

    async def add_audit(self, entry: AuditEntry) -> int:
        """Append an admin action to the audit log (its ``id`` ignored); returns the id given
        to it, larger than every earlier one. Committed when it returns. Raises
        StoreUnavailable."""
        ...

    async def audit(self, limit: int, before: int | None = None, action: str | None = None,
                    target: str | None = None) -> list[AuditEntry]:
        """Up to ``limit`` audit entries, newest (largest id) first: only ids below ``before``,
        only that exact ``action`` and ``target`` when given. Raises StoreUnavailable."""
        ...

    async def delete_team(self, team_id: str) -> bool:
        """Remove a team (its spend and ledger rows stay), and advance ``keys_version``;
        False when there was none. Raises StoreUnavailable."""
        ...

    async def spend_report(self, start: datetime, end: datetime, group_by: Sequence[str],
                           filters: Mapping[str, str]) -> list[dict[str, Any]]:
        """The ledger's rows with ``start <= at < end``, matching ``filters`` (``key_id``,
        ``team``, ``model``: equal), summed per group: ``group_by`` names some of ``day``
        (UTC), ``key_id``, ``team``, ``model``. Each group: those fields, ``requests``,
        ``prompt_tokens``, ``completion_tokens``, ``cost_usd``; ordered by the group's fields.
        Raises StoreUnavailable."""
        ...

    async def ping(self) -> None:
        """One cheap round trip: returns when the store answers. Raises StoreUnavailable."""
        ...
