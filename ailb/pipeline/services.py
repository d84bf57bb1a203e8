"""Everything a request handler needs, built once by the supervisor and passed explicitly."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ailb.accounting.gate import Gate
from ailb.accounting.outage import SharedHealth
from ailb.audit.log import AuditLog
from ailb.caches.response import ResponseCache
from ailb.config.schema import Settings
from ailb.console.sessions import ConsoleSessions
from ailb.health import HealthBoard
from ailb.keys.auth import Authenticator
from ailb.keys.registry import KeyRegistry
from ailb.limits.runtime import RuntimeLimits
from ailb.memory.service import Memory
from ailb.metrics import Metrics
from ailb.pipeline.drain import Drain
from ailb.pipeline.recent import RecentRequests
from ailb.rag.ingest_jobs import IngestJobs
from ailb.rag.service import Rag
from ailb.responses.state import ResponseStore
from ailb.routing.router import Router
from ailb.stats_window import StatsWindow
from ailb.telemetry.spans import Tracer
from ailb.workers.recent_files import RecentFiles


@dataclass(slots=True)
class ConfigState:
    """Which configuration is live, and why the last reload was refused (if it was)."""

    generation: int = 1
    loaded_at: float = field(default_factory=time.time)
    last_error: str | None = None
    failures: int = 0


@dataclass(slots=True)
class Services:
    settings: Settings
    router: Router
    board: HealthBoard
    metrics: Metrics
    auth: Authenticator
    drain: Drain
    gate: Gate
    keys: KeyRegistry
    runtime_limits: RuntimeLimits
    audit: AuditLog  # admin actions: ``await services.audit.record(...)`` (see ailb/audit/log.py)
    admin_key_file: Path | None = None
    config: ConfigState = field(default_factory=ConfigState)
    window: StatsWindow = field(default_factory=StatsWindow)
    memory: Memory | None = None  # ENABLE_MEMORY
    rag: Rag | None = None  # ENABLE_RAG
    rag_jobs: IngestJobs | None = None  # with rag: large document requests as jobs
    responses: ResponseCache | None = None  # CACHE.response
    stored_responses: ResponseStore | None = None  # the Responses API's state (the store)
    shared: SharedHealth = field(default_factory=lambda: SharedHealth(("store",)))
    tracer: Tracer | None = None  # OTEL_* with an endpoint: the request spans' tracer
    console: ConsoleSessions | None = None  # the web console's sessions (in the store)
    recent: RecentRequests = field(default_factory=RecentRequests)  # this worker's last requests
    recent_files: RecentFiles | None = None  # WORKERS > 1: every worker's recent requests
