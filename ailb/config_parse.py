"""Validate a merged configuration mapping into :class:`~ailb.config_schema.Settings`.

Rules, stated once:

* Every key is known. An unknown key is an error that names it (a typo must not be ignored).
* A bad value raises :class:`~ailb.errors.ConfigError` naming the key and what is allowed.
* Deployments come from two places: the guide's variables (``OPENAI_API_KEY`` makes a deployment
  named ``openai``, ``ANTHROPIC_API_KEY`` one named ``anthropic``, ``OLLAMA_BASE_URL`` one named
  ``ollama``; ``OPENAI_BASE_URL`` other than OpenAI's own also makes ``openai``, for keyless
  OpenAI-compatible servers) and the ``deployments:`` list. With none at all, the offline ``echo``
  deployment serves ``ECHO_MODELS`` so that a fresh install answers.

Pure: ``environ`` is only read for ``api_key_env`` references.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from ailb.config_schema import (
    LOG_LEVELS,
    PROVIDER_TYPES,
    STRATEGIES,
    TOP_LEVEL_DEFAULTS,
    AliasSettings,
    AliasTarget,
    DeploymentSettings,
    HealthSettings,
    RoutingSettings,
    ServerSettings,
    Settings,
    UpstreamSettings,
)
from ailb.config_values import (
    Secret,
    as_bool,
    as_choice,
    as_float,
    as_int,
    as_models,
    as_name,
    as_str,
    as_url,
)
from ailb.errors import ConfigError
from ailb.pricing import Price

OPENAI_DEFAULT_URL: Final = "https://api.openai.com/v1"
_SECTION_KEYS: Final[Mapping[str, frozenset[str]]] = {
    "SERVER": frozenset({"max_body_bytes", "grace_s"}),
    "UPSTREAM": frozenset(
        {"connect_timeout_s", "read_timeout_s", "first_token_timeout_s", "pool_size"}
    ),
    "HEALTH": frozenset({"interval_s", "timeout_s", "jitter", "down_after"}),
    "ROUTING": frozenset(RoutingSettings.__dataclass_fields__),
}
_DEPLOYMENT_KEYS: Final = frozenset(
    {"name", "type", "base_url", "api_key", "api_key_env", "models", "weight", "priority",
     "headers", "pool_size", "rpm", "tpm"}
)
_ALIAS_KEYS: Final = frozenset({"targets", "strategy", "hedge_ms"})
_DEFAULT_URLS: Final[Mapping[str, str]] = {
    "openai": OPENAI_DEFAULT_URL,
    "anthropic": "https://api.anthropic.com",
    "ollama": "http://127.0.0.1:11434",
    "echo": "echo://local",
}


def _section(name: str, raw: Any) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise ConfigError(name, "must be a mapping")
    lowered = {str(k).lower(): v for k, v in raw.items()}
    unknown = sorted(set(lowered) - _SECTION_KEYS[name])
    if unknown:
        allowed = ", ".join(sorted(_SECTION_KEYS[name]))
        raise ConfigError(f"{name}.{unknown[0]}", f"is not a known key (known: {allowed})")
    return lowered


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
    )


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


def _env_deployments(merged: Mapping[str, Any]) -> list[DeploymentSettings]:
    found: list[DeploymentSettings] = []
    openai_key = as_str("OPENAI_API_KEY", merged["OPENAI_API_KEY"])
    openai_url = as_url("OPENAI_BASE_URL", merged["OPENAI_BASE_URL"])
    if openai_key or openai_url != OPENAI_DEFAULT_URL:
        found.append(DeploymentSettings(
            name="openai", type="openai", base_url=openai_url, api_key=Secret(openai_key),
            models=as_models("OPENAI_MODELS", merged["OPENAI_MODELS"])))
    anthropic_key = as_str("ANTHROPIC_API_KEY", merged["ANTHROPIC_API_KEY"])
    if anthropic_key:
        found.append(DeploymentSettings(
            name="anthropic", type="anthropic",
            base_url=as_url("ANTHROPIC_BASE_URL", merged["ANTHROPIC_BASE_URL"]),
            api_key=Secret(anthropic_key),
            models=as_models("ANTHROPIC_MODELS", merged["ANTHROPIC_MODELS"])))
    if as_str("OLLAMA_BASE_URL", merged["OLLAMA_BASE_URL"]):
        found.append(DeploymentSettings(
            name="ollama", type="ollama",
            base_url=as_url("OLLAMA_BASE_URL", merged["OLLAMA_BASE_URL"]),
            models=as_models("OLLAMA_MODELS", merged["OLLAMA_MODELS"])))
    return found


def _declared_deployment(
    index: int, raw: Any, environ: Mapping[str, str]
) -> DeploymentSettings:
    where = f"deployments[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(where, "must be a mapping with at least name and type")
    item = {str(k).lower(): v for k, v in raw.items()}
    unknown = sorted(set(item) - _DEPLOYMENT_KEYS)
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}",
                          f"is not a known key (known: {', '.join(sorted(_DEPLOYMENT_KEYS))})")
    if "name" not in item or "type" not in item:
        raise ConfigError(where, "needs both 'name' and 'type'")
    name = as_name(f"{where}.name", item["name"])
    kind = as_choice(f"{where}.type", item["type"], PROVIDER_TYPES)
    if "api_key" in item and "api_key_env" in item:
        raise ConfigError(f"{where}.api_key", "give either api_key or api_key_env, not both")
    key = as_str(f"{where}.api_key", item.get("api_key", ""))
    if "api_key_env" in item:
        var = as_str(f"{where}.api_key_env", item["api_key_env"])
        if var not in environ:
            raise ConfigError(f"{where}.api_key_env", f"names {var}, which is not set")
        key = environ[var].strip()
    base_url = item.get("base_url") or _DEFAULT_URLS[kind]
    if kind != "echo":
        base_url = as_url(f"{where}.base_url", base_url)
    models = as_models(f"{where}.models", item.get("models"))
    if not models and kind != "ollama":
        raise ConfigError(f"{where}.models", "must list at least one model")
    headers_raw = item.get("headers") or {}
    if not isinstance(headers_raw, Mapping):
        raise ConfigError(f"{where}.headers", "must be a mapping of header name to value")
    pool = item.get("pool_size")
    caps = {name: None if item.get(name) is None else
            as_int(f"{where}.{name}", item[name], 1, 1_000_000_000) for name in ("rpm", "tpm")}
    return DeploymentSettings(
        name=name, type=kind, base_url=str(base_url), api_key=Secret(key), models=models,
        weight=as_float(f"{where}.weight", item.get("weight", 1.0), 0.0, 1e6),
        priority=as_int(f"{where}.priority", item.get("priority", 0), -1_000_000, 1_000_000),
        headers={str(k): as_str(f"{where}.headers.{k}", v) for k, v in headers_raw.items()},
        pool_size=None if pool is None else as_int(f"{where}.pool_size", pool, 1, 10000),
        rpm=caps["rpm"],
        tpm=caps["tpm"],
    )


def _deployments(
    merged: Mapping[str, Any], environ: Mapping[str, str]
) -> tuple[DeploymentSettings, ...]:
    declared_raw = merged["DEPLOYMENTS"] or []
    if not isinstance(declared_raw, list):
        raise ConfigError("DEPLOYMENTS", "must be a list of deployments")
    found = _env_deployments(merged)
    found += [_declared_deployment(i, raw, environ) for i, raw in enumerate(declared_raw)]
    if not found:
        found.append(DeploymentSettings(
            name="echo", type="echo", base_url=_DEFAULT_URLS["echo"],
            models=as_models("ECHO_MODELS", merged["ECHO_MODELS"]) or ("echo-1",)))
    seen: set[str] = set()
    for dep in found:
        if dep.name in seen:
            raise ConfigError("DEPLOYMENTS", f"deployment name {dep.name!r} is used twice")
        seen.add(dep.name)
    return tuple(found)


def _target(where: str, raw: Any, names: set[str]) -> AliasTarget:
    if isinstance(raw, str):
        deployment, sep, model = raw.partition("/")
        if not sep or not deployment or not model:
            raise ConfigError(where, f"must look like 'deployment/model', got {raw!r}")
    elif isinstance(raw, Mapping) and set(raw) <= {"deployment", "model"}:
        deployment = as_str(where, raw.get("deployment"))
        model = as_str(where, raw.get("model"))
    else:
        raise ConfigError(where, "must be 'deployment/model' or {deployment, model}")
    if deployment not in names:
        raise ConfigError(where, f"names deployment {deployment!r}, which is not configured "
                                 f"(configured: {', '.join(sorted(names))})")
    return AliasTarget(deployment=deployment, model=model)


def _aliases(raw: Any, deployments: tuple[DeploymentSettings, ...]) -> tuple[AliasSettings, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise ConfigError("ALIASES", "must be a mapping of public model name to targets")
    names = {d.name for d in deployments}
    aliases: list[AliasSettings] = []
    for alias_name, body in raw.items():
        where = f"aliases.{alias_name}"
        public = as_str(where, alias_name)
        strategy: str | None = None
        hedge_ms: float | None = None
        if isinstance(body, Mapping):
            lowered = {str(k).lower(): v for k, v in body.items()}
            unknown = sorted(set(lowered) - _ALIAS_KEYS)
            if unknown:
                raise ConfigError(f"{where}.{unknown[0]}", "is not a known key (known: "
                                  "hedge_ms, strategy, targets)")
            targets_raw = lowered.get("targets")
            if lowered.get("strategy") is not None:
                strategy = as_choice(f"{where}.strategy", lowered["strategy"], STRATEGIES)
            if lowered.get("hedge_ms") is not None:
                hedge_ms = as_float(f"{where}.hedge_ms", lowered["hedge_ms"], 0, 600_000)
        else:
            targets_raw = body
        if not isinstance(targets_raw, list) or not targets_raw:
            raise ConfigError(f"{where}.targets", "must be a non-empty list")
        targets = tuple(_target(f"{where}.targets[{i}]", t, names)
                        for i, t in enumerate(targets_raw))
        aliases.append(AliasSettings(name=public, targets=targets, strategy=strategy,
                                     hedge_ms=hedge_ms))
    return tuple(aliases)


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
    deployments = _deployments(merged, environ)
    return Settings(
        module_id=as_name("MODULE_ID", merged["MODULE_ID"]),
        routing_strategy=as_choice("ROUTING_STRATEGY", merged["ROUTING_STRATEGY"], STRATEGIES),
        enable_memory=as_bool("ENABLE_MEMORY", merged["ENABLE_MEMORY"]),
        enable_rag=as_bool("ENABLE_RAG", merged["ENABLE_RAG"]),
        memory_backend=as_choice("MEMORY_BACKEND", merged["MEMORY_BACKEND"], ("chromadb",)),
        rag_backend=as_choice("RAG_BACKEND", merged["RAG_BACKEND"], ("chromadb",)),
        data_dir=Path(as_str("AILB_DATA_DIR", merged["AILB_DATA_DIR"]) or "./data"),
        admin_key=Secret(as_str("AILB_ADMIN_KEY", merged["AILB_ADMIN_KEY"])),
        log_level=as_choice("LOG_LEVEL", merged["LOG_LEVEL"], LOG_LEVELS),
        server=_server(merged),
        upstream=_upstream(merged),
        health=_health(merged),
        routing=_routing(merged),
        prices=_prices(merged["PRICES"]),
        deployments=deployments,
        aliases=_aliases(merged["ALIASES"], deployments),
        config_path=config_path,
    )
