"""Key fields as JSON: validation of admin API bodies (and YAML entries) and the public view.
Pure. Errors name the field in ``param``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from ailb.errors import InvalidRequest
from ailb.keys.records import KeyRecord

FIELDS: Final = ("name", "owner", "team", "expires_at", "active", "allowed_models", "rpm_limit",
                 "tpm_limit", "max_parallel_requests", "monthly_budget_usd", "metadata",
                 "rag_collections")
# A RAG collection name (letters, digits, . _ -) or a glob over them (* ? [...]).
_COLLECTION_PATTERN: Final = re.compile(r"[A-Za-z0-9._\-*?\[\]!]{1,100}")


MAX_LIMIT: Final = 2**53  # exact in JSON numbers and floats; fits every store's integer column
MAX_BUDGET_USD: Final = 1e15


def _limit(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_LIMIT:
        raise InvalidRequest(f"'{name}' must be an integer from 1 to {MAX_LIMIT}, or null.",
                             param=name)
    return value


def parse_fields(body: Mapping[str, Any], *, creating: bool) -> dict[str, Any]:
    """KeyRecord fields from a JSON object. Raises InvalidRequest."""
    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise InvalidRequest(f"Unknown field '{unknown[0]}'. Known: {', '.join(FIELDS)}.",
                             param=unknown[0])
    out: dict[str, Any] = {}
    if creating and not isinstance(body.get("name"), str):
        raise InvalidRequest("'name' is required and must be a string.", param="name")
    for name in ("name", "owner", "team"):
        if name in body:
            if not isinstance(body[name], str) or len(body[name]) > 200:
                raise InvalidRequest(f"'{name}' must be a string of at most 200 characters.",
                                     param=name)
            out[name] = body[name]
    if "expires_at" in body:
        raw = body["expires_at"]
        if raw is None:
            out["expires_at"] = None
        else:
            try:
                when = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
            except ValueError:
                raise InvalidRequest("'expires_at' must be an RFC 3339 time.",
                                     param="expires_at") from None
            if when.tzinfo is None:
                raise InvalidRequest("'expires_at' needs a timezone (e.g. Z).",
                                     param="expires_at")
            out["expires_at"] = when
    if "active" in body:
        if not isinstance(body["active"], bool):
            raise InvalidRequest("'active' must be true or false.", param="active")
        out["active"] = body["active"]
    if "allowed_models" in body:
        models = body["allowed_models"]
        if models is None:
            models = []
        if not isinstance(models, list) or not all(isinstance(m, str) and m for m in models):
            raise InvalidRequest("'allowed_models' must be a list of model names or globs.",
                                 param="allowed_models")
        out["allowed_models"] = tuple(models)
    if "rag_collections" in body:
        granted = body["rag_collections"]
        if granted is None:
            granted = []
        if not isinstance(granted, list) or not all(
                isinstance(g, str) and _COLLECTION_PATTERN.fullmatch(g) for g in granted):
            raise InvalidRequest("'rag_collections' must be a list of RAG collection names or "
                                 "globs (e.g. \"docs-*\").", param="rag_collections")
        out["rag_collections"] = tuple(granted)
    for name in ("rpm_limit", "tpm_limit", "max_parallel_requests"):
        if name in body:
            out[name] = _limit(name, body[name])
    if "monthly_budget_usd" in body:
        budget = body["monthly_budget_usd"]
        if budget is not None and (not isinstance(budget, int | float)
                                   or isinstance(budget, bool)
                                   or not 0 <= budget <= MAX_BUDGET_USD):  # NaN fails too
            raise InvalidRequest(f"'monthly_budget_usd' must be a number from 0 to "
                                 f"{MAX_BUDGET_USD:.0e}, or null.", param="monthly_budget_usd")
        out["monthly_budget_usd"] = None if budget is None else float(budget)
    if "metadata" in body:
        if not isinstance(body["metadata"], dict):
            raise InvalidRequest("'metadata' must be an object.", param="metadata")
        out["metadata"] = dict(body["metadata"])
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
