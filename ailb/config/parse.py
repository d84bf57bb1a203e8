"""Validate a merged configuration mapping into :class:`~ailb.config.schema.Settings`.

Rules, stated once:

* Every key is known. An unknown key is an error that names it (a typo must not be ignored).
* A bad value raises :class:`~ailb.errors.ConfigError` naming the key and what is allowed.
* Deployments and aliases: :mod:`ailb.config.deployments`.

Pure but for two reads: ``environ`` for ``api_key_env`` references, and the CPUs this process
may run on for ``WORKERS: auto``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from ailb.accounting.periods import PERIODS
from ailb.config.deployments import parse_aliases, parse_deployments
from ailb.config.memory import (
    parse_cache,
    parse_chroma,
    parse_embeddings,
    parse_memory,
    parse_rag,
)
from ailb.config.schema import (
    LOG_LEVELS,
    STRATEGIES,
    TOP_LEVEL_DEFAULTS,
    AccountingSettings,
    ConfiguredKey,
    GrpcSettings,
    HealthSettings,
    RoutingSettings,
    ServerSettings,
    Settings,
    SharedSettings,
    UpstreamSettings,
)
from ailb.config.values import (
    Secret,
    as_bool,
    as_choice,
    as_float,
    as_int,
    as_name,
    as_section,
    as_str,
)
from ailb.errors import ConfigError, InvalidRequest
from ailb.keys.fields import parse_fields
from ailb.keys.records import hash_secret, split_key
from ailb.pricing import Price

_SECTION_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "SERVER": frozenset({"max_body_bytes", "grace_s", "unready_delay_s", "body_read_timeout_s",
                         "keep_alive_s"}),
    "UPSTREAM": frozenset(
        {"connect_timeout_s", "read_timeout_s", "first_token_timeout_s", "pool_size"}
    ),
    "HEALTH": frozenset({"interval_s", "timeout_s", "jitter", "down_after"}),
    "ROUTING": frozenset(RoutingSettings.__dataclass_fields__),
    "ACCOUNTING": frozenset(AccountingSettings.__dataclass_fields__),
    "GRPC": frozenset(GrpcSettings.__dataclass_fields__),
    "SHARED": frozenset({"rate_limits_on_outage", "instances", "lease_s", "key_refresh_s"}),
}


def _section(name: str, raw: Any) -> dict[str, Any]:
    return as_section(name, raw, _SECTION_KEYS[name])


def _server(merged: Mapping[str, Any]) -> ServerSettings:
    raw = _section("SERVER", merged["SERVER"])
    d = ServerSettings()
    return ServerSettings(
        host=as_str("HOST", merged["HOST"]) or d.host,
        http_port=as_int("HTTP_PORT", merged["HTTP_PORT"], 0, 65535),
        grpc_port=as_int("GRPC_PORT", merged["GRPC_PORT"], 0, 65535),
        max_body_bytes=as_int("SERVER.max_body_bytes",
                              raw.get("max_body_bytes", d.max_body_bytes), 1024, 1 << 30),
        grace_s=as_float("SERVER.grace_s", raw.get("grace_s", d.grace_s), 0, 3600),
        unready_delay_s=as_float("SERVER.unready_delay_s",
                                 raw.get("unready_delay_s", d.unready_delay_s), 0, 600),
        body_read_timeout_s=as_float("SERVER.body_read_timeout_s",
                                     raw.get("body_read_timeout_s", d.body_read_timeout_s),
                                     0.1, 3600),
        keep_alive_s=as_float("SERVER.keep_alive_s", raw.get("keep_alive_s", d.keep_alive_s),
                              0.1, 3600),
    )


MAX_WORKERS: Final = 256


def parse_workers(raw: Any) -> int:
    """``auto``: one worker per CPU this process may run on (its affinity, which containers and
    ``taskset`` narrow; ``os.cpu_count()`` would count the host's)."""
    if isinstance(raw, str) and raw.strip().lower() == "auto":
        return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))
    try:
        return as_int("WORKERS", raw, 1, MAX_WORKERS)
    except ConfigError:
        raise ConfigError("WORKERS", f"must be auto or an integer from 1 to {MAX_WORKERS}, "
                          f"got {raw!r}") from None


def _upstream(merged: Mapping[str, Any]) -> UpstreamSettings:
    raw = _section("UPSTREAM", merged["UPSTREAM"])
    d = UpstreamSettings()
    return UpstreamSettings(
        connect_timeout_s=as_float("UPSTREAM.connect_timeout_s",
                                   raw.get("connect_timeout_s", d.connect_timeout_s), 0.01, 600),
        read_timeout_s=as_float("UPSTREAM.read_timeout_s",
                                raw.get("read_timeout_s", d.read_timeout_s), 0.01, 3600),
        first_token_timeout_s=as_float(
            "UPSTREAM.first_token_timeout_s",
            raw.get("first_token_timeout_s", d.first_token_timeout_s), 0.01, 3600),
        pool_size=as_int("UPSTREAM.pool_size", raw.get("pool_size", d.pool_size), 1, 10000),
    )


def _health(merged: Mapping[str, Any]) -> HealthSettings:
    raw = _section("HEALTH", merged["HEALTH"])
    d = HealthSettings()
    return HealthSettings(
        interval_s=as_float("HEALTH.interval_s", raw.get("interval_s", d.interval_s), 0.05, 86400),
        timeout_s=as_float("HEALTH.timeout_s", raw.get("timeout_s", d.timeout_s), 0.01, 600),
        jitter=as_float("HEALTH.jitter", raw.get("jitter", d.jitter), 0, 1),
        down_after=as_int("HEALTH.down_after", raw.get("down_after", d.down_after), 1, 100),
    )


def _routing(merged: Mapping[str, Any]) -> RoutingSettings:
    raw = _section("ROUTING", merged["ROUTING"])
    d = RoutingSettings()

    def number(name: str, lo: float, hi: float) -> float:
        return as_float(f"ROUTING.{name}", raw.get(name, getattr(d, name)), lo, hi)

    return RoutingSettings(
        max_attempts=as_int("ROUTING.max_attempts", raw.get("max_attempts", d.max_attempts), 1,
                            10),
        failures_to_cooldown=as_int("ROUTING.failures_to_cooldown",
                                    raw.get("failures_to_cooldown", d.failures_to_cooldown),
                                    1, 1000),
        total_deadline_s=number("total_deadline_s", 0.1, 86400),
        failure_window_s=number("failure_window_s", 0.1, 86400),
        cooldown_s=number("cooldown_s", 0.0, 86400),
        latency_decay_s=number("latency_decay_s", 0.1, 86400),
        explore=number("explore", 0.0, 1.0),
        hedge_ms=number("hedge_ms", 0.0, 600_000),
        hedge_percentile=number("hedge_percentile", 0.0, 1.0),
    )


def _accounting(merged: Mapping[str, Any]) -> AccountingSettings:
    raw = _section("ACCOUNTING", merged["ACCOUNTING"])
    d = AccountingSettings()
    return AccountingSettings(
        period=as_choice("ACCOUNTING.period", raw.get("period", d.period), PERIODS),
        default_max_tokens=as_int("ACCOUNTING.default_max_tokens",
                                  raw.get("default_max_tokens", d.default_max_tokens), 1,
                                  10_000_000),
        ledger_flush_s=as_float("ACCOUNTING.ledger_flush_s",
                                raw.get("ledger_flush_s", d.ledger_flush_s), 0.01, 3600),
        ledger_ack=as_bool("ACCOUNTING.ledger_ack", raw.get("ledger_ack", d.ledger_ack)),
    )


OUTAGE_POLICIES: Final = ("share", "closed", "open")


def _url(name: str, raw: Any, schemes: tuple[str, ...]) -> Secret:
    url = as_str(name, raw).strip()
    if url and url.split("://", 1)[0] not in schemes:
        raise ConfigError(name, f"must start with {' or '.join(s + '://' for s in schemes)}")
    return Secret(url)


def _shared(merged: Mapping[str, Any]) -> SharedSettings:
    raw = _section("SHARED", merged["SHARED"])
    d = SharedSettings()
    return SharedSettings(
        database_url=_url("DATABASE_URL", merged["DATABASE_URL"], ("postgresql", "postgres")),
        redis_url=_url("REDIS_URL", merged["REDIS_URL"], ("redis", "rediss", "valkey")),
        rate_limits_on_outage=as_choice(
            "SHARED.rate_limits_on_outage",
            raw.get("rate_limits_on_outage", d.rate_limits_on_outage), OUTAGE_POLICIES),
        instances=as_int("SHARED.instances", raw.get("instances", d.instances), 1, 10_000),
        lease_s=as_float("SHARED.lease_s", raw.get("lease_s", d.lease_s), 1, 86_400),
        key_refresh_s=as_float("SHARED.key_refresh_s",
                               raw.get("key_refresh_s", d.key_refresh_s), 0.05, 60),
    )


def _grpc(merged: Mapping[str, Any]) -> GrpcSettings:
    raw = _section("GRPC", merged["GRPC"])
    tls = GrpcSettings(*(as_str(f"GRPC.{name}", raw.get(name, "")) for name in
                         ("tls_cert", "tls_key", "client_ca")))
    if bool(tls.tls_cert) != bool(tls.tls_key):
        raise ConfigError("GRPC.tls_cert", "and GRPC.tls_key must be given together")
    if tls.client_ca and not tls.tls_cert:
        raise ConfigError("GRPC.client_ca", "needs GRPC.tls_cert and GRPC.tls_key (mTLS)")
    return tls


def _keys(raw: Any, environ: Mapping[str, str]) -> tuple[ConfiguredKey, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("KEYS", "must be a list of keys")
    keys: list[ConfiguredKey] = []
    for index, entry in enumerate(raw):
        where = f"keys[{index}]"
        if not isinstance(entry, Mapping) or "key_env" not in entry:
            raise ConfigError(where, "needs key_env: the variable that holds the key")
        variable = as_str(f"{where}.key_env", entry["key_env"])
        parts = split_key(environ.get(variable, "").strip())
        if parts is None:
            raise ConfigError(f"{where}.key_env", f"names {variable}, which must hold a key "
                              "like sk-ailb-<12 hex>-<secret of 20+ characters>")
        try:
            fields = parse_fields({k: v for k, v in entry.items() if k != "key_env"},
                                  creating=True)
        except InvalidRequest as exc:
            raise ConfigError(f"{where}.{exc.param}", exc.message) from None
        keys.append(ConfiguredKey(parts[0], hash_secret(parts[1]), fields))
    if len({k.id for k in keys}) != len(keys):
        raise ConfigError("KEYS", "two keys have the same id")
    return tuple(keys)


def _prices(raw: Any) -> dict[str, Price]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError("PRICES", "must map model names to {input_per_mtok, output_per_mtok}")
    prices: dict[str, Price] = {}
    for model, entry in raw.items():
        where = f"prices.{model}"
        if not isinstance(entry, Mapping) or set(entry) - {"input_per_mtok", "output_per_mtok"}:
            raise ConfigError(where, "must be {input_per_mtok: USD, output_per_mtok: USD}")
        prices[str(model)] = Price(
            as_float(f"{where}.input_per_mtok", entry.get("input_per_mtok", 0), 0, 1e6),
            as_float(f"{where}.output_per_mtok", entry.get("output_per_mtok", 0), 0, 1e6))
    return prices


def parse_mapping(
    raw: Mapping[str, Any], environ: Mapping[str, str], config_path: Path | None = None
) -> Settings:
    """Validate a merged configuration mapping (YAML over defaults, environment over YAML).

    Raises :class:`ConfigError` naming the first bad key.
    """
    top = {str(k).upper(): v for k, v in raw.items()}
    unknown = sorted(set(top) - set(TOP_LEVEL_DEFAULTS))
    if unknown:
        raise ConfigError(unknown[0], "is not a known configuration key")
    merged = {**TOP_LEVEL_DEFAULTS, **top}
    deployments = parse_deployments(merged, environ)
    chroma_url, chroma_auth = parse_chroma(merged["CHROMA_URL"])
    return Settings(
        module_id=as_name("MODULE_ID", merged["MODULE_ID"]),
        routing_strategy=as_choice("ROUTING_STRATEGY", merged["ROUTING_STRATEGY"], STRATEGIES),
        enable_memory=as_bool("ENABLE_MEMORY", merged["ENABLE_MEMORY"]),
        enable_rag=as_bool("ENABLE_RAG", merged["ENABLE_RAG"]),
        memory_backend=as_choice("MEMORY_BACKEND", merged["MEMORY_BACKEND"], ("chromadb",)),
        rag_backend=as_choice("RAG_BACKEND", merged["RAG_BACKEND"], ("chromadb",)),
        chroma_url=chroma_url,
        chroma_auth=chroma_auth,
        embeddings=parse_embeddings(merged["EMBEDDINGS"]),
        memory=parse_memory(merged["MEMORY"]),
        rag=parse_rag(merged["RAG"]),
        cache=parse_cache(merged["CACHE"]),
        data_dir=Path(as_str("AILB_DATA_DIR", merged["AILB_DATA_DIR"]) or "./data"),
        admin_key=Secret(as_str("AILB_ADMIN_KEY", merged["AILB_ADMIN_KEY"])),
        log_level=as_choice("LOG_LEVEL", merged["LOG_LEVEL"], LOG_LEVELS),
        workers=parse_workers(merged["WORKERS"]),
        server=_server(merged),
        upstream=_upstream(merged),
        health=_health(merged),
        routing=_routing(merged),
        prices=_prices(merged["PRICES"]),
        accounting=_accounting(merged),
        shared=_shared(merged),
        grpc=_grpc(merged),
        keys=_keys(merged["KEYS"], environ),
        deployments=deployments,
        aliases=parse_aliases(merged["ALIASES"], deployments),
        config_path=config_path,
    )
