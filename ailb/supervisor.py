"""The one long-lived nursery tree.

::

    run()                                   outer nursery: lives as long as the process
    ├── signal watcher                      SIGINT/SIGTERM: shutdown; SIGHUP: reload
    ├── runtime state follower              a worker of several: the others' runtime changes
    ├── systemd watchdog                    WATCHDOG=1 while the event loop is alive
    ├── spend ledger writer                 group commits of ledger rows; flushed at the end
    ├── shared-state probes                 ping the store / Redis while it is down
    ├── key refresh                         shared keys: reload when keys_version moves
    ├── cooldown sharer                     REDIS_URL: write ours, apply other gateways'
    ├── coredis task group                  REDIS_URL: the client's connections (exit stack)
    ├── memory writer                       batches conversation turns; flushed at the end
    ├── span exporter                       OTEL_* endpoint set: OTLP/HTTP batches; flushed
    ├── probe_forever(deployment) x N       health of each deployment (restarted on reload)
    ├── pool retirements                    close a removed deployment's pool when idle
    └── inner nursery                       the servers
        ├── hypercorn.trio.serve(app)       HTTP (stops accepting when shutdown is set)
        └── serve_grpc                      ModuleService + ailb.v1.Gateway, health and
                                            reflection (trio-asyncio loop)

Shutdown: the event is set -> /readyz and gRPC health say not ready (gRPC health watchers are
told before going on) -> after SERVER.unready_delay_s new requests get 503 and Hypercorn stops
accepting (and closes idle keep-alive connections) -> in-flight requests and streams get up to
``SERVER.grace_s`` -> streams still open end with an error event
-> everything left is cancelled -> provider clients close -> ``run`` returns (exit code 0).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import time
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from functools import partial

import httpx
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve

from ailb import logs
from ailb.audit.log import AuditLog
from ailb.build_info import version
from ailb.config.schema import Settings
from ailb.config.settings import load_settings
from ailb.config.values import Secret
from ailb.console.sessions import ConsoleSessions
from ailb.grpc_api.bridge import serve_grpc, tls_context
from ailb.grpc_api.health import GrpcHealth
from ailb.health import HealthBoard
from ailb.http_api import h11_errors
from ailb.http_api.app import create_app
from ailb.keys.auth import AuthEvent, Door, KeyAuthenticator, ThrottledAuthenticator
from ailb.keys.bootstrap import data_dir_lock, ensure_admin_key
from ailb.keys.registry import KeyRegistry
from ailb.keys.throttle import AuthThrottle, ThrottlePolicy
from ailb.knowledge import RoutedEmbeddings, open_knowledge
from ailb.lifecycle import Lifecycle, Running
from ailb.limits.runtime import RuntimeLimits
from ailb.metrics import Metrics
from ailb.pipeline.drain import Drain
from ailb.pipeline.services import Services
from ailb.providers.registry import ProviderPool
from ailb.rag.ingest_jobs import IngestJobs
from ailb.routing.runtime_routes import RuntimeRoutes
from ailb.routing.traffic import TrafficWeights
from ailb.runtime import Reloader, Runtime
from ailb.stores.assemble import open_accounting, run_accounting
from ailb.systemd import Notifier
from ailb.workers.follow import follow_state_files
from ailb.workers.listeners import adopt
from ailb.workers.recent_files import RECENT_DIR, RecentFiles, share_forever
from ailb.workers.role import WorkerRole

_log = logging.getLogger("ailb")


def _utc_now() -> datetime:
    return datetime.now(UTC)


STREAM_CUT_WAIT_S = 1.0  # after the grace period: time for cut streams to send their last event
MAX_HEAD_BYTES = 16 * 1024  # Hypercorn's own default, stated: a request head beyond gets 431


def _hypercorn_config(settings: Settings, worker: WorkerRole | None) -> HypercornConfig:
    cfg = HypercornConfig()
    cfg.bind = [f"fd://{worker.http_fd}" if worker else
                f"{settings.server.host}:{settings.server.http_port}"]
    cfg.accesslog = None
    cfg.errorlog = logging.getLogger("hypercorn.error")
    # Our own drain decides when to stop; Hypercorn must not cut connections before it does.
    cfg.graceful_timeout = settings.server.grace_s + STREAM_CUT_WAIT_S + 5
    # armed after every response (ailb.http_api.connection) and while a request's head arrives
    cfg.keep_alive_timeout = settings.server.keep_alive_s
    # the request line and headers together: more is answered 431 (ailb.http_api.h11_errors)
    cfg.h11_max_incomplete_size = MAX_HEAD_BYTES
    return cfg


async def _watch_signals(shutdown: trio.Event, reloader: Reloader, services: Services,
                         audits_reload: bool) -> None:
    """SIGTERM/SIGINT stop; SIGHUP reloads, recorded in the audit log when ``audits_reload``
    (one process of an instance: with workers, the parent sends SIGHUP to each of them)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP:
                ok = reloader.reload()
                if not audits_reload:
                    continue
                config = services.config
                path = services.settings.config_path
                await services.audit.record(
                    actor="signal", door="process", action="config.reload",
                    target=str(path) if path else "", outcome="ok" if ok else "refused",
                    changes={"generation": config.generation} if ok else
                    {"error": config.last_error or "reload refused"})
                continue
            logs.event(_log, "shutdown requested", signal=signal.Signals(signum).name)
            shutdown.set()


def _announce(settings: Settings, services: Services, url: str, generated: bool) -> None:
    deployments = [{"name": d.name, "type": d.type, "models": list(d.models)}
                   for d in settings.deployments]
    logs.event(_log, "AILB is serving", http=url, deployments=deployments,
               config=str(settings.config_path) if settings.config_path else None)
    if all(d.type == "echo" for d in settings.deployments):
        logs.event(_log, "no provider is configured: the built-in offline `echo` deployment "
                   "answers. Set OPENAI_API_KEY (and OPENAI_MODELS), ANTHROPIC_API_KEY or "
                   "OLLAMA_BASE_URL, or declare `deployments:` in the YAML, to route to real "
                   "models.", logging.WARNING)
    if services.memory is not None or services.rag is not None:
        logs.event(_log, "vector stores open", embedder=settings.embeddings.embedder,
                   memory=services.memory.store.where if services.memory else None,
                   rag=services.rag.store.where if services.rag else None)
    if services.admin_key_file is not None:
        what = "generated on first start into" if generated else "read from"
        logs.event(_log, f"admin key {what} {services.admin_key_file}; send it as "
                   "`Authorization: Bearer <key>` (or set AILB_ADMIN_KEY)", logging.WARNING,
                   admin_key_file=str(services.admin_key_file))


async def run(
    settings: Settings,
    *,
    handle_signals: bool = False,
    transport: httpx.AsyncBaseTransport | None = None,
    wall_clock: Callable[[], datetime] = _utc_now,
    load: Callable[[], Settings] | None = None,
    environ: Mapping[str, str] | None = None,
    freeze_heap: bool = False,
    worker: WorkerRole | None = None,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until shutdown is requested (a signal, or ``Running.request_shutdown``).

    ``load`` reads the configuration again for a reload (SIGHUP, ``Running.reload``); by
    default the same file and the process environment. ``environ`` is where systemd's
    ``NOTIFY_SOCKET`` and ``WATCHDOG_USEC`` are looked up (default: none, no notifications).
    ``freeze_heap`` (the real process, not tests) moves everything alive once serving starts
    out of the garbage collector's sight: the modules and stores loaded at start-up are most of
    the heap, and a full collection walking them stalled the event loop ~200 ms.
    ``worker``: this process is one of several under a parent (:mod:`ailb.workers`): it serves
    the parent's sockets, leaves the data dir lock to the parent, shares its metrics and vector
    stores with the other workers, follows their runtime changes, and passes instance-wide
    requests (reload, shutdown) to the parent.
    Reports a :class:`Running` once the HTTP and gRPC servers listen. Raises ConfigError when
    the data dir (or a runtime state file in it) is unusable, OSError when a port cannot be
    bound.
    """
    async with AsyncExitStack() as stack:
        if worker is None:  # a worker's parent holds it for the instance
            stack.enter_context(data_dir_lock(settings.data_dir))
        admin_key, key_file, generated = ensure_admin_key(settings.admin_key, settings.data_dir)
        notifier = Notifier(environ or {})
        metrics = Metrics(worker.metrics_dir if worker else None,
                          settings.metrics.per_key_limit)
        accounting = await open_accounting(settings, stack, metrics, wall_clock)
        keys, gate, health = accounting.keys, accounting.gate, accounting.health
        pool = ProviderPool(transport)
        stack.push_async_callback(pool.aclose)
        board = HealthBoard([])
        runtime_limits = RuntimeLimits(settings.data_dir, trio.current_time())
        shutdown = trio.Event()
        # the provider embedder calls whichever router is live then (``services`` comes next)
        redis = accounting.redis
        knowledge = await open_knowledge(settings, metrics,
                                         RoutedEmbeddings(lambda: services.router),
                                         redis.responses if redis else None,
                                         worker.vector_servers if worker else None)
        stack.callback(knowledge.close)  # after the nursery: the memory writer is done
        async with trio.open_nursery() as outer:
            runtime = Runtime(pool, board, metrics, keys, gate, outer, runtime_limits,
                              RuntimeRoutes(settings.data_dir),
                              TrafficWeights(settings.data_dir),
                              redis.cooldowns.report if redis else None)
            services = Services(settings=settings, router=runtime.apply(settings), board=board,
                                metrics=metrics, drain=Drain(), gate=gate, keys=keys,
                                runtime_limits=runtime_limits,
                                audit=AuditLog(accounting.store, metrics.audit_write_failures,
                                               wall_clock),
                                auth=_authenticator(settings, admin_key, keys, wall_clock,
                                                    metrics),
                                admin_key_file=key_file)
            services.memory, services.rag = knowledge.memory, knowledge.rag
            services.responses = knowledge.responses
            services.stored_responses = accounting.store
            services.console = ConsoleSessions(accounting.store,
                                               lambda: services.settings.console, time.time,
                                               admin_key.value)
            services.shared = health
            reloader = Reloader(services, runtime, notifier,
                                load or partial(_reload_same_file, settings))
            lifecycle = Lifecycle(reloader, runtime, shutdown,
                                  parent_pid=worker.parent_pid if worker else None)
            if handle_signals:
                # worker 0 alone records a reload: one entry for one SIGHUP of the instance
                outer.start_soon(_watch_signals, shutdown, reloader, services,
                                 worker is None or worker.index == 0)
            if worker is not None:
                outer.start_soon(follow_state_files, services, lifecycle)
                services.recent_files = RecentFiles(settings.data_dir / RECENT_DIR, worker.slot)
                outer.start_soon(share_forever, services.recent, services.recent_files)
            outer.start_soon(notifier.watchdog_forever)
            await run_accounting(accounting, settings, outer, lambda: services.router.stats())
            if services.rag is not None:
                rag = settings.rag
                services.rag_jobs = IngestJobs(services.rag, accounting.store, services.drain,
                                               workers=rag.job_workers, queue=rag.job_queue,
                                               queue_bytes=rag.job_queue_bytes)
                await outer.start(services.rag_jobs.run)
            if services.memory is not None:
                await outer.start(services.memory.writer.run)
                services.memory.publish_metrics()
            exporter = None
            if settings.tracing.enabled:  # off: no tracer, no exporter, no task
                # imported only here: the OpenTelemetry SDK and OTLP encoder are ~5 MiB resident
                from ailb.telemetry.export import SpanExporter
                from ailb.telemetry.tracer import OtelTracer

                exporter = SpanExporter(settings.tracing, metrics)
                await outer.start(exporter.run)
                services.tracer = OtelTracer(settings.tracing, version(), exporter.offer)
            async with trio.open_nursery() as servers:
                stop_accepting = trio.Event()
                h11_errors.install()  # Hypercorn's own 400/431 answers in our error shape
                binds = await servers.start(partial(
                    serve, create_app(services), _hypercorn_config(settings, worker),
                    shutdown_trigger=stop_accepting.wait))
                url = str(binds[0]).replace("0.0.0.0", "127.0.0.1")
                grpc_health = GrpcHealth(services)
                grpc_port = await servers.start(partial(
                    serve_grpc, services, lifecycle, settings.server.host,
                    settings.server.grpc_port, tls_context(settings.grpc),
                    sock=adopt(worker.grpc_fd) if worker else None, health=grpc_health))
                _announce(settings, services, url, generated)
                if freeze_heap:
                    gc.freeze()
                notifier.ready("serving")  # HTTP and gRPC listen, the stores are open
                task_status.started(Running(url, grpc_port, services, lifecycle))
                await shutdown.wait()
                notifier.stopping()
                services.drain.mark_unready()
                grpc_health.changed()  # gRPC health watchers are told NOT_SERVING now
                logs.event(_log, "not ready: draining starts",
                           delay_s=settings.server.unready_delay_s)
                await trio.sleep(settings.server.unready_delay_s)
                services.drain.begin()
                await grpc_health.end_watches()  # they would never end by themselves
                stop_accepting.set()
                await _drain(services, lifecycle.grace_s if lifecycle.grace_s is not None
                             else settings.server.grace_s)
                servers.cancel_scope.cancel()
            if exporter is not None:  # every request's span has ended: send what is left
                await exporter.close(min(settings.tracing.timeout_s, settings.server.grace_s))
            if services.memory is not None:
                await services.memory.writer.close()  # every turn queued so far is written
            await accounting.ledger.close()  # every request is settled by now: write them
            outer.cancel_scope.cancel()
    logs.event(_log, "AILB stopped")


def _authenticator(settings: Settings, admin_key: Secret, keys: KeyRegistry,
                   wall_clock: Callable[[], datetime], metrics: Metrics) -> ThrottledAuthenticator:
    """Keys checked behind the failed-authentication throttle (SERVER.auth_failure_*; a
    restart applies a change), counted in the metrics."""
    server = settings.server
    throttle = AuthThrottle(ThrottlePolicy(server.auth_failure_limit,
                                           server.auth_failure_window_s,
                                           server.auth_failure_addresses))

    def count(event: AuthEvent, door: Door) -> None:
        (metrics.auth_failures if event == "failed" else metrics.auth_throttled).labels(
            door=door).inc()

    return ThrottledAuthenticator(KeyAuthenticator(admin_key, keys, wall_clock), throttle,
                                  time.monotonic, count)


def _reload_same_file(settings: Settings) -> Settings:
    path = str(settings.config_path) if settings.config_path else None
    return load_settings(path, os.environ)


async def _drain(services: Services, grace_s: float) -> None:
    drain = services.drain
    logs.event(_log, "draining", in_flight=drain.in_flight, grace_s=grace_s)
    with trio.move_on_after(grace_s):
        await drain.wait_idle()
    if drain.in_flight:
        logs.event(_log, "grace period over: ending open streams", logging.WARNING,
                   in_flight=drain.in_flight)
        drain.cut_streams()
        with trio.move_on_after(STREAM_CUT_WAIT_S):
            await drain.wait_idle()
