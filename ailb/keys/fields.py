"""Key fields as JSON: validation of admin API bodies (and YAML entries) and the public view.
Pure. Errors name the field in ``param``."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from msgspec import UNSET

from ailb.errors import InvalidRequest
from ailb.keys.records import KeyRecord
from ailb.schemas.admin import MAX_BUDGET_USD, KeyCreate, KeyUpdate
from ailb.schemas.check import conform
from ailb.schemas.common import JSON_SAFE_MAX

FIELDS: Final = ("name", "owner", "team", "expires_at", "active", "allowed_models", "rpm_limit",
                 "tpm_limit", "max_parallel_requests", "monthly_budget_usd", "metadata",
                 "rag_collections")
MAX_LIMIT: Final = JSON_SAFE_MAX
__all__ = ["FIELDS", "MAX_BUDGET_USD", "MAX_LIMIT", "parse_fields", "public_view", "usage_view"]


def parse_fields(body: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    """KeyRecord fields from a JSON object (or a YAML entry), held to
    :class:`~ailb.schemas.admin.KeyCreate` or :class:`~ailb.schemas.admin.KeyUpdate`.
    Raises InvalidRequest naming the field."""
    given = dict(body)
    if isinstance(given.get("expires_at"), datetime):  # YAML reads a timestamp as one
        given["expires_at"] = given["expires_at"].isoformat()
    shape = conform(given, KeyCreate if creating else KeyUpdate)
    out: dict[str, Any] = {name: getattr(shape, name) for name in FIELDS
                           if getattr(shape, name) is not UNSET}
    if out.get("expires_at") is not None:
        try:
            when = datetime.fromisoformat(str(out["expires_at"]).replace("Z", "+00:00"))
        except ValueError:
            raise InvalidRequest("'expires_at' must be an RFC 3339 time.",
                                 param="expires_at") from None
        if when.tzinfo is None:
            raise InvalidRequest("'expires_at' needs a timezone (e.g. Z).", param="expires_at")
        try:
            when.astimezone(UTC)  # a time at the edge of the range has no UTC equivalent
        except OverflowError:
            raise InvalidRequest("'expires_at' is out of range (years 1 to 9999, in UTC).",
                                 param="expires_at") from None
        out["expires_at"] = when
    for name in ("allowed_models", "rag_collections"):
        if name in out:
            out[name] = tuple(out[name] or ())
    if out.get("monthly_budget_usd") is not None:
        out["monthly_budget_usd"] = float(out["monthly_budget_usd"])
    return out


def public_view(key: KeyRecord) -> dict[str, Any]:
    """A key as the admin API shows it (never its secret or hash)."""
    return {
        "id": key.id, "name": key.name, "owner": key.owner, "team": key.team,
        "created_at": key.created_at.isoformat(),
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "active": key.active, "allowed_models": list(key.allowed_models),
        "rpm_limit": key.rpm_limit, "tpm_limit": key.tpm_limit,
        "max_parallel_requests": key.max_parallel_requests,
        "monthly_budget_usd": key.monthly_budget_usd, "metadata": dict(key.metadata),
        "rag_collections": list(key.rag_collections), "source": key.source,
    }


def usage_view(key: KeyRecord, period: str, spent: float,
               rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A key's usage as the admin API shows it (``/admin/keys/{id}/usage``, ``ailb keys
    usage``): the period's spend against its budget, and the ledger's rows since the period
    began."""
    return spend_view("key_id", key.id, key.monthly_budget_usd, period, spent, rows)


def spend_view(subject: str, subject_id: str, budget: float | None, period: str, spent: float,
               rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A key's or a team's usage (``subject``: "key_id" or "team"): the period's spend against
    its budget, and the ledger's rows since the period began."""
    return {
        subject: subject_id, "period": period, "spend_usd": round(spent, 6),
        "budget_usd": budget,
        "budget_remaining_usd": None if budget is None else round(max(0.0, budget - spent), 6),
        "requests": sum(r["requests"] for r in rows),
        "by_day_and_model": rows,
    }
