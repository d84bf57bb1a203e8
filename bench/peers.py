"""Opt-in peers measured beside AILB: Portkey's gateway (npm) and LiteLLM's proxy (PyPI).

Both are pinned to the versions the issue's table was measured with, installed on first use
into bench/.peers/ (git-ignored): Portkey with the machine's npm, LiteLLM in its own venv made
with python3.11 (or python3). Each is started on the same fake upstream as the other targets,
bound to 127.0.0.1, pinned to the gateway's core. When an install fails, ``BenchError`` says
why in one line and the run goes on without that peer.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import canned
from procs import BenchError, child_env, free_port, spawn, wait_http_ok
from targets import HERE, MODELS, SHAPE_MODELS, Target
from upstream import Upstream

PEERS_DIR = HERE / ".peers"
PORTKEY_VERSION = "1.15.2"
# Portkey's own lockfile pins @hono/node-server 1.13.5; npm would otherwise resolve its "^1.3.3"
# to 1.19.x, with which every streamed completion fails ("TypeError: immutable",
# Portkey-AI/gateway#1389, #1550).
HONO_NODE_SERVER_VERSION = "1.13.5"
LITELLM_VERSION = "1.108.7"
PEER_NAMES = ("portkey", "litellm")
LITELLM_KEY = "sk-bench-litellm"

# Node's net.Server.listen(port) without a host binds every interface (Portkey's start-server
# does so): bind it to loopback.
_LOOPBACK_PRELOAD = """'use strict';
const net = require('net');
const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (...args) {
  if (typeof args[0] === 'number' || /^[0-9]+$/.test(String(args[0]))) {
    if (typeof args[1] !== 'string') args.splice(1, 0, '127.0.0.1');
  } else if (args[0] && typeof args[0] === 'object' && !args[0].path && !args[0].host) {
    args[0] = Object.assign({}, args[0], {host: '127.0.0.1'});
  }
  return listen.apply(this, args);
};
"""


def _run(argv: list[str], log: Path, cwd: Path | None = None, timeout: float = 900) -> bool:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            return subprocess.run(argv, stdout=out, stderr=out, cwd=cwd, env=child_env(),
                                  timeout=timeout).returncode == 0
        except (OSError, subprocess.TimeoutExpired) as exc:
            out.write(f"{exc!r}\n".encode())
            return False


def _node_version(root: Path, package: str) -> str | None:
    try:
        return str(json.loads((root / "node_modules" / package / "package.json").read_text())
                   ["version"])
    except (OSError, ValueError, KeyError):
        return None


def ensure_portkey(log: Path) -> Path:
    """The gateway's start-server.js, installed if needed. Raises BenchError."""
    root = PEERS_DIR / "portkey"
    want = {"@portkey-ai/gateway": PORTKEY_VERSION, "@hono/node-server": HONO_NODE_SERVER_VERSION}
    if any(_node_version(root, p) != v for p, v in want.items()):
        npm = shutil.which("npm")
        if npm is None or shutil.which("node") is None:
            raise BenchError("node/npm not found: install Node.js to measure Portkey")
        root.mkdir(parents=True, exist_ok=True)
        (root / "package.json").write_text(json.dumps({
            "name": "ailb-bench-portkey", "private": True,
            "dependencies": {"@portkey-ai/gateway": PORTKEY_VERSION},
            "overrides": {"@hono/node-server": HONO_NODE_SERVER_VERSION}}, indent=2) + "\n")
        shutil.rmtree(root / "node_modules", ignore_errors=True)
        (root / "package-lock.json").unlink(missing_ok=True)
        print(f"installing @portkey-ai/gateway@{PORTKEY_VERSION} into {root} (log {log})",
              flush=True)
        if not _run([npm, "install", "--no-audit", "--no-fund"], log, cwd=root):
            raise BenchError(f"npm install of @portkey-ai/gateway@{PORTKEY_VERSION} failed "
                             f"(see {log})")
    (root / "bind-loopback.cjs").write_text(_LOOPBACK_PRELOAD)
    js = root / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"
    if not js.exists():
        raise BenchError(f"{js} missing after install")
    return js


def _litellm_installed(venv: Path) -> bool:
    py = venv / "bin" / "python"
    if not py.exists():
        return False
    out = subprocess.run([str(py), "-c", "import importlib.metadata as m; "
                          "print(m.version('litellm'))"], capture_output=True, text=True)
    return out.stdout.strip() == LITELLM_VERSION and (venv / "bin" / "litellm").exists()


def ensure_litellm(log: Path) -> Path:
    """The venv's litellm executable, installed if needed. Raises BenchError."""
    venv = PEERS_DIR / "litellm-venv"
    if not _litellm_installed(venv):
        python = shutil.which("python3.11") or shutil.which("python3")
        if python is None:
            raise BenchError("no python3.11 or python3 to make LiteLLM's venv")
        print(f"installing litellm[proxy]=={LITELLM_VERSION} into {venv} (log {log})",
              flush=True)
        shutil.rmtree(venv, ignore_errors=True)
        pip = str(venv / "bin" / "pip")
        if not (_run([python, "-m", "venv", str(venv)], log)
                and _run([pip, "install", "-q", f"litellm[proxy]=={LITELLM_VERSION}"], log)):
            raise BenchError(f"pip install of litellm[proxy]=={LITELLM_VERSION} failed "
                             f"(see {log})")
    return venv / "bin" / "litellm"


def ensure(name: str, logs: Path) -> Path:
    return (ensure_portkey if name == "portkey" else ensure_litellm)(logs / f"install-{name}.log")


def portkey(up: Upstream, core: int | None, logs: Path) -> Target:
    js = ensure("portkey", logs)
    port = free_port()
    root = PEERS_DIR / "portkey"
    argv = ["node", "--require", str(root / "bind-loopback.cjs"), str(js), f"--port={port}",
            "--headless"]
    child = spawn("portkey", argv, core=core, log_path=logs / "portkey.log", env=child_env(),
                  cwd=root)
    # Portkey routes by headers: the provider and the upstream's base URL, per request.
    hosts = {"json": up.base_url(False), "stream": up.base_url(True),
             "long": up.base_url(True, events=canned.STREAM_LONG_CHUNKS),
             "paced": up.base_url(True, paced=True)}
    target = Target("portkey", f"Portkey gateway {PORTKEY_VERSION} (Node {_node()})", port,
                    port, child.pid, auth="x", child=child,
                    route_headers={k: {"x-portkey-provider": "openai",
                                       "x-portkey-custom-host": v} for k, v in hosts.items()})
    try:
        wait_http_ok(child, port, "/", timeout=60)
    except BaseException:
        target.close()
        raise
    return target


def _node() -> str:
    try:
        return subprocess.run(["node", "--version"], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except OSError:
        return "?"


def litellm_config(up: Upstream) -> str:
    entries = [(MODELS[False], up.base_url(False)), (MODELS[True], up.base_url(True)),
               (SHAPE_MODELS["long"], up.base_url(True, events=canned.STREAM_LONG_CHUNKS)),
               (SHAPE_MODELS["paced"], up.base_url(True, paced=True))]
    models = "".join(f"  - model_name: {m}\n    litellm_params:\n      model: openai/{m}\n"
                     f"      api_base: {json.dumps(url)}\n      api_key: x\n"
                     for m, url in entries)
    return f"model_list:\n{models}general_settings:\n  master_key: {LITELLM_KEY}\n"


def litellm(up: Upstream, core: int | None, logs: Path, tmp: Path) -> Target:
    exe = ensure("litellm", logs)
    port = free_port()
    config = tmp / "litellm.yaml"
    config.write_text(litellm_config(up))
    run_dir = tmp / "litellm-run"
    run_dir.mkdir(exist_ok=True)
    # No database (no DATABASE_URL); the bundled price map, not a download from GitHub.
    env = child_env({"LITELLM_LOCAL_MODEL_COST_MAP": "True"},
                    strip=("DATABASE_URL", "REDIS_URL", "OPENAI_API_KEY", "OPENAI_BASE_URL"))
    argv = [str(exe), "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    child = spawn("litellm", argv, core=core, log_path=logs / "litellm.log", env=env,
                  cwd=run_dir)
    target = Target("litellm", f"LiteLLM proxy {LITELLM_VERSION} (1 worker, no DB)", port, port,
                    child.pid, auth=LITELLM_KEY, child=child)
    try:
        wait_http_ok(child, port, "/health/liveliness", timeout=180)
    except BaseException:
        target.close()
        raise
    return target


COMPARE_COLUMNS = ("scenario", "conc", "target", "CPU ms/req", "CPU÷PT", "CPU÷Portkey",
                   "p50 ms", "p50 - direct ms")


def compare_rows(ms: list[Any]) -> list[list[str]]:
    """AILB and the peers side by side against the pass-through (PT), Portkey and direct, per
    scenario and concurrency; empty when no peer was measured."""
    if not any(m.target in PEER_NAMES for m in ms):
        return []
    by = {(m.target, m.scenario, m.concurrency): m for m in ms}

    def f(v: float | None, d: int = 2) -> str:
        return "-" if v is None else f"{v:.{d}f}"

    def div(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    out = []
    for scenario, conc in sorted({(m.scenario, m.concurrency) for m in ms}):
        pt, pk, d = (by.get((n, scenario, conc)) for n in ("passthrough", "portkey", "direct"))
        for name in ("passthrough", "ailb", "ailb-key", "portkey", "litellm"):
            if (m := by.get((name, scenario, conc))) is None:
                continue
            added = (m.p50_ms - d.p50_ms if d and m.p50_ms is not None and d.p50_ms is not None
                     else None)
            out.append([scenario, str(conc), name, f(m.cpu_ms_per_req, 3),
                        f(div(m.cpu_ms_per_req, pt and pt.cpu_ms_per_req)),
                        f(div(m.cpu_ms_per_req, pk and pk.cpu_ms_per_req)), f(m.p50_ms),
                        f(added)])
    return out


def start(name: str, up: Upstream, core: int | None, logs: Path, tmp: Path) -> Target:
    return portkey(up, core, logs) if name == "portkey" else litellm(up, core, logs, tmp)


if __name__ == "__main__":  # install both ahead of a run: python bench/peers.py
    out = HERE / "out"
    for peer in PEER_NAMES:
        try:
            print(peer, ensure(peer, out))
        except BenchError as exc:
            print(f"{peer}: {exc}")
