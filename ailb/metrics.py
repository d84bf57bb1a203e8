"""Prometheus metrics on a private registry (one per running gateway, so tests never collide).

This is the only module that imports prometheus_client.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5)


class Metrics:
    """Every AILB metric. Label values are bounded: models and deployments come from config."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
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
        self.in_flight = Gauge("ailb_in_flight_requests", "Requests being served now.",
                               registry=r)
        self.provider_up = Gauge(
            "ailb_provider_up", "1 when the deployment's last health probe succeeded.",
            ["deployment", "provider"], registry=r)
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
        self.cache_entries = Gauge(
            "ailb_cache_entries", "Entries held by each cache.", ["cache"], registry=r)
        self.cache_bytes = Gauge(
            "ailb_cache_bytes", "Approximate bytes held by each cache.", ["cache"], registry=r)
        self.store_items = Gauge(
            "ailb_vector_store_items",
            "Records in the vector stores: memory turns, RAG chunks (as of the last change).",
            ["store"], registry=r)
        self.memory_queue = Gauge(
            "ailb_memory_write_queue", "Memory turns waiting for the writer.", registry=r)

        self.shared_up = Gauge(
            "ailb_shared_state_up",
            "1 while a part of the state shared with other gateways answers: store (keys, "
            "spend, budgets, ledger), counters (rate limits).", ["part"], registry=r)
        self.rate_limit_fallbacks = Counter(
            "ailb_rate_limit_fallbacks",
            "Requests admitted or refused by the outage policy while the shared rate-limit "
            "counters could not be reached, by policy (share, closed, open).", ["policy"],
            registry=r)

        self.reloads = Counter(
            "ailb_config_reloads", "Configuration reloads, by outcome (ok, failed).",
            ["outcome"], registry=r)

    def render(self, accept: str | None) -> tuple[bytes, str]:
        """The exposition body and its content type, negotiated from the Accept header."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
