"""The fake upstream: nginx with a generated config (or the Python fallback) on two ports.

One server block answers ``POST /v1/chat/completions`` with a fixed ``chat.completion`` JSON,
the other with a 20-chunk SSE stream; both answer ``GET /v1/models``. With nginx's echo module
the stream's events are sent as separate flushed chunks ``gap_ms`` apart, as a real model
would; without it the whole stream is one ``return`` body. The SSE server also answers under
two prefixes: ``/e200/v1/...`` a 200-chunk stream (same pacing; bench/stream_cost.py) and
``/paced/v1/...`` the 20-chunk stream with ``canned.PACED_GAP_MS`` between events
(bench/capacity.py; needs the echo module).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import canned
from procs import (
    BenchError,
    Child,
    child_env,
    free_port,
    http_get,
    http_post,
    spawn,
    stop,
    wait_http_ok,
)

ECHO_MODULE = Path("/usr/lib/nginx/modules/ngx_http_echo_module.so")
HERE = Path(__file__).resolve().parent
STATUS_PATH = "/bench-status"


@dataclass
class Upstream:
    kind: str  # "nginx" or "python"
    child: Child
    json_port: int
    sse_port: int
    stream_mode: str
    version: str
    notes: list[str] = field(default_factory=list)

    def base_url(self, stream: bool, events: int | None = None, paced: bool = False) -> str:
        """The OpenAI base URL; ``events=200``: the long stream; ``paced``: 20 ms apart."""
        prefix = "/paced" if paced else f"/e{events}" if events else ""
        return f"http://127.0.0.1:{self.sse_port if stream else self.json_port}{prefix}/v1"

    def accepted(self) -> int | None:
        """Connections nginx accepted so far (stub_status), this query's own included: the
        connections opened between two calls are the difference minus one."""
        if self.kind != "nginx":
            return None
        try:
            status, body = http_get(self.json_port, STATUS_PATH)
            # "Active connections: 1 \nserver accepts handled requests\n 7 7 9 \n..."
            return int(body.split(b"\n")[2].split()[0]) if status == 200 else None
        except (OSError, ValueError, IndexError):
            return None

    @property
    def main_pid(self) -> int:
        return self.child.pid

    def close(self) -> None:
        stop(self.child)


def _apt_install(packages: list[str], log: Path) -> bool:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        return False
    env = child_env({"DEBIAN_FRONTEND": "noninteractive"})
    with log.open("ab") as out:
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
        if subprocess.run(cmd, stdout=out, stderr=out, env=env, timeout=300).returncode == 0:
            return True
        subprocess.run(["apt-get", "update"], stdout=out, stderr=out, env=env, timeout=300)
        return subprocess.run(cmd, stdout=out, stderr=out, env=env, timeout=300).returncode == 0


def _find_nginx() -> str | None:
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if Path(p).exists()), None
    )


def ensure_nginx(log: Path) -> tuple[str | None, bool, list[str]]:
    """(nginx binary or None, echo module usable, notes), installing from Debian if needed."""
    notes: list[str] = []
    nginx = _find_nginx()
    if nginx is None:
        if _apt_install(["nginx"], log):
            notes.append("installed nginx from Debian packages")
        nginx = _find_nginx()
    if nginx is None:
        return None, False, [*notes, f"nginx unavailable and not installable (see {log})"]
    if not ECHO_MODULE.exists() and _apt_install(["libnginx-mod-http-echo"], log):
        notes.append("installed libnginx-mod-http-echo")
    return nginx, ECHO_MODULE.exists(), notes


def _sse_location(paced: bool, gap_ms: float, chunks: int = canned.STREAM_CONTENT_CHUNKS
                  ) -> str:
    events = canned.stream_events(chunks)
    if not paced:
        return f"return 200 {canned.nginx_quote(''.join(events))};"
    lines: list[str] = []
    for i, event in enumerate(events):
        lines.append(f"echo -n {canned.nginx_quote(event)};")
        lines.append("echo_flush;")
        if gap_ms > 0 and i < len(events) - 1:
            lines.append(f"echo_sleep {gap_ms / 1000:.3f};")
    return "\n            ".join(lines)


def nginx_config(tmp: Path, json_port: int, sse_port: int, paced: bool, gap_ms: float) -> str:
    models = canned.nginx_quote(canned.models_json())
    chat = canned.nginx_quote(canned.chat_completion_json())
    temp_paths = "\n    ".join(
        f"{kind}_temp_path {tmp}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                         "scgi")
    )
    load = f"load_module {ECHO_MODULE};\n" if paced else ""
    return f"""{load}worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    {temp_paths}
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    server {{
        listen 127.0.0.1:{json_port} backlog=4096;
        location = /v1/chat/completions {{ default_type application/json; return 200 {chat}; }}
        location = /v1/models {{ default_type application/json; return 200 {models}; }}
        location = {STATUS_PATH} {{ stub_status; }}
        location / {{ return 404; }}
    }}
    server {{
        listen 127.0.0.1:{sse_port} backlog=4096;
        location = /v1/chat/completions {{
            default_type text/event-stream;
            {_sse_location(paced, gap_ms)}
        }}
        location = /e{canned.STREAM_LONG_CHUNKS}/v1/chat/completions {{
            default_type text/event-stream;
            {_sse_location(paced, gap_ms, canned.STREAM_LONG_CHUNKS)}
        }}
        location = /paced/v1/chat/completions {{
            default_type text/event-stream;
            {_sse_location(paced, canned.PACED_GAP_MS)}
        }}
        location ~ ^/(e{canned.STREAM_LONG_CHUNKS}|paced)/v1/models$ {{
            default_type application/json; return 200 {models};
        }}
        location = /v1/models {{ default_type application/json; return 200 {models}; }}
        location / {{ return 404; }}
    }}
}}
"""


def _version(nginx: str) -> str:
    out = subprocess.run([nginx, "-v"], capture_output=True, text=True, timeout=10)
    return (out.stderr or out.stdout).strip().removeprefix("nginx version: ")


def _start_nginx(nginx: str, paced: bool, gap_ms: float, tmp: Path, logs: Path,
                 core: int | None) -> Upstream:
    json_port, sse_port = free_port(), free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(nginx_config(tmp, json_port, sse_port, paced, gap_ms))
    argv = [nginx, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)]
    child = spawn("nginx", argv, core=core, log_path=logs / "nginx.log")
    mode = f"paced: echo module, {gap_ms:g} ms between events" if paced else "burst: one body"
    return Upstream(kind="nginx", child=child, json_port=json_port, sse_port=sse_port,
                    stream_mode=mode, version=_version(nginx))


def _start_python(gap_ms: float, logs: Path, core: int | None) -> Upstream:
    json_port, sse_port = free_port(), free_port()
    argv = [sys.executable, str(HERE / "fake_upstream.py"), "--json-port", str(json_port),
            "--sse-port", str(sse_port), "--gap-ms", str(gap_ms)]
    child = spawn("fake-upstream", argv, core=core, log_path=logs / "fake_upstream.log",
                  env=child_env())
    mode = f"paced: {gap_ms:g} ms between events" if gap_ms > 0 else "burst"
    return Upstream(kind="python", child=child, json_port=json_port, sse_port=sse_port,
                    stream_mode=mode, version="bench/fake_upstream.py")


def start_upstream(tmp: Path, logs: Path, core: int | None, gap_ms: float,
                   force_python: bool = False) -> Upstream:
    if force_python:
        nginx, echo, notes = None, False, ["Python fallback upstream forced by BENCH_UPSTREAM"]
    else:
        nginx, echo, notes = ensure_nginx(logs / "apt.log")
    if nginx is not None:
        if not echo:
            notes.append("nginx echo module missing: the SSE body is sent in one piece")
        up = _start_nginx(nginx, echo, gap_ms, tmp, logs, core)
    else:
        notes.append("FALLBACK: fake upstream is the Python asyncio server bench/fake_upstream.py")
        up = _start_python(gap_ms, logs, core)
    up.notes = notes
    try:
        for port in (up.json_port, up.sse_port):
            wait_http_ok(up.child, port, "/v1/models", timeout=15)
    except BaseException:
        up.close()
        raise
    return up


def check_upstream(up: Upstream) -> None:
    """One request of each kind, checked, before any measurement."""
    body = b'{"model":"bench-model","messages":[{"role":"user","content":"hello"}]}'
    hdrs = {"Content-Type": "application/json"}
    status, ctype, data = http_post(up.json_port, "/v1/chat/completions", body, hdrs)
    if status != 200 or "json" not in ctype or b'"chat.completion"' not in data:
        raise BenchError(f"fake upstream JSON answer wrong: {status} {ctype} {data[:200]!r}")
    status, ctype, data = http_post(up.sse_port, "/v1/chat/completions", body, hdrs)
    if status != 200 or "event-stream" not in ctype or data != "".join(
            canned.stream_events()).encode():
        raise BenchError(f"fake upstream SSE answer wrong: {status} {ctype} {data[:200]!r}")
