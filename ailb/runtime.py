"""What a configuration makes live, and swapping it for another without dropping requests.

``apply`` builds a new router over the providers of the new settings (reusing the provider and
connection pool of every deployment that did not change), starts and stops health probes, brings
the YAML's keys, prices and accounting into effect, and returns the router; the caller swaps it
in with one assignment. Requests already running keep the router (and providers) they started
with; the clients of removed deployments are closed once their last request is done.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import trio

from ailb import logs
from ailb.accounting.gate import Gate
from ailb.config.schema import HealthSettings, Settings
from ailb.errors import ConfigError, ConfigErrors
from ailb.health import HealthBoard, probe_forever
from ailb.keys.registry import KeyRegistry, configured_record
from ailb.limits.runtime import RuntimeLimits
from ailb.metrics import Metrics
from ailb.pipeline.services import Services
from ailb.pricing import PriceTable
from ailb.providers.base import Provider
from ailb.providers.registry import ProviderPool
from ailb.routing.router import CooldownHook, Router
from ailb.routing.runtime_routes import RuntimeRoutes
from ailb.routing.table import RouteTable
from ailb.routing.traffic import TrafficWeights
from ailb.systemd import Notifier

_log = logging.getLogger("ailb.runtime")
RETIRE_POLL_S = 0.1


@dataclass(slots=True)
class _Probe:
    provider: Provider
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class Runtime:
    def __init__(self, pool: ProviderPool, board: HealthBoard, metrics: Metrics,
                 keys: KeyRegistry, gate: Gate, nursery: trio.Nursery,
                 limits: RuntimeLimits, routes: RuntimeRoutes,
                 traffic: TrafficWeights, on_cooldown: CooldownHook | None = None) -> None:
        """``on_cooldown``: given to every router (e.g. ``SharedCooldowns.report``)."""
        self._on_cooldown = on_cooldown
        self._limits = limits
        self.routes = routes
        self.traffic = traffic
        self.settings: Settings | None = None
        self._pool = pool
        self._board = board
        self._metrics = metrics
        self._keys = keys
        self._gate = gate
        self._nursery = nursery
        self._rng = random.Random()
        self._probes: dict[str, _Probe] = {}
        self._health: HealthSettings | None = None
        self.router: Router | None = None

    def apply(self, settings: Settings) -> Router:
        providers, retired = self._pool.update(settings.deployments, settings.upstream)
        self._board.sync(list(providers))
        previous = self.router
        prices = PriceTable(settings.prices)
        table = RouteTable(settings, self.routes.aliases(), self.traffic.weights())
        router = Router(table, providers, self._board, self._metrics, settings.upstream,
                        settings.routing, prices, previous=previous,
                        runtime_limits=self._limits, on_cooldown=self._on_cooldown)
        self._sync_probes(providers, settings.health)
        self._keys.apply_config(configured_record(configured, self._gate.wall_now())
                                for configured in settings.keys)
        self._nursery.start_soon(self._keys.save_config)
        self._gate.configure(prices, settings.accounting.period,
                             settings.accounting.default_max_tokens)
        for name, client in retired:
            self._nursery.start_soon(self._retire, name, client, previous)
        self.router = router
        self.settings = settings
        return router

    def _sync_probes(self, providers: dict[str, Provider], health: HealthSettings) -> None:
        restart_all = health != self._health
        self._health = health
        for name, probe in list(self._probes.items()):
            if restart_all or providers.get(name) is not probe.provider:
                probe.scope.cancel()
                del self._probes[name]
        for name, provider in providers.items():
            if name not in self._probes:
                probe = self._probes[name] = _Probe(provider)
                self._nursery.start_soon(self._run_probe, probe, health)

    async def _run_probe(self, probe: _Probe, health: HealthSettings) -> None:
        with probe.scope:
            await probe_forever(probe.provider, self._board, health, self._metrics, self._rng)

    async def _retire(self, name: str, client: httpx.AsyncClient,
                      previous: Router | None) -> None:
        stats = previous.stats().get(name) if previous else None
        # A plain counter: poll it. Rare (a reload), cheap, and ends with the last request.
        while stats is not None and stats.in_flight > 0:  # noqa: ASYNC110
            await trio.sleep(RETIRE_POLL_S)
        await client.aclose()
        logs.event(_log, "retired a deployment's connection pool", deployment=name)


def restart_needed(old: Settings, new: Settings) -> list[str]:
    """Settings a reload cannot change in a running process (a restart applies them)."""
    changed = []
    if old.server != new.server:
        changed.append("HOST/HTTP_PORT/GRPC_PORT/SERVER")
    if old.data_dir != new.data_dir:
        changed.append("AILB_DATA_DIR")
    if old.admin_key != new.admin_key:
        changed.append("AILB_ADMIN_KEY")
    if old.log_level != new.log_level:
        changed.append("LOG_LEVEL")
    if old.workers != new.workers:
        changed.append("WORKERS")
    if old.shared != new.shared:
        changed.append("DATABASE_URL/REDIS_URL/SHARED")
    if old.accounting.ledger_ack != new.accounting.ledger_ack:
        changed.append("ACCOUNTING.ledger_ack")
    if old.metrics != new.metrics:
        changed.append("METRICS")
    knowledge = ("enable_memory", "enable_rag", "chroma_url", "embeddings", "memory", "rag",
                 "cache")
    if any(getattr(old, name) != getattr(new, name) for name in knowledge):
        changed.append("ENABLE_MEMORY/ENABLE_RAG/CHROMA_URL/EMBEDDINGS/MEMORY/RAG/CACHE")
    return changed


class Reloader:
    """SIGHUP and the gRPC ``Reload``: read the configuration again and swap it in, or keep the
    running one (and say why in the log, ``/healthz`` and ``ailb_config_reloads_total``)."""

    def __init__(self, services: Services, runtime: Runtime, notifier: Notifier,
                 load: Callable[[], Settings]) -> None:
        self._services = services
        self._runtime = runtime
        self._notifier = notifier
        self._load = load

    def reload(self) -> bool:
        services, state = self._services, self._services.config
        self._notifier.reloading()
        try:
            try:
                settings = self._load()
            except ConfigError as exc:  # every problem of the file, not only the first
                state.last_error = str(exc)
                state.failures += 1
                services.metrics.reloads.labels(outcome="failed").inc()
                errors = exc.errors if isinstance(exc, ConfigErrors) else (exc,)
                logs.event(_log, "configuration reload refused; the running configuration "
                           "stays", logging.ERROR, error=str(exc),
                           errors=[str(error) for error in errors])
                return False
            for what in restart_needed(services.settings, settings):
                logs.event(_log, f"{what} changed: a restart applies it", logging.WARNING)
            services.router = self._runtime.apply(settings)
            services.settings = settings
            state.generation += 1
            state.loaded_at = time.time()
            state.last_error = None
            services.metrics.reloads.labels(outcome="ok").inc()
            logs.event(_log, "configuration reloaded", generation=state.generation,
                       deployments=[d.name for d in settings.deployments])
            return True
        finally:
            self._notifier.ready("serving")
