"""What happened during one request, for its notes (headers or metadata), the access log,
metrics and settlement. One per request, owned by its frame; never shared between requests.

Who writes what: the pipeline writes what was asked (``model``, ``stream``), its ``notes``
and the key's ``ticket``; the router and its streams write how it was served (``route``,
``strategy``, ``attempts``, ``deployment``..., ``usage``, ``chunks``, upstream timings); the
stream relay writes ``client_s``; ``trace`` is the frame's, its spans added by all of them.
The outcome (status, error kind) is the frame's own."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ailb.model import Usage

if TYPE_CHECKING:
    from ailb.accounting.gate import Ticket
    from ailb.telemetry.spans import Trace


@dataclass(slots=True)
class Exchange:
    request_id: str
    started: float = field(default_factory=time.perf_counter)
    model: str = ""  # what the client asked for (logged)
    route: str = ""  # the resolved route's bounded label (metrics)
    deployment: str = ""
    upstream_model: str = ""
    provider: str = ""
    stream: bool = False
    upstream_s: float = 0.0  # time spent waiting on the upstream
    client_s: float = 0.0  # streams: time spent waiting for the client to take a chunk
    first_token_s: float | None = None  # streams: start -> first upstream chunk
    usage: Usage | None = None
    strategy: str = ""
    attempts: int = 0  # deployments tried (a hedge counts)
    degraded: bool = False  # no candidate was healthy: the least-bad one was tried
    hedged: bool = False
    hedge_target: str = ""
    chunks: int = 0  # streams: chunks relayed (about a token each), to charge a cut stream
    ticket: Ticket | None = None  # a virtual key's reservations, settled when the request ends
    cost_usd: float = 0.0  # what its key was charged (once settled)
    notes: dict[str, str] = field(default_factory=dict)  # memory/RAG/cache response headers
    trace: Trace | None = None  # the request's spans; None while tracing is off

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def overhead_s(self) -> float:
        """Time AILB spent itself so far: elapsed minus waiting on upstream and on the client."""
        return max(0.0, self.elapsed() - self.upstream_s - self.client_s)
