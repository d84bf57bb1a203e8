"""The last requests this worker process finished, metadata only (``GET /admin/requests/recent``,
the console's live view): a bounded ring in memory, so it costs a few hundred bytes per request
and nothing on any store. With several worker processes each keeps its own: the list shows the
requests of the worker that answered the call."""

from __future__ import annotations

from collections import deque
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

    def add(self, entry: Recent) -> None:
        self._ring.append(entry)

    def latest(self, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` entries, newest first."""
        out: list[dict[str, Any]] = []
        for entry in reversed(self._ring):
            if len(out) >= limit:
                break
            shown = asdict(entry)
            shown["at"] = datetime.fromtimestamp(entry.at, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z")
            out.append(shown)
        return out
