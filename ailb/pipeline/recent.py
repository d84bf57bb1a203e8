"""The last requests this worker process finished, metadata only (``GET /admin/requests/recent``,
the console's live view): a bounded ring in memory, so it costs a few hundred bytes per request
and nothing on any store. With several worker processes each keeps its own and shares it as a
file the others read (:mod:`ailb.workers.recent_files`); :func:`shown` merges them. Pure."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Final

CAPACITY: Final = 500


@dataclass(frozen=True, slots=True)
class Recent:
    """What the list shows of one request: never its prompt or answer."""

    request_id: str
    at: float  # wall-clock seconds (shown as RFC 3339, UTC: formatted when read, not per request)
    key_id: str
    team: str | None
    model: str
    deployment: str | None
    provider: str | None
    stream: bool
    status: int
    latency_ms: float
    prompt_tokens: int | None
    completion_tokens: int | None


class RecentRequests:
    """The ring. ``add`` is called once per finished request, on the event loop."""

    def __init__(self, capacity: int = CAPACITY) -> None:
        self._ring: deque[Recent] = deque(maxlen=capacity)
        self._added = 0

    @property
    def version(self) -> int:
        """How many entries were ever added (changes whenever the ring does)."""
        return self._added

    def add(self, entry: Recent) -> None:
        self._ring.append(entry)
        self._added += 1

    def entries(self) -> list[Recent]:
        """Every entry, newest first."""
        return list(reversed(self._ring))

    def latest(self, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` entries, newest first."""
        return shown(self._ring, limit)


def shown(entries: Iterable[Recent], limit: int) -> list[dict[str, Any]]:
    """Up to ``limit`` of ``entries`` (from one ring or several; a request seen twice is shown
    once), newest first, ``at`` as RFC 3339 UTC."""
    unique = {entry.request_id: entry for entry in entries}
    newest = sorted(unique.values(), key=lambda entry: entry.at, reverse=True)[:limit]
    out: list[dict[str, Any]] = []
    for entry in newest:
        view = asdict(entry)
        view["at"] = datetime.fromtimestamp(entry.at, UTC).isoformat(
            timespec="milliseconds").replace("+00:00", "Z")
        out.append(view)
    return out
