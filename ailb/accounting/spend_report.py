"""The spend report (``GET /admin/spend``): its query, its totals, and its CSV. Pure; the sums
are the store's (:meth:`ailb.accounting.store.Store.spend_report`).

Rules, stated once:

* ``start`` and ``end`` are UTC days, both included (``end`` defaults to today, ``start`` to the
  first day of ``end``'s month); at most ``MAX_DAYS`` days.
* ``group_by`` is a comma-separated subset of ``key``, ``team``, ``model``, ``day`` (default
  ``day``); rows carry those fields in that order (``key`` as ``key_id`` and ``key_name``), then
  ``requests``, ``prompt_tokens``, ``completion_tokens``, ``cost_usd``.
* Filters ``key_id``, ``team``, ``model`` keep the rows equal to them.
* ``team`` is the key's team when the request was made (a key moved later keeps its old rows).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

from ailb.errors import InvalidRequest

GROUPS: Final = {"day": "day", "key": "key_id", "team": "team", "model": "model"}
FILTERS: Final = ("key_id", "team", "model")
SUMS: Final = ("requests", "prompt_tokens", "completion_tokens", "cost_usd")
MAX_DAYS: Final = 3660
MAX_FILTER: Final = 200


@dataclass(frozen=True, slots=True)
class Query:
    start: date
    end: date  # included
    group_by: tuple[str, ...]  # names from GROUPS' keys, in the order asked
    filters: Mapping[str, str]
    csv: bool

    @property
    def since(self) -> datetime:
        return datetime.combine(self.start, time(), UTC)

    @property
    def until(self) -> datetime:
        """The end, excluded: the day after ``end`` starts."""
        return datetime.combine(self.end + timedelta(days=1), time(), UTC)

    @property
    def fields(self) -> list[str]:
        """The store's group fields."""
        return [GROUPS[name] for name in self.group_by]


def _day(args: Mapping[str, str], name: str, default: date) -> date:
    text = args.get(name)
    if text is None or text == "":
        return default
    try:
        return date.fromisoformat(text) if len(text) == 10 else _bad(name)
    except ValueError:
        return _bad(name)


def _bad(name: str) -> date:
    raise InvalidRequest(f"'{name}' must be a day: YYYY-MM-DD.", param=name)


def parse_query(args: Mapping[str, str], today: date) -> Query:
    """The report's query from the URL's arguments. Raises InvalidRequest naming the
    argument."""
    end = _day(args, "end", today)
    start = _day(args, "start", end.replace(day=1))
    if start > end:
        raise InvalidRequest("'start' is after 'end'.", param="start")
    if (end - start).days >= MAX_DAYS:
        raise InvalidRequest(f"At most {MAX_DAYS} days per report.", param="start")
    names = [n.strip() for n in args.get("group_by", "day").split(",") if n.strip()]
    unknown = [n for n in names if n not in GROUPS]
    if unknown or not names:
        raise InvalidRequest("'group_by' is a comma-separated list of key, team, model, day.",
                             param="group_by")
    fmt = args.get("format", "json")
    if fmt not in ("json", "csv"):
        raise InvalidRequest("'format' is json or csv.", param="format")
    filters = {name: args[name] for name in FILTERS if args.get(name)}
    for name, value in filters.items():
        if len(value) > MAX_FILTER:
            raise InvalidRequest(f"'{name}' is longer than {MAX_FILTER} characters.",
                                 param=name)
    return Query(start, end, tuple(dict.fromkeys(names)), filters, fmt == "csv")


def columns(query: Query) -> list[str]:
    out: list[str] = []
    for name in query.group_by:
        out += ["key_id", "key_name"] if name == "key" else [GROUPS[name]]
    return [*out, *SUMS]


def rows(query: Query, stored: Sequence[Mapping[str, Any]],
         key_name: Callable[[str], str]) -> list[dict[str, Any]]:
    """The store's groups as the report's rows (keys named, costs rounded to the
    micro-dollar)."""
    out = []
    for group in stored:
        row: dict[str, Any] = {}
        for name in columns(query):
            if name == "key_name":
                row[name] = key_name(str(group["key_id"]))
            elif name == "cost_usd":
                row[name] = round(float(group[name] or 0.0), 6)
            elif name in SUMS:
                row[name] = int(group[name] or 0)
            else:
                row[name] = str(group[name])
        out.append(row)
    return out


def totals(report_rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {name: sum(int(r[name]) for r in report_rows)
                           for name in SUMS if name != "cost_usd"}
    out["cost_usd"] = round(sum(float(r["cost_usd"]) for r in report_rows), 6)
    return out


def as_json(query: Query, report_rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"object": "spend_report", "start": query.start.isoformat(),
            "end": query.end.isoformat(), "group_by": list(query.group_by),
            "data": report_rows, "totals": totals(report_rows)}


def as_csv(query: Query, report_rows: Sequence[Mapping[str, Any]]) -> str:
    """A header row, then one line per group. A cell that a spreadsheet would run as a formula
    (``=``, ``+``, ``-``, ``@`` first) is quoted with a leading apostrophe."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    names = columns(query)
    writer.writerow(names)
    for row in report_rows:
        writer.writerow([_cell(row[name]) for name in names])
    return out.getvalue()


def _cell(value: Any) -> Any:
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value
