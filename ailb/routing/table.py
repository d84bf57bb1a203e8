"""Public model names -> the deployments (and upstream model names) that can serve them. Pure.

A request's ``model`` is resolved in this order:

1. an alias from the ``aliases:`` section (its own targets and strategy);
2. a model that deployments list (or that an Ollama deployment discovered): every such deployment;
3. ``deployment/model``: that deployment only, pinned (handy for debugging one upstream).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ailb.config.schema import AliasSettings, Settings
from ailb.errors import NotFound


@dataclass(frozen=True, slots=True)
class Target:
    deployment: str
    model: str  # the name the upstream knows the model by
    provider: str  # provider type: openai, anthropic, ollama, echo
    weight: float = 1.0
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Route:
    public: str
    targets: tuple[Target, ...]
    strategy: str
    owned_by: str
    label: str = ""  # bounded metric label: the public name, or "deployment/*" when pinned
    hedge_ms: float | None = None


class RouteTable:
    def __init__(self, settings: Settings,
                 runtime_aliases: Mapping[str, AliasSettings] | None = None,
                 weights: Mapping[str, int] | None = None) -> None:
        """``runtime_aliases`` (MarchProxy's UpdateRoutes) replace YAML aliases of their name;
        those naming a deployment that no longer exists are left out."""
        self._default_strategy = settings.routing_strategy
        self._deployments = {d.name: d for d in settings.deployments}
        self._aliases = {a.name: a for a in settings.aliases}
        self._weights = dict(weights or {})  # runtime traffic weights by deployment
        self.runtime_names: frozenset[str] = frozenset()
        for name, alias in (runtime_aliases or {}).items():
            if all(t.deployment in self._deployments for t in alias.targets):
                self._aliases[name] = alias
                self.runtime_names |= {name}
        self._cache: tuple[Mapping[str, tuple[str, ...]], dict[str, list[Target]]] | None = None

    def _target(self, deployment: str, model: str) -> Target:
        dep = self._deployments[deployment]
        if self._weights:  # runtime traffic weights are 0-100: the others count as 100 (or 0)
            weight = float(self._weights.get(deployment, 100 if dep.weight > 0 else 0))
        else:
            weight = dep.weight
        return Target(deployment, model, dep.type, weight, dep.priority)

    def _served(self, discovered: Mapping[str, tuple[str, ...]]) -> dict[str, list[Target]]:
        # Built once per discovered-models mapping (the health board replaces it on change).
        if self._cache is not None and self._cache[0] is discovered:
            return self._cache[1]
        served: dict[str, list[Target]] = {}
        for dep in self._deployments.values():
            for model in dep.models or discovered.get(dep.name, ()):
                served.setdefault(model, []).append(self._target(dep.name, model))
        self._cache = (discovered, served)
        return served

    def resolve(self, model: str, discovered: Mapping[str, tuple[str, ...]]) -> Route:
        """The route for ``model``. Raises NotFound (``model_not_found``)."""
        alias = self._aliases.get(model)
        if alias is not None:
            targets = tuple(self._target(t.deployment, t.model) for t in alias.targets)
            return Route(model, targets, alias.strategy or self._default_strategy, "ailb", model,
                         alias.hedge_ms)
        served = self._served(discovered).get(model)
        if served:
            return Route(model, tuple(served), self._default_strategy, served[0].provider, model)
        deployment, sep, upstream = model.partition("/")
        if sep and upstream and deployment in self._deployments:
            target = self._target(deployment, upstream)
            return Route(model, (target,), self._default_strategy, target.provider,
                         f"{deployment}/*")
        raise NotFound(f"The model `{model}` does not exist or is not routed by this gateway.",
                       param="model", code="model_not_found")

    def public_models(self, discovered: Mapping[str, tuple[str, ...]]) -> list[Route]:
        """One route per routable public name (aliases first), for ``GET /v1/models``."""
        routes = [self.resolve(name, discovered) for name in self._aliases]
        routes += [self.resolve(name, discovered) for name in self._served(discovered)
                   if name not in self._aliases]
        return routes
