"""Prometheus metrics on a private registry (one per running gateway, so tests never collide).

With several worker processes (``WORKERS``), ``/metrics`` must show the whole instance, not the
worker that happened to accept the scrape: prometheus_client's multiprocess mode. Each worker
keeps its values in memory-mapped files in one directory (``PROMETHEUS_MULTIPROC_DIR``, set by
the parent for workers only: prometheus_client reads it when it is imported and when a value is
created), and rendering sums the files of every worker. Files are named by worker slot (``w0``,
``w1``...) rather than pid: a restarted worker continues its slot's counters (the instance's
totals never go down) and the directory holds N sets of files however often workers restart.
Gauges say how workers combine (``multiprocess_mode``); the single-process mode ignores it.

The process's own series come from prometheus_client's process, platform and garbage
collector collectors, registered on the private registry. With workers, ``process_*`` has one
series per process of the instance, labelled ``worker`` (:mod:`ailb.metrics_process`), and
``python_gc_*`` is not shown: a process's garbage collector cannot be read from another, and
the answering worker's alone would jump between workers from scrape to scrape.

No ``*_created`` series are shown: they double the number of series for a timestamp nobody
graphs. They are left out when rendering (:class:`_WithoutCreated`)
rather than by ``disable_created_metrics()``, which would flip a global of the library for
the whole process at import time.

Per-key and per-team series (``ailb_key_*``, ``ailb_team_*``) exist only when
``METRICS__PER_KEY_LIMIT`` is above 0, and have at most that many distinct keys (and teams):
the N keys created first (revoked ones included: they keep their place) and the N teams
created first get their own label, every other one counts under ``other``. The choice comes
from the key registry (:class:`Ranked`), which every worker, every restart and every gateway
on the same store loads from the store, so they all label the same keys: the number of series
stays N + 1 however many workers, restarts or keys there are.

This module and :mod:`ailb.metrics_process` are the only ones that import prometheus_client.
"""

from __future__ import annotations

from collections.abc import Iterable, Set
from pathlib import Path
from typing import Protocol

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Metric,
    PlatformCollector,
    ProcessCollector,
    values,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead

from ailb.metrics_process import WorkerProcesses, forget_pid, write_pid
from ailb.metrics_series import RequestSeries


def share_across_workers(directory: Path, slot: str) -> None:
    """In a worker process, before any :class:`Metrics`: values go to files named by ``slot``
    in ``directory`` (``$PROMETHEUS_MULTIPROC_DIR``), and this process's pid too (its
    ``process_*`` series). Process-wide by prometheus_client's design (its value class is a
    module attribute), hence called once, by the worker's start-up only. Raises OSError."""
    values.ValueClass = values.MultiProcessValue(lambda: slot)  # type: ignore[no-untyped-call]
    write_pid(directory, slot)


def forget_worker(directory: Path, slot: str) -> None:
    """The parent, once a worker has exited: its live gauges (in flight, queue sizes...) and
    its ``process_*`` series stop; its counters and histograms stay in the totals."""
    mark_process_dead(slot, str(directory))  # type: ignore[no-untyped-call]
    forget_pid(directory, slot)

OTHER = "other"  # the label of keys and teams past METRICS__PER_KEY_LIMIT
_TIMESTAMP_TYPES = ("counter", "histogram", "summary", "gaugehistogram")


class Ranked(Protocol):
    """Which keys and teams have their own per-key label: the ``limit`` created first
    (:class:`ailb.keys.registry.KeyRegistry`)."""

    def first_key_ids(self, limit: int) -> Set[str]: ...

    def first_team_ids(self, limit: int) -> Set[str]: ...


class _WithoutCreated:
    """A registry's metrics without their ``*_created`` samples (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        for family in self._registry.collect():
            if family.type in _TIMESTAMP_TYPES:
                created = (f"{family.name}_created", f"{family.name}_gcreated")
                family.samples = [s for s in family.samples if s.name not in created]
            yield family


def _process_collectors(registry: CollectorRegistry) -> None:
    """CPU, memory, open files, start time (``process_*``), the Python version
    (``python_info``) and the garbage collector (``python_gc_*``) of this process."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    if GC_COLLECTOR is not None:  # None where the interpreter has no gc statistics
        GCCollector(registry=registry)


def _instance_collectors(registry: CollectorRegistry, shared_dir: Path) -> None:
    """With workers: every worker's files summed, every process's ``process_*`` (labelled
    ``worker``), and the Python version; no ``python_gc_*`` (see the module docstring)."""
    MultiProcessCollector(registry, path=str(shared_dir))  # type: ignore[no-untyped-call]
    registry.register(WorkerProcesses(shared_dir))
    PlatformCollector(registry=registry)


_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class Metrics:
    """Every AILB metric. Label values are bounded: models and deployments come from config."""

    def __init__(self, shared_dir: Path | None = None, per_key_limit: int = 0) -> None:
        """``shared_dir``: a worker's multiprocess directory (see :func:`share_across_workers`);
        rendering then reads every worker's files from it. ``per_key_limit``: see the module
        docstring (0: no per-key or per-team series)."""
        self._shared_dir = shared_dir
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        _process_collectors(r)
        self.requests = Counter(
            "ailb_requests", "Requests answered, by public model, provider and HTTP status.",
            ["model", "provider", "status"], registry=r)
        self.duration = Histogram(
            "ailb_request_duration_seconds", "Whole request time, to the last byte.",
            ["model", "provider"], buckets=_LATENCY_BUCKETS, registry=r)
        self.overhead = Histogram(
            "ailb_gateway_overhead_seconds",
            "Time AILB itself spent on a request: total minus time waiting on upstream.",
            ["provider"], buckets=_OVERHEAD_BUCKETS, registry=r)
        self.ttft = Histogram(
            "ailb_time_to_first_token_seconds", "Streams: request start to first upstream chunk.",
            ["model", "provider"], buckets=_LATENCY_BUCKETS, registry=r)
        self.tokens = Counter(
            "ailb_tokens", "Tokens, by direction (prompt or completion).",
            ["model", "provider", "direction"], registry=r)
        self.prompt_cached = Counter(
            "ailb_prompt_cached_tokens",
            "Prompt tokens the deployment read from its prompt cache (Anthropic "
            "cache_read_input_tokens, OpenAI prompt_tokens_details.cached_tokens).",
            ["deployment"], registry=r)
        self.prompt_cache_writes = Counter(
            "ailb_prompt_cache_write_tokens",
            "Prompt tokens the deployment wrote to its prompt cache (Anthropic "
            "cache_creation_input_tokens).", ["deployment"], registry=r)
        self.in_flight = Gauge("ailb_in_flight_requests", "Requests being served now.",
                               registry=r, multiprocess_mode="livesum")
        # every worker probes; the last probe made by any of them is the answer
        self.provider_up = Gauge(
            "ailb_provider_up", "1 when the deployment's last health probe succeeded.",
            ["deployment", "provider"], registry=r, multiprocess_mode="livemostrecent")
        self.upstream_errors = Counter(
            "ailb_upstream_errors", "Failed upstream calls, by kind.",
            ["deployment", "kind"], registry=r)

        self.attempts = Counter(
            "ailb_upstream_attempts", "Calls to deployments (retries and hedges included).",
            ["deployment", "outcome"], registry=r)
        self.fallbacks = Counter(
            "ailb_fallbacks", "Requests that moved on to another deployment.", ["model"],
            registry=r)
        self.hedges = Counter(
            "ailb_hedges", "Hedged requests: fired, and which attempt won.", ["event"],
            registry=r)
        self.trace_spans = Counter(
            "ailb_trace_spans", "OpenTelemetry spans: exported, or dropped (buffer full, "
            "export failed, ended after shutdown began).", ["outcome"], registry=r)
        self.cooldowns = Counter(
            "ailb_cooldowns", "Deployments put in cooldown, by reason.",
            ["deployment", "reason"], registry=r)

        self.retrieval = Histogram(
            "ailb_retrieval_duration_seconds",
            "Memory recall and RAG retrieval time per request (embedding and search).",
            ["kind"], buckets=(*_OVERHEAD_BUCKETS, 1, 2.5), registry=r)
        self.retrieved = Counter(
            "ailb_retrieved_items", "Memory turns recalled and RAG passages used.", ["kind"],
            registry=r)
        self.cache = Counter(
            "ailb_cache_lookups", "Cache lookups by cache (context, rag, response) and result "
            "(hit, miss; unavailable: the shared store failed, also counted as a miss).",
            ["cache", "result"], registry=r)
        # each worker has its own caches and writer queue: the instance holds their sum
        self.cache_entries = Gauge(
            "ailb_cache_entries", "Entries held by each cache.", ["cache"], registry=r,
            multiprocess_mode="livesum")
        self.cache_bytes = Gauge(
            "ailb_cache_bytes", "Approximate bytes held by each cache.", ["cache"], registry=r,
            multiprocess_mode="livesum")
        # the stores are shared: every worker counts the same records
        self.store_items = Gauge(
            "ailb_vector_store_items",
            "Records in the vector stores: memory turns, RAG chunks (as of the last change).",
            ["store"], registry=r, multiprocess_mode="livemostrecent")
        self.memory_queue = Gauge(
            "ailb_memory_write_queue", "Memory turns waiting for the writer.", registry=r,
            multiprocess_mode="livesum")

        self.shared_up = Gauge(
            "ailb_shared_state_up",
            "1 while a part of the state shared with other gateways answers: store (keys, "
            "spend, budgets, ledger), counters (rate limits); with workers, 0 while any "
            "worker finds it down.", ["part"], registry=r, multiprocess_mode="livemin")
        self.rate_limit_fallbacks = Counter(
            "ailb_rate_limit_fallbacks",
            "Requests admitted or refused by the outage policy while the shared rate-limit "
            "counters could not be reached, by policy (share, closed, open).", ["policy"],
            registry=r)

        self.auth_failures = Counter(
            "ailb_auth_failures", "Failed authentications (a missing, unknown, revoked or "
            "expired key), by door (http, grpc).", ["door"], registry=r)
        self.auth_throttled = Counter(
            "ailb_auth_throttled",
            "Requests refused with 429 before their key was checked, their address having "
            "failed authentication too often (SERVER.auth_failure_limit), by door.", ["door"],
            registry=r)

        self.audit_write_failures = Counter(
            "ailb_audit_write_failures", "Admin actions done but not recorded in the audit "
            "log: the store refused the write (each one is also logged at ERROR).",
            registry=r)
        self.reloads = Counter(
            "ailb_config_reloads", "Configuration reloads, by outcome (ok, failed).",
            ["outcome"], registry=r)

        self.per_key = PerKeyMetrics(r, per_key_limit) if per_key_limit > 0 else None
        # labelled children by (model, provider): as bounded as the series themselves
        self._request_series: dict[tuple[str, str], RequestSeries] = {}

    def request_series(self, model: str, provider: str) -> RequestSeries:
        """The series of a finished request (:func:`ailb.pipeline.request_log.finish`)."""
        series = self._request_series.get((model, provider))
        if series is None:
            series = self._request_series[(model, provider)] = RequestSeries(self, model,
                                                                             provider)
        return series

    def finished(self, ranked: Ranked, key_id: str, team: str, status: int,
                 prompt_tokens: int, completion_tokens: int, cost_usd: float) -> None:
        """A virtual key's request ended: its per-key and per-team series (when on)."""
        if self.per_key is not None:
            self.per_key.finished(ranked, key_id, team, status, prompt_tokens,
                                  completion_tokens, cost_usd)

    def _instance(self) -> _WithoutCreated:
        """What to show: this process's registry, or the instance's (every worker's files
        summed, every process's series)."""
        if self._shared_dir is None:
            return _WithoutCreated(self.registry)
        merged = CollectorRegistry()
        _instance_collectors(merged, self._shared_dir)
        return _WithoutCreated(merged)

    def collect(self) -> Iterable[Metric]:
        """Every metric family of the instance (gRPC ``GetMetrics``)."""
        return self._instance().collect()

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition body and its content type, negotiated from the Accept header."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self._instance()), content_type


class PerKeyMetrics:
    """``ailb_key_*`` and ``ailb_team_*``: requests by status class, tokens, spend, with at most
    ``limit`` keys and ``limit`` teams labelled (the rest: ``other``)."""

    def __init__(self, r: CollectorRegistry, limit: int) -> None:
        self._limit = limit
        self.key_requests = Counter(
            "ailb_key_requests", "Requests of each virtual key, by status class (2xx, 4xx...).",
            ["key_id", "status_class"], registry=r)
        self.key_tokens = Counter(
            "ailb_key_tokens", "Tokens of each virtual key, by direction (prompt, completion).",
            ["key_id", "direction"], registry=r)
        self.key_spend = Counter(
            "ailb_key_spend_usd", "What each virtual key's requests cost (USD, the prices).",
            ["key_id"], registry=r)
        self.team_requests = Counter(
            "ailb_team_requests", "Requests of each team's keys, by status class.",
            ["team", "status_class"], registry=r)
        self.team_tokens = Counter(
            "ailb_team_tokens", "Tokens of each team's keys, by direction.",
            ["team", "direction"], registry=r)
        self.team_spend = Counter(
            "ailb_team_spend_usd", "What each team's keys' requests cost (USD).", ["team"],
            registry=r)

    def finished(self, ranked: Ranked, key_id: str, team: str, status: int,
                 prompt_tokens: int, completion_tokens: int, cost_usd: float) -> None:
        status_class = f"{status // 100}xx"
        key = key_id if key_id in ranked.first_key_ids(self._limit) else OTHER
        self.key_requests.labels(key_id=key, status_class=status_class).inc()
        self.key_tokens.labels(key_id=key, direction="prompt").inc(prompt_tokens)
        self.key_tokens.labels(key_id=key, direction="completion").inc(completion_tokens)
        self.key_spend.labels(key_id=key).inc(cost_usd)
        if team:
            name = team if team in ranked.first_team_ids(self._limit) else OTHER
            self.team_requests.labels(team=name, status_class=status_class).inc()
            self.team_tokens.labels(team=name, direction="prompt").inc(prompt_tokens)
            self.team_tokens.labels(team=name, direction="completion").inc(completion_tokens)
            self.team_spend.labels(team=name).inc(cost_usd)
