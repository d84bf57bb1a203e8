"""Deployments (from the guide's variables and the ``deployments:`` list) and aliases.

``OPENAI_API_KEY`` makes a deployment named ``openai``, ``ANTHROPIC_API_KEY`` one named
``anthropic``, ``OLLAMA_BASE_URL`` one named ``ollama``; ``OPENAI_BASE_URL`` other than OpenAI's
own also makes ``openai``, for keyless OpenAI-compatible servers. With none at all, the offline
``echo`` deployment serves ``ECHO_MODELS`` so that a fresh install answers. Pure: ``environ`` is
only read for ``api_key_env`` references.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

from ailb.config.problems import Problems
from ailb.config.schema import (
    PROVIDER_TYPES,
    STRATEGIES,
    AliasSettings,
    AliasTarget,
    DeploymentSettings,
)
from ailb.config.values import (
    Secret,
    as_choice,
    as_float,
    as_int,
    as_models,
    as_name,
    as_str,
    as_url,
)
from ailb.errors import ConfigError, MissingSecret

OPENAI_DEFAULT_URL: Final = "https://api.openai.com/v1"
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


def _openai(merged: Mapping[str, Any]) -> DeploymentSettings | None:
    openai_key = as_str("OPENAI_API_KEY", merged["OPENAI_API_KEY"])
    openai_url = as_url("OPENAI_BASE_URL", merged["OPENAI_BASE_URL"])
    if not openai_key and openai_url == OPENAI_DEFAULT_URL:
        return None
    return DeploymentSettings(
        name="openai", type="openai", base_url=openai_url, api_key=Secret(openai_key),
        models=as_models("OPENAI_MODELS", merged["OPENAI_MODELS"]))


def _anthropic(merged: Mapping[str, Any]) -> DeploymentSettings | None:
    anthropic_key = as_str("ANTHROPIC_API_KEY", merged["ANTHROPIC_API_KEY"])
    if not anthropic_key:
        return None
    return DeploymentSettings(
        name="anthropic", type="anthropic",
        base_url=as_url("ANTHROPIC_BASE_URL", merged["ANTHROPIC_BASE_URL"]),
        api_key=Secret(anthropic_key),
        models=as_models("ANTHROPIC_MODELS", merged["ANTHROPIC_MODELS"]))


def _ollama(merged: Mapping[str, Any]) -> DeploymentSettings | None:
    if not as_str("OLLAMA_BASE_URL", merged["OLLAMA_BASE_URL"]):
        return None
    return DeploymentSettings(
        name="ollama", type="ollama",
        base_url=as_url("OLLAMA_BASE_URL", merged["OLLAMA_BASE_URL"]),
        models=as_models("OLLAMA_MODELS", merged["OLLAMA_MODELS"]))


def _env_deployments(p: Problems, merged: Mapping[str, Any]) -> list[DeploymentSettings]:
    made = p.each((_openai, _anthropic, _ollama), lambda make: make(merged))
    return [deployment for deployment in made if deployment is not None]


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
            raise MissingSecret(f"{where}.api_key_env", f"names {var}, which is not set")
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


def declared_names(merged: Mapping[str, Any]) -> set[str]:
    """The names the ``deployments:`` list gives, valid entries or not."""
    declared = merged["DEPLOYMENTS"]
    return {str(item["name"]) for item in declared if isinstance(item, Mapping) and
            "name" in item} if isinstance(declared, list) else set()


def parse_deployments(
    p: Problems, merged: Mapping[str, Any], environ: Mapping[str, str]
) -> tuple[DeploymentSettings, ...]:
    """Every deployment; a wrong entry is recorded in ``p`` (its first problem) and left out.
    Raises ConfigError when ``DEPLOYMENTS`` is not a list, or a name is used twice."""
    declared_raw = merged["DEPLOYMENTS"] or []
    if not isinstance(declared_raw, list):
        raise ConfigError("DEPLOYMENTS", "must be a list of deployments")
    found = _env_deployments(p, merged)
    found += p.each(enumerate(declared_raw),
                    lambda item: _declared_deployment(item[0], item[1], environ))
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


def _alias(alias_name: Any, body: Any, names: set[str]) -> AliasSettings:
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
    return AliasSettings(name=public, targets=targets, strategy=strategy, hedge_ms=hedge_ms)


def parse_aliases(
    p: Problems, raw: Any, deployments: tuple[DeploymentSettings, ...],
    also_named: Iterable[str] = ()
) -> tuple[AliasSettings, ...]:
    """Every alias; a wrong one is recorded in ``p`` (its first problem) and left out. A
    target may name a deployment of ``deployments`` or of ``also_named`` (a declared
    deployment whose entry is wrong: that is its own problem). Raises ConfigError when
    ``ALIASES`` is not a mapping."""
    if raw is None:
        return ()
    if not isinstance(raw, Mapping):
        raise ConfigError("ALIASES", "must be a mapping of public model name to targets")
    names = {d.name for d in deployments} | set(also_named)
    return tuple(p.each(raw.items(), lambda item: _alias(item[0], item[1], names)))
