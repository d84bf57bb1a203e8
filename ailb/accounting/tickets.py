"""What an admitted request holds until it is settled (:mod:`ailb.accounting.gate`), and the
key's permission and limits as the gate reads them. Values only."""

from __future__ import annotations

from dataclasses import dataclass, field

from ailb.accounting.reservations import KeyLimits, Reservation
from ailb.accounting.shared_limits import Lease
from ailb.errors import PermissionDenied
from ailb.keys.records import KeyRecord


@dataclass(slots=True)
class Hold:
    """What one subject (a key, or its team) took for an admitted request."""

    subject: str
    reservation: Reservation
    reservation_id: str  # the store's
    headers: dict[str, str]
    lease: Lease | None = None  # its hold on shared rate limits (several gateways)


@dataclass(slots=True)
class Ticket:
    """One admitted request's reservation; settled exactly once."""

    key: KeyRecord
    reservation: Reservation
    reservation_id: str  # the store's
    headers: dict[str, str] = field(default_factory=dict)
    settled: bool = False
    lease: Lease | None = None  # its hold on shared rate limits (several gateways)
    team: Hold | None = None  # the key's team's take, when the key is in a team


def require_model(key: KeyRecord, model: str) -> None:
    """Raises PermissionDenied unless ``key`` may use ``model``."""
    if not key.allows_model(model):
        raise PermissionDenied(f"This key may not use the model `{model}`.", param="model",
                               code="model_not_allowed")


def limits_of(key: KeyRecord) -> KeyLimits:
    return KeyLimits(key.rpm_limit, key.tpm_limit, key.max_parallel_requests,
                     key.monthly_budget_usd)
