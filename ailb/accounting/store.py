"""The store seam: what the gateway keeps that must outlive a process, or that several gateways
must agree on (keys, spend per key and period, reservations, the spend ledger).

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

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from ailb.audit.entry import AuditEntry
from ailb.keys.records import KeyRecord


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
        """A number that changes whenever a key is put (by any gateway sharing the store):
        gateways keep the keys in memory and reload them when it moves. Raises
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

    async def ping(self) -> None:
        """One cheap round trip: returns when the store answers. Raises StoreUnavailable."""
        ...
