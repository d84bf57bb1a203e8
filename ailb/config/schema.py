"""The configuration as frozen values. :mod:`ailb.config.parse` builds them; nothing here does I/O.

Secrets are kept in :class:`~ailb.config.values.Secret`, whose ``repr`` never shows the value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ailb.config.tracing import TracingSettings
from ailb.config.values import Secret
from ailb.pricing import Price

PROVIDER_TYPES: Final = ("openai", "anthropic", "ollama", "echo")
STRATEGIES: Final = (
    "round_robin",
    "cost_optimized",
    "latency_optimized",
    "load_balanced",
    "failover",
    "random",
)
LOG_LEVELS: Final = ("debug", "info", "warning", "error")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    host: str = "0.0.0.0"
    http_port: int = 8080
    grpc_port: int = 50051
    max_body_bytes: int = 4 * 1024 * 1024
    grace_s: float = 30.0
    unready_delay_s: float = 1.0  # at shutdown: /readyz says 503 this long before the listener
    # closes, so load balancers stop sending new requests first
    # Failed-authentication throttle, per client address and worker process (keys/throttle.py):
    # after auth_failure_limit failed keys (SERVER__AUTH_FAILURE_LIMIT; 0: no throttle) an
    # address gets 429 for every key that does not verify; one attempt comes back every
    # auth_failure_window_s / auth_failure_limit seconds (SERVER__AUTH_FAILURE_WINDOW_S); at
    # most auth_failure_addresses addresses are tracked (SERVER__AUTH_FAILURE_ADDRESSES).
    auth_failure_limit: int = 20
    auth_failure_window_s: float = 60.0
    auth_failure_addresses: int = 10_000
    # SERVER__BODY_READ_TIMEOUT_S: a request body must have arrived whole this long after the
    # gateway starts reading it (right after authentication), or the answer is 408 and the
    # connection is closed (a client trickling its body holds no connection for ever)
    body_read_timeout_s: float = 30.0
    # SERVER__KEEP_ALIVE_S: an idle keep-alive connection is closed after this long; longer than
    # common client pools keep idle connections, so clients close first
    keep_alive_s: float = 75.0


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    # The web console's sessions (ailb/console/sessions.py), kept in the store so every worker
    # and instance sharing it knows them: a session ends after session_idle_s without a call
    # (CONSOLE__SESSION_IDLE_S), and session_max_s after sign-in whatever happens
    # (CONSOLE__SESSION_MAX_S).
    session_idle_s: float = 1800.0
    session_max_s: float = 43200.0
    # CONSOLE__SECURE_COOKIE: "auto" marks the session cookie Secure when the request came over
    # https; "always" marks it Secure whatever the scheme (behind a TLS-terminating proxy that
    # speaks plain http to AILB). A Secure cookie is named __Host-ailb_console.
    secure_cookie: str = "auto"


@dataclass(frozen=True, slots=True)
class UpstreamSettings:
    connect_timeout_s: float = 30.0
    read_timeout_s: float = 30.0
    first_token_timeout_s: float = 30.0
    pool_size: int = 100
    transport: str = "lean"  # lean: ailb.providers.transport; httpx: httpx's own (httpcore)


@dataclass(frozen=True, slots=True)
class HealthSettings:
    interval_s: float = 15.0
    timeout_s: float = 5.0
    jitter: float = 0.2
    down_after: int = 2  # failed probes in a row before a deployment is marked down


@dataclass(frozen=True, slots=True)
class RoutingSettings:
    """Retries, cooldowns and hedging (see :mod:`ailb.routing.stats` for the cooldown rules)."""

    max_attempts: int = 3  # deployments tried for one request, at most
    total_deadline_s: float = 300.0  # for all attempts of one request together
    failures_to_cooldown: int = 3
    failure_window_s: float = 60.0
    cooldown_s: float = 30.0
    latency_decay_s: float = 30.0
    explore: float = 0.05  # latency_optimized: share of picks made at random
    hedge_ms: float = 0.0  # 0: no hedging unless an alias or the request asks for it
    hedge_percentile: float = 0.0  # >0: hedge at this percentile of the deployment's latency


@dataclass(frozen=True, slots=True)
class GrpcSettings:
    """TLS for the gRPC port: a certificate and key serve TLS; a client CA also requires every
    client to present a certificate signed by it (mTLS). Empty: plaintext (h2c)."""

    tls_cert: str = ""
    tls_key: str = ""
    client_ca: str = ""


@dataclass(frozen=True, slots=True)
class AccountingSettings:
    period: str = "monthly"  # budget period: monthly | weekly | daily (UTC)
    default_max_tokens: int = 4096  # reserved for limits and budgets when a request sets none
    ledger_flush_s: float = 0.5  # the most a spend ledger row waits before it is written
    # (without ledger_ack); ledger_ack: a request's row is committed before its answer ends
    # (a crash loses no answered request's row), written in group commits
    ledger_ack: bool = True


@dataclass(frozen=True, slots=True)
class SharedSettings:
    """State several gateways share (README, "Scaling out"). Empty URLs: the embedded store."""

    database_url: Secret = Secret("")  # DATABASE_URL: postgresql://... keys, spend, ledger
    redis_url: Secret = Secret("")  # REDIS_URL: redis://... buckets, leases, cooldowns, cache
    # when the shared rate-limit counters cannot be reached: share (each gateway admits its
    # share, limit / instances), closed (503), open (no rate limit). Budgets always fail closed.
    rate_limits_on_outage: str = "share"
    instances: int = 1  # gateways sharing the limits, for `share` (workers count on their own)
    lease_s: float = 900.0  # a parallel slot of a gateway that died frees itself after this
    key_refresh_s: float = 0.25  # how often keys changed by another gateway are looked for


@dataclass(frozen=True, slots=True)
class MetricsSettings:
    # per-key and per-team series (ailb_key_*, ailb_team_*): 0 = none; N = at most N keys (and
    # N teams) get their own label, later ones count under "other" (bounded cardinality)
    per_key_limit: int = 0


@dataclass(frozen=True, slots=True)
class EmbeddingSettings:
    """How memory and RAG turn text into vectors (see :mod:`ailb.vectors.embedders`)."""

    embedder: str = "lexical"  # lexical (built in, offline) | minilm (local ONNX) | provider
    dimensions: int = 2048  # lexical: vector size (fewer hash collisions than 1024: better ranks)
    model_dir: str = ""  # minilm: folder holding onnx/model.onnx, tokenizer.json, ...
    model: str = ""  # provider: a model routed through AILB's own /v1/embeddings path


@dataclass(frozen=True, slots=True)
class MemorySettings:
    recent_tokens: int = 2000  # budget of the most recent turns replayed before a request
    relevant_top_k: int = 3  # older turns found by semantic search, at most
    relevant_min_score: float = 0.15  # cosine similarity an older turn needs to be recalled
    max_turns_per_session: int = 500  # retention: older turns of a session are forgotten
    max_age_days: float = 90.0  # retention: turns older than this are forgotten (0: keep)
    queue_size: int = 1000  # turns waiting to be written (backpressure beyond)
    write_batch: int = 32  # turns per ChromaDB write (a write holds the GIL)


@dataclass(frozen=True, slots=True)
class RagSettings:
    top_k: int = 4
    min_score: float = 0.05  # cosine similarity a passage needs to be used
    chunk_chars: int = 1000
    chunk_overlap: int = 150
    max_context_chars: int = 8000  # retrieved text put in front of one request, at most
    write_batch: int = 64  # chunks per ChromaDB write during an ingest
    max_upload_bytes: int = 64 * 1024 * 1024  # a documents request's body (not SERVER's limit)
    sync_max_bytes: int = 1024 * 1024  # larger document requests run as an ingest job (202)
    job_workers: int = 1  # ingest jobs running at once in each process
    job_queue: int = 8  # ingest jobs waiting in each process; more are refused (429)
    job_queue_bytes: int = 256 * 1024 * 1024  # document text those jobs hold, at most (429)


@dataclass(frozen=True, slots=True)
class CacheSettings:
    context_entries: int = 1000  # hot sessions whose recent turns are kept in memory
    context_mb: float = 32.0
    rag_ttl_s: float = 3600.0
    rag_entries: int = 2000
    rag_mb: float = 32.0
    response: bool = False  # exact-match cache of deterministic answers (temperature 0 / seed)
    response_scope: str = "key"  # key: each key its own entries | shared: one for every key
    response_ttl_s: float = 3600.0
    response_entries: int = 5000
    response_mb: float = 64.0


@dataclass(frozen=True, slots=True)
class ConfiguredKey:
    """A virtual key declared in the YAML; its secret came from an environment variable."""

    id: str
    secret_hash: str
    fields: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class DeploymentSettings:
    """One upstream endpoint: a provider type, a base URL, a credential and the models it serves."""

    name: str
    type: str
    base_url: str
    api_key: Secret = Secret("")
    models: tuple[str, ...] = ()
    weight: float = 1.0
    priority: int = 0
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)  # may hold secrets
    pool_size: int | None = None
    rpm: int | None = None  # the upstream account's own limits: at its cap, a deployment is
    tpm: int | None = None  # skipped like an unhealthy one

    @property
    def discovers_models(self) -> bool:
        """Ollama with no configured models asks the server which models it has."""
        return self.type == "ollama" and not self.models


@dataclass(frozen=True, slots=True)
class AliasTarget:
    deployment: str
    model: str


@dataclass(frozen=True, slots=True)
class AliasSettings:
    """One public model name served by several (deployment, upstream model) targets."""

    name: str
    targets: tuple[AliasTarget, ...]
    strategy: str | None = None
    hedge_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Settings:
    module_id: str = "ailb-1"
    routing_strategy: str = "load_balanced"
    enable_memory: bool = True
    enable_rag: bool = False
    memory_backend: str = "chromadb"
    rag_backend: str = "chromadb"
    chroma_url: str = ""  # empty: ChromaDB on local disk under data_dir; else a ChromaDB server
    chroma_auth: Secret = Secret("")  # user:password from CHROMA_URL's user info (":token")
    embeddings: EmbeddingSettings = EmbeddingSettings()
    memory: MemorySettings = MemorySettings()
    rag: RagSettings = RagSettings()
    cache: CacheSettings = CacheSettings()
    data_dir: Path = Path("./data")
    admin_key: Secret = Secret("")
    log_level: str = "info"
    workers: int = 1  # processes serving the same ports under one supervising parent
    server: ServerSettings = ServerSettings()
    console: ConsoleSettings = ConsoleSettings()
    upstream: UpstreamSettings = UpstreamSettings()
    health: HealthSettings = HealthSettings()
    routing: RoutingSettings = RoutingSettings()
    prices: Mapping[str, Price] = field(default_factory=dict)
    accounting: AccountingSettings = AccountingSettings()
    shared: SharedSettings = SharedSettings()
    grpc: GrpcSettings = GrpcSettings()
    metrics: MetricsSettings = MetricsSettings()
    tracing: TracingSettings = TracingSettings()  # the OTEL_* variables (config/tracing.py)
    keys: tuple[ConfiguredKey, ...] = ()
    deployments: tuple[DeploymentSettings, ...] = ()
    aliases: tuple[AliasSettings, ...] = ()
    config_path: Path | None = None

    def deployment(self, name: str) -> DeploymentSettings:
        for dep in self.deployments:
            if dep.name == name:
                return dep
        raise KeyError(name)


# Defaults of every top-level key, by the name the configuration guide gives it. The loader layers
# YAML and then the environment over these, so each key can be overridden by its own variable.
TOP_LEVEL_DEFAULTS: Final[Mapping[str, Any]] = {
    "HTTP_PORT": 8080,
    "HOST": "0.0.0.0",
    "GRPC_PORT": 50051,
    "MODULE_ID": "ailb-1",
    "ROUTING_STRATEGY": "load_balanced",
    "ENABLE_MEMORY": True,
    "ENABLE_RAG": False,
    "MEMORY_BACKEND": "chromadb",
    "RAG_BACKEND": "chromadb",
    "CHROMA_URL": "",
    "EMBEDDINGS": {},
    "MEMORY": {},
    "RAG": {},
    "CACHE": {},
    "OPENAI_API_KEY": "",
    "OPENAI_BASE_URL": "https://api.openai.com/v1",
    "OPENAI_MODELS": "gpt-4,gpt-3.5-turbo",
    "ANTHROPIC_API_KEY": "",
    "ANTHROPIC_BASE_URL": "https://api.anthropic.com",
    "ANTHROPIC_MODELS": "claude-sonnet-4-5,claude-haiku-4-5",
    "OLLAMA_BASE_URL": "",
    "OLLAMA_MODELS": "",
    "AILB_DATA_DIR": "./data",
    "AILB_ADMIN_KEY": "",
    "LOG_LEVEL": "info",
    "WORKERS": 1,
    "ECHO_MODELS": "echo-1",
    "SERVER": {
        "max_body_bytes": ServerSettings().max_body_bytes,
        "grace_s": ServerSettings().grace_s,
        "unready_delay_s": ServerSettings().unready_delay_s,
        "auth_failure_limit": ServerSettings().auth_failure_limit,
        "auth_failure_window_s": ServerSettings().auth_failure_window_s,
        "auth_failure_addresses": ServerSettings().auth_failure_addresses,
        "body_read_timeout_s": ServerSettings().body_read_timeout_s,
        "keep_alive_s": ServerSettings().keep_alive_s,
    },
    "CONSOLE": {name: getattr(ConsoleSettings(), name)
                for name in ConsoleSettings.__dataclass_fields__},
    "UPSTREAM": {
        "connect_timeout_s": UpstreamSettings().connect_timeout_s,
        "read_timeout_s": UpstreamSettings().read_timeout_s,
        "first_token_timeout_s": UpstreamSettings().first_token_timeout_s,
        "pool_size": UpstreamSettings().pool_size,
        "transport": UpstreamSettings().transport,
    },
    "HEALTH": {
        "interval_s": HealthSettings().interval_s,
        "timeout_s": HealthSettings().timeout_s,
        "jitter": HealthSettings().jitter,
        "down_after": HealthSettings().down_after,
    },
    "ROUTING": {name: getattr(RoutingSettings(), name)
                for name in RoutingSettings.__dataclass_fields__},
    "PRICES": {},
    "ACCOUNTING": {name: getattr(AccountingSettings(), name)
                   for name in AccountingSettings.__dataclass_fields__},
    "KEYS": [],
    "GRPC": {"tls_cert": "", "tls_key": "", "client_ca": ""},
    "DATABASE_URL": "",
    "REDIS_URL": "",
    "SHARED": {name: getattr(SharedSettings(), name) for name in
               ("rate_limits_on_outage", "instances", "lease_s", "key_refresh_s")},
    "METRICS": {"per_key_limit": MetricsSettings().per_key_limit},
    "DEPLOYMENTS": [],
    "ALIASES": {},
}
