"""Validate a merged configuration mapping into :class:`~ailb.config.schema.Settings`.

Rules, stated once:

* Every key is known. An unknown key is an error that names it (a typo must not be ignored).
* A bad value is a :class:`~ailb.errors.ConfigError` naming the key and what is allowed.
  Every problem is reported, not only the first (:mod:`ailb.config.problems`): one raises as
  itself, several as :class:`~ailb.errors.ConfigErrors`.
* Deployments and aliases: :mod:`ailb.config.deployments`.

Pure but for two reads: ``environ`` for ``api_key_env`` references, and the CPUs this process
may run on for ``WORKERS: auto``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from ailb.accounting.periods import PERIODS
from ailb.config.deployments import declared_names, parse_aliases, parse_deployments
from ailb.config.memory import (
    parse_cache,
    parse_chroma,
    parse_embeddings,
    parse_memory,
    parse_rag,
)
from ailb.config.problems import Fields, Problems, section
from ailb.config.schema import (
    LOG_LEVELS,
    STRATEGIES,
    TOP_LEVEL_DEFAULTS,
    AccountingSettings,
    ConfiguredKey,
    ConsoleSettings,
    GrpcSettings,
    HealthSettings,
    MetricsSettings,
    RoutingSettings,
    ServerSettings,
    Settings,
    SharedSettings,
    UpstreamSettings,
)
from ailb.config.tracing import TracingSettings, parse_tracing
from ailb.config.values import (
    Secret,
    as_bool,
    as_choice,
    as_float,
    as_int,
    as_name,
    as_str,
)
from ailb.errors import ConfigError, InvalidRequest, MissingSecret
from ailb.keys.fields import parse_fields
from ailb.keys.records import hash_secret, split_key
from ailb.pricing import Price

_SECTION_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "SERVER": frozenset({"max_body_bytes", "grace_s", "unready_delay_s", "auth_failure_limit",
                         "auth_failure_window_s", "auth_failure_addresses",
                         "body_read_timeout_s", "keep_alive_s"}),
    "CONSOLE": frozenset(ConsoleSettings.__dataclass_fields__),
    "UPSTREAM": frozenset(
        {"connect_timeout_s", "read_timeout_s", "first_token_timeout_s", "pool_size",
         "transport"}
    ),
    "HEALTH": frozenset({"interval_s", "timeout_s", "jitter", "down_after"}),
    "ROUTING": frozenset(RoutingSettings.__dataclass_fields__),
    "ACCOUNTING": frozenset(AccountingSettings.__dataclass_fields__),
    "GRPC": frozenset(GrpcSettings.__dataclass_fields__),
    "METRICS": frozenset(MetricsSettings.__dataclass_fields__),
    "SHARED": frozenset({"rate_limits_on_outage", "instances", "lease_s", "key_refresh_s"}),
}


def _fields(p: Problems, name: str, merged: Mapping[str, Any], defaults: Any) -> Fields:
    return Fields(p, name, section(p, name, merged[name], _SECTION_KEYS[name]), defaults)


def _server(p: Problems, merged: Mapping[str, Any]) -> ServerSettings:
    f = _fields(p, "SERVER", merged, ServerSettings())
    return ServerSettings(
        host=p.check("", as_str, "HOST", merged["HOST"]) or ServerSettings().host,
        http_port=p.check(0, as_int, "HTTP_PORT", merged["HTTP_PORT"], 0, 65535),
        grpc_port=p.check(0, as_int, "GRPC_PORT", merged["GRPC_PORT"], 0, 65535),
        max_body_bytes=f.integer("max_body_bytes", 1024, 1 << 30),
        grace_s=f.number("grace_s", 0, 3600),
        unready_delay_s=f.number("unready_delay_s", 0, 600),
        auth_failure_limit=f.integer("auth_failure_limit", 0, 1_000_000),
        auth_failure_window_s=f.number("auth_failure_window_s", 0.1, 86_400),
        auth_failure_addresses=f.integer("auth_failure_addresses", 1, 10_000_000),
        body_read_timeout_s=f.number("body_read_timeout_s", 0.1, 3600),
        keep_alive_s=f.number("keep_alive_s", 0.1, 3600),
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


def _console(p: Problems, merged: Mapping[str, Any]) -> ConsoleSettings:
    f = _fields(p, "CONSOLE", merged, ConsoleSettings())
    return ConsoleSettings(session_idle_s=f.number("session_idle_s", 1, 30 * 86_400),
                           session_max_s=f.number("session_max_s", 1, 365 * 86_400),
                           secure_cookie=f.choice("secure_cookie", ("auto", "always")))


def _upstream(p: Problems, merged: Mapping[str, Any]) -> UpstreamSettings:
    f = _fields(p, "UPSTREAM", merged, UpstreamSettings())
    return UpstreamSettings(
        connect_timeout_s=f.number("connect_timeout_s", 0.01, 600),
        read_timeout_s=f.number("read_timeout_s", 0.01, 3600),
        first_token_timeout_s=f.number("first_token_timeout_s", 0.01, 3600),
        pool_size=f.integer("pool_size", 1, 10000),
        transport=f.choice("transport", ("lean", "httpx")),
    )


def _health(p: Problems, merged: Mapping[str, Any]) -> HealthSettings:
    f = _fields(p, "HEALTH", merged, HealthSettings())
    return HealthSettings(
        interval_s=f.number("interval_s", 0.05, 86400),
        timeout_s=f.number("timeout_s", 0.01, 600),
        jitter=f.number("jitter", 0, 1),
        down_after=f.integer("down_after", 1, 100),
    )


def _routing(p: Problems, merged: Mapping[str, Any]) -> RoutingSettings:
    f = _fields(p, "ROUTING", merged, RoutingSettings())
    return RoutingSettings(
        max_attempts=f.integer("max_attempts", 1, 10),
        failures_to_cooldown=f.integer("failures_to_cooldown", 1, 1000),
        total_deadline_s=f.number("total_deadline_s", 0.1, 86400),
        failure_window_s=f.number("failure_window_s", 0.1, 86400),
        cooldown_s=f.number("cooldown_s", 0.0, 86400),
        latency_decay_s=f.number("latency_decay_s", 0.1, 86400),
        explore=f.number("explore", 0.0, 1.0),
        hedge_ms=f.number("hedge_ms", 0.0, 600_000),
        hedge_percentile=f.number("hedge_percentile", 0.0, 1.0),
    )


def _accounting(p: Problems, merged: Mapping[str, Any]) -> AccountingSettings:
    f = _fields(p, "ACCOUNTING", merged, AccountingSettings())
    return AccountingSettings(
        period=f.choice("period", PERIODS),
        default_max_tokens=f.integer("default_max_tokens", 1, 10_000_000),
        ledger_flush_s=f.number("ledger_flush_s", 0.01, 3600),
        ledger_ack=f.flag("ledger_ack"),
    )


OUTAGE_POLICIES: Final = ("share", "closed", "open")


def _url(name: str, raw: Any, schemes: tuple[str, ...]) -> Secret:
    url = as_str(name, raw).strip()
    if url and url.split("://", 1)[0] not in schemes:
        raise ConfigError(name, f"must start with {' or '.join(s + '://' for s in schemes)}")
    return Secret(url)


def _shared(p: Problems, merged: Mapping[str, Any]) -> SharedSettings:
    f = _fields(p, "SHARED", merged, SharedSettings())
    return SharedSettings(
        database_url=p.check(Secret(""), _url, "DATABASE_URL", merged["DATABASE_URL"],
                             ("postgresql", "postgres")),
        redis_url=p.check(Secret(""), _url, "REDIS_URL", merged["REDIS_URL"],
                          ("redis", "rediss", "valkey")),
        rate_limits_on_outage=f.choice("rate_limits_on_outage", OUTAGE_POLICIES),
        instances=f.integer("instances", 1, 10_000),
        lease_s=f.number("lease_s", 1, 86_400),
        key_refresh_s=f.number("key_refresh_s", 0.05, 60),
    )


def _grpc(p: Problems, merged: Mapping[str, Any]) -> GrpcSettings:
    f = _fields(p, "GRPC", merged, GrpcSettings())
    tls = GrpcSettings(f.text("tls_cert"), f.text("tls_key"), f.text("client_ca"))
    if bool(tls.tls_cert) != bool(tls.tls_key):
        p.add(ConfigError("GRPC.tls_cert", "and GRPC.tls_key must be given together"))
    if tls.client_ca and not tls.tls_cert:
        p.add(ConfigError("GRPC.client_ca", "needs GRPC.tls_cert and GRPC.tls_key (mTLS)"))
    return tls


def _metrics(p: Problems, merged: Mapping[str, Any]) -> MetricsSettings:
    f = _fields(p, "METRICS", merged, MetricsSettings())
    return MetricsSettings(per_key_limit=f.integer("per_key_limit", 0, 100_000))


def _key(where: str, entry: Any, environ: Mapping[str, str]) -> ConfiguredKey:
    if not isinstance(entry, Mapping) or "key_env" not in entry:
        raise ConfigError(where, "needs key_env: the variable that holds the key")
    variable = as_str(f"{where}.key_env", entry["key_env"])
    if not environ.get(variable, "").strip():
        raise MissingSecret(f"{where}.key_env", f"names {variable}, which is not set")
    parts = split_key(environ[variable].strip())
    if parts is None:
        raise ConfigError(f"{where}.key_env", f"names {variable}, which must hold a key "
                          "like sk-ailb-<12 hex>-<secret of 20+ characters>")
    try:
        fields = parse_fields({k: v for k, v in entry.items() if k != "key_env"},
                              creating=True)
    except InvalidRequest as exc:
        raise ConfigError(f"{where}.{exc.param}" if exc.param else where, exc.message) from None
    return ConfiguredKey(parts[0], hash_secret(parts[1]), fields)


def _keys(p: Problems, raw: Any, environ: Mapping[str, str]) -> tuple[ConfiguredKey, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError("KEYS", "must be a list of keys")
    keys: list[ConfiguredKey] = p.each(
        enumerate(raw), lambda item: _key(f"keys[{item[0]}]", item[1], environ))
    if len({k.id for k in keys}) != len(keys):
        raise ConfigError("KEYS", "two keys have the same id")
    return tuple(keys)


_PRICE_FIELDS = ("input_per_mtok", "output_per_mtok", "cached_input_per_mtok",
                 "cache_write_per_mtok")


def _price(model: str, entry: Any) -> tuple[str, Price]:
    where = f"prices.{model}"
    if not isinstance(entry, Mapping) or set(entry) - set(_PRICE_FIELDS):
        raise ConfigError(where, "must be {input_per_mtok: USD, output_per_mtok: USD} "
                          "(optionally cached_input_per_mtok, cache_write_per_mtok)")

    def rate(name: str) -> float | None:
        value = entry.get(name)
        return None if value is None else as_float(f"{where}.{name}", value, 0, 1e6)

    return model, Price(
        as_float(f"{where}.input_per_mtok", entry.get("input_per_mtok", 0), 0, 1e6),
        as_float(f"{where}.output_per_mtok", entry.get("output_per_mtok", 0), 0, 1e6),
        rate("cached_input_per_mtok"), rate("cache_write_per_mtok"))


def _prices(p: Problems, raw: Any) -> dict[str, Price]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError("PRICES", "must map model names to {input_per_mtok, output_per_mtok}")
    return dict(p.each(raw.items(), lambda item: _price(str(item[0]), item[1])))


def parse_mapping(
    raw: Mapping[str, Any], environ: Mapping[str, str], config_path: Path | None = None,
    *, need_secrets: bool = True,
) -> Settings:
    """Validate a merged configuration mapping (YAML over defaults, environment over YAML).

    Raises :class:`ConfigError` naming the bad key, or :class:`ConfigErrors` listing every
    problem when there are several (see :mod:`ailb.config.problems`). ``need_secrets=False``
    (the tools that call no provider: ``ailb keys``, ``ailb db``) lets a secret's variable be
    unset (:class:`MissingSecret`): the deployment or declared key that needs it is left out,
    every other problem is still raised.
    """
    p = Problems()
    d = Settings()
    top = {str(k).upper(): v for k, v in raw.items()}
    for key in sorted(set(top) - set(TOP_LEVEL_DEFAULTS)):
        p.add(ConfigError(key, "is not a known configuration key"))
    merged = {**TOP_LEVEL_DEFAULTS, **{k: v for k, v in top.items() if k in TOP_LEVEL_DEFAULTS}}
    deployments = p.check((), parse_deployments, p, merged, environ)
    chroma_url, chroma_auth = p.check(("", Secret("")), parse_chroma, merged["CHROMA_URL"])

    def choice(key: str, allowed: Sequence[str], fallback: str) -> str:
        return p.check(fallback, as_choice, key, merged[key], allowed)

    def flag(key: str, fallback: bool) -> bool:
        return p.check(fallback, as_bool, key, merged[key])

    def text(key: str) -> str:
        return p.check("", as_str, key, merged[key])

    settings = Settings(
        module_id=p.check(d.module_id, as_name, "MODULE_ID", merged["MODULE_ID"]),
        routing_strategy=choice("ROUTING_STRATEGY", STRATEGIES, d.routing_strategy),
        enable_memory=flag("ENABLE_MEMORY", d.enable_memory),
        enable_rag=flag("ENABLE_RAG", d.enable_rag),
        memory_backend=choice("MEMORY_BACKEND", ("chromadb",), d.memory_backend),
        rag_backend=choice("RAG_BACKEND", ("chromadb",), d.rag_backend),
        chroma_url=chroma_url,
        chroma_auth=chroma_auth,
        embeddings=parse_embeddings(p, merged["EMBEDDINGS"]),
        memory=parse_memory(p, merged["MEMORY"]),
        rag=parse_rag(p, merged["RAG"]),
        cache=parse_cache(p, merged["CACHE"]),
        data_dir=Path(text("AILB_DATA_DIR") or "./data"),
        admin_key=Secret(text("AILB_ADMIN_KEY")),
        log_level=choice("LOG_LEVEL", LOG_LEVELS, d.log_level),
        workers=p.check(d.workers, parse_workers, merged["WORKERS"]),
        server=_server(p, merged),
        console=_console(p, merged),
        upstream=_upstream(p, merged),
        health=_health(p, merged),
        routing=_routing(p, merged),
        prices=p.check({}, _prices, p, merged["PRICES"]),
        accounting=_accounting(p, merged),
        shared=_shared(p, merged),
        grpc=_grpc(p, merged),
        metrics=_metrics(p, merged),
        tracing=p.check(TracingSettings(), parse_tracing, environ),
        keys=p.check((), _keys, p, merged["KEYS"], environ),
        deployments=deployments,
        # an alias naming a deployment whose entry is wrong is not a problem of its own
        aliases=p.check((), parse_aliases, p, merged["ALIASES"], deployments,
                        declared_names(merged)),
        config_path=config_path,
    )
    p.raise_any(ignore=() if need_secrets else (MissingSecret,))
    return settings
