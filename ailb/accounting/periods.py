"""Budget periods. Pure. Spend is kept per (key, period), so a new period starts at zero by
itself: nothing ever resets a counter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Final

PERIODS: Final = ("monthly", "weekly", "daily")


def period_of(now: datetime, kind: str) -> str:
    """The period ``now`` (any timezone) falls in, in UTC: ``2026-11``, ``2026-W48``,
    ``2026-11-27``."""
    utc = now.astimezone(UTC)
    if kind == "daily":
        return utc.strftime("%Y-%m-%d")
    if kind == "weekly":
        year, week, _ = utc.isocalendar()
        return f"{year}-W{week:02d}"
    return utc.strftime("%Y-%m")


def period_start(now: datetime, kind: str) -> datetime:
    utc = now.astimezone(UTC)
    day = utc.replace(hour=0, minute=0, second=0, microsecond=0)
    if kind == "daily":
        return day
    if kind == "weekly":
        return day - timedelta(days=utc.weekday())
    return day.replace(day=1)


def period_end(now: datetime, kind: str) -> datetime:
    """When the period ``now`` falls in ends (the next one's start), in UTC."""
    start = period_start(now, kind)
    if kind == "daily":
        return start + timedelta(days=1)
    if kind == "weekly":
        return start + timedelta(days=7)
    return (start + timedelta(days=32)).replace(day=1)
