"""What ``ailb keys`` prints for people: tables of the admin API's answers. Pure.

A new or rotated key's secret is printed once, after the table, on a line of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

COLUMNS: Final = ("ID", "NAME", "TEAM", "RPM", "TPM", "PARALLEL", "BUDGET", "SPEND", "ACTIVE",
                  "EXPIRES")


def _usd(value: Any) -> str:
    if value is None:
        return "-"
    amount = float(value)
    return f"${amount:,.2f}" if amount == 0 or amount >= 1 else f"${amount:.4f}"


def _text(value: Any) -> str:
    if value is None or value == "" or value == []:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _expires(value: Any) -> str:
    return "-" if value is None else str(value).replace("+00:00", "Z")


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-aligned columns, two spaces apart."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=False)]
    lines = [list(header), *(list(row) for row in rows)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(line, widths,
                                                                         strict=True)).rstrip()
                     for line in lines)


def key_row(key: Mapping[str, Any], spend: float | None) -> list[str]:
    return [key["id"], key["name"], _text(key.get("team")), _text(key.get("rpm_limit")),
            _text(key.get("tpm_limit")), _text(key.get("max_parallel_requests")),
            _usd(key.get("monthly_budget_usd")), _usd(spend), _text(key.get("active")),
            _expires(key.get("expires_at"))]


def key_table(keys: Sequence[Mapping[str, Any]], spends: Mapping[str, float | None]) -> str:
    if not keys:
        return "no keys"
    return table(COLUMNS, [key_row(k, spends.get(k["id"])) for k in keys])


def key_details(key: Mapping[str, Any], spend: float | None) -> str:
    """One key, a field a line."""
    fields = [
        ("id", key["id"]), ("name", key["name"]), ("owner", _text(key.get("owner"))),
        ("team", _text(key.get("team"))), ("active", _text(key.get("active"))),
        ("created", _expires(key.get("created_at"))), ("expires", _expires(key.get("expires_at"))),
        ("allowed models", _text(key.get("allowed_models")) if key.get("allowed_models")
         else "all"),
        ("rag collections", _text(key.get("rag_collections"))),
        ("rpm limit", _text(key.get("rpm_limit"))), ("tpm limit", _text(key.get("tpm_limit"))),
        ("max parallel", _text(key.get("max_parallel_requests"))),
        ("monthly budget", _usd(key.get("monthly_budget_usd"))),
        ("spend this period", _usd(spend)),
        ("metadata", _text(key.get("metadata") or None)),
        ("source", _text(key.get("source"))),
    ]
    width = max(len(name) for name, _ in fields)
    return "\n".join(f"{name.ljust(width)}  {value}" for name, value in fields)


def secret_notice(secret: str) -> str:
    return ("\nThe key's secret, shown this once (it cannot be shown again; store it now):\n"
            f"{secret}")


def usage_text(usage: Mapping[str, Any]) -> str:
    head = [
        f"key {usage['key_id']}, period {usage['period']}: spent {_usd(usage['spend_usd'])} "
        f"of {_usd(usage['budget_usd']) if usage.get('budget_usd') is not None else 'no budget'}"
        + ("" if usage.get("budget_remaining_usd") is None
           else f" ({_usd(usage['budget_remaining_usd'])} left)")
        + f", {usage['requests']} request(s)"]
    rows = usage.get("by_day_and_model") or []
    if rows:
        head += ["", table(("DAY", "MODEL", "REQUESTS", "PROMPT TOKENS", "COMPLETION TOKENS",
                            "COST"),
                           [[str(r.get("day")), str(r.get("model")), _text(r.get("requests")),
                             _text(r.get("prompt_tokens")), _text(r.get("completion_tokens")),
                             _usd(r.get("cost_usd"))] for r in rows])]
    return "\n".join(head)
