"""The things measured: nginx direct, the bare pass-through, AILB itself (and, in
bench/features.py, AILB with memory or RAG)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import canned
from procs import BenchError, Child, child_env, free_port, http_post, spawn, stop, wait_http_ok
from upstream import Upstream

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# Where the `ailb` package under test lives: this checkout, or BENCH_AILB_SRC (e.g. an export of
# another commit, to compare two versions on one machine).
AILB_SRC = Path(os.environ.get("BENCH_AILB_SRC") or REPO).resolve()
ADMIN_KEY = "bench-admin-key"
# A virtual key with limits and a budget far above what a run uses: every request goes through
# auth by key, RPM/TPM buckets, the budget reservation and its settlement, and the ledger. The
# limits fit PostgreSQL's `integer` columns (ailb-shared keeps the key there; a larger TPM limit
# is refused by the database and the key then lives in the gateway's memory only).
VIRTUAL_KEY = "sk-ailb-0123456789ab-benchmarkvirtualkeysecret0000"
MODELS = {False: "bench-model", True: "bench-stream"}
# The other stream shapes (see upstream.py): 200 events (stream_cost.py) and 20 events 20 ms
# apart (capacity.py), each its own model so that every gateway routes it to its own URL.
SHAPE_MODELS = {"long": "bench-stream-200", "paced": "bench-stream-paced"}

# AILB reads every top-level key (and SECTION__key) from the environment too: none of the
# caller's may leak into the benchmark's configuration (an OPENAI_API_KEY would add a deployment).
_AILB_ENV_NAMES = ("HTTP_PORT", "HOST", "GRPC_PORT", "MODULE_ID", "ROUTING_STRATEGY",
                   "ENABLE_MEMORY", "ENABLE_RAG", "MEMORY_BACKEND", "RAG_BACKEND", "LOG_LEVEL",
                   "ECHO_MODELS", "SERVER", "UPSTREAM", "HEALTH", "DEPLOYMENTS", "ALIASES",
                   "CHROMA_URL", "EMBEDDINGS", "MEMORY", "RAG", "CACHE", "DATABASE_URL",
                   "REDIS_URL", "SHARED", "WORKERS")
_AILB_ENV_PREFIXES = ("OPENAI_", "ANTHROPIC_", "OLLAMA_", "AILB_", "SERVER__", "UPSTREAM__",
                      "HEALTH__", "EMBEDDINGS__", "MEMORY__", "RAG__", "CACHE__", "SHARED__",
                      "DYNACONF", "SETTINGS_FILE")


@dataclass
class Target:
    name: str
    label: str
    json_port: int
    stream_port: int
    pid: int  # whose CPU and memory are measured
    auth: str | None = None
    child: Child | None = None
    # The requests' variants, sent in turn: variant i carries questions[i % len] as its user
    # message and, when there are sessions, x-session-id: sessions[i % len].
    questions: tuple[str, ...] = ("hello",)
    sessions: tuple[str, ...] = ()
    rag: dict[str, object] | None = None  # the body's "rag" option
    # Work the target defers past the answer (the memory writer): after each measured slice,
    # wait until the process is idle again and count that CPU too.
    drain: bool = False
    # Servers the target keeps its state in (ailb-shared: PostgreSQL, Valkey): their CPU is
    # measured beside the gateway's, not in it.
    backend_pids: tuple[int, ...] = ()
    # Headers by request kind ("json", "stream", "long", "paced"): Portkey is told the upstream
    # per request.
    route_headers: dict[str, dict[str, str]] | None = None

    def port(self, stream: bool) -> int:
        return self.stream_port if stream else self.json_port

    def variants(self) -> int:
        return max(len(self.questions), len(self.sessions), 1)

    def body(self, stream: bool, variant: int = 0, shape: str = "") -> bytes:
        """``shape``: "" (the 20-event stream), "long" or "paced" (see SHAPE_MODELS)."""
        question = self.questions[variant % len(self.questions)]
        model = SHAPE_MODELS[shape] if stream and shape else MODELS[stream]
        payload: dict[str, object] = {"model": model,
                                      "messages": [{"role": "user", "content": question}]}
        if stream:
            payload["stream"] = True
        if shape == "paced":  # every event relayed, the usage one too (see capacity.py)
            payload["stream_options"] = {"include_usage": True}
        if self.rag is not None:
            payload["rag"] = self.rag
        return json.dumps(payload).encode()

    def headers(self, variant: int = 0, stream: bool = False, shape: str = ""
                ) -> dict[str, str]:
        hdrs = {"Content-Type": "application/json"}
        if self.route_headers:
            hdrs.update(self.route_headers[(shape or "stream") if stream else "json"])
        if self.auth:
            hdrs["Authorization"] = f"Bearer {self.auth}"
        if self.sessions:
            hdrs["x-session-id"] = self.sessions[variant % len(self.sessions)]
        return hdrs

    def raw_request(self, stream: bool, variant: int = 0, shape: str = "") -> bytes:
        """The whole HTTP/1.1 request, encoded once and sent as is by the load generator."""
        body = self.body(stream, variant, shape)
        lines = ["POST /v1/chat/completions HTTP/1.1", f"Host: 127.0.0.1:{self.port(stream)}",
                 f"Content-Length: {len(body)}"]
        lines += [f"{k}: {v}" for k, v in self.headers(variant, stream, shape).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def raw_requests(self, stream: bool, shape: str = "") -> list[bytes]:
        """Every variant's request; the load generator's connections send them in turn."""
        return [self.raw_request(stream, i, shape) for i in range(self.variants())]

    def close(self) -> None:
        if self.child is not None:
            stop(self.child)

    def sanity_check(self) -> None:
        """One request of each kind and variant, checked in full; raises BenchError when
        wrong."""
        for stream in (False, True):
            for variant in range(self.variants()):
                status, ctype, data = http_post(self.port(stream), "/v1/chat/completions",
                                                self.body(stream, variant),
                                                self.headers(variant, stream))
                problem = f"HTTP {status}" if status != 200 else validate(data, True, stream)
                if problem:
                    kind = "stream" if stream else "non-stream"
                    raise BenchError(f"{self.name}: bad {kind} answer ({problem}); "
                                     f"content-type {ctype!r}, body {data[:400]!r}")


def direct(up: Upstream) -> Target:
    return Target("direct", f"{up.version} direct", up.json_port, up.sse_port, up.main_pid)


def passthrough(up: Upstream, core: int | None, logs: Path) -> Target:
    port = free_port()
    argv = [sys.executable, str(HERE / "passthrough.py"), "--port", str(port),
            "--upstream", up.base_url(False), "--stream-upstream", up.base_url(True),
            "--long-upstream", up.base_url(True, events=canned.STREAM_LONG_CHUNKS),
            "--paced-upstream", up.base_url(True, paced=True)]
    child = spawn("passthrough", argv, core=core, log_path=logs / "passthrough.log",
                  env=child_env())
    target = Target("passthrough", "Quart-Trio + Hypercorn + httpx pass-through", port, port,
                    child.pid, child=child)
    try:
        wait_http_ok(child, port, "/healthz", timeout=30)
    except BaseException:
        target.close()
        raise
    return target


def ailb_with_key(ailb_target: Target) -> Target:
    """The same AILB process, called with the virtual key instead of the admin key."""
    return Target("ailb-key", "AILB with a virtual key (limits + budget + ledger)",
                  ailb_target.json_port, ailb_target.stream_port, ailb_target.pid,
                  auth=VIRTUAL_KEY)


def ailb_env() -> dict[str, str]:
    env = child_env()
    for key in list(env):
        if key in _AILB_ENV_NAMES or key.startswith(_AILB_ENV_PREFIXES):
            del env[key]
    env["PYTHONPATH"] = str(AILB_SRC) + (":" + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["AILB_BENCH_VIRTUAL_KEY"] = VIRTUAL_KEY
    return env


def ailb_importable() -> str | None:
    """None when ``python -m ailb`` can run here, else why not."""
    code = ("import importlib.util, sys; import ailb.cli; "
            "sys.exit(0 if importlib.util.find_spec('ailb.__main__') else 3)")
    out = subprocess.run([sys.executable, "-c", code], cwd=AILB_SRC, env=ailb_env(),
                         capture_output=True, text=True, timeout=120)
    if out.returncode == 0:
        return None
    if out.returncode == 3:
        return "ailb/__main__.py is missing, so `python -m ailb` cannot run"
    last = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
    return f"`import ailb.cli` fails: {last}"


# Memory and RAG for the opt-in feature targets (bench/features.py). The retrieval cache keeps
# one entry while the requests cycle through several questions: every request embeds its
# question and searches the collection, as distinct questions of real users would.
_FEATURES = "ENABLE_MEMORY: true\nENABLE_RAG: true\ncache:\n  rag_entries: 1\n"


def ailb_config(up: Upstream, port: int, data_dir: Path, features: bool = False) -> str:
    q = json.dumps
    urls = (("nginx", up.base_url(False), MODELS[False]),
            ("nginx-sse", up.base_url(True), MODELS[True]),
            ("nginx-sse-long", up.base_url(True, events=canned.STREAM_LONG_CHUNKS),
             SHAPE_MODELS["long"]),
            ("nginx-sse-paced", up.base_url(True, paced=True), SHAPE_MODELS["paced"]))
    deps = "".join(f"  - name: {name}\n    type: openai\n    base_url: {q(url)}\n"
                   f"    api_key: x\n    models: [{model}]\n" for name, url, model in urls)
    prices = "".join(f"  {m}: {{input_per_mtok: 1, output_per_mtok: 2}}\n"
                     for m in (*MODELS.values(), *SHAPE_MODELS.values()))
    switches = _FEATURES if features else "ENABLE_MEMORY: false\nENABLE_RAG: false\n"
    return (f"HTTP_PORT: {port}\nHOST: 127.0.0.1\nGRPC_PORT: {free_port()}\n"
            f"AILB_DATA_DIR: {q(str(data_dir))}\nAILB_ADMIN_KEY: {ADMIN_KEY}\n"
            f"LOG_LEVEL: warning\n{switches}health:\n  interval_s: 60\n"
            f"prices:\n{prices}"
            f"keys:\n  - {{key_env: AILB_BENCH_VIRTUAL_KEY, name: bench, rpm_limit: 100000000,"
            f" tpm_limit: 2000000000, monthly_budget_usd: 1000000000}}\n"
            f"deployments:\n{deps}")


def ailb(up: Upstream, core: int | None, logs: Path, tmp: Path, features: bool = False
         ) -> Target:
    """AILB with memory and RAG off; ``features``: a second process with both on, whose target
    bench/features.py turns into ailb-memory and ailb-rag."""
    name = "ailb-features" if features else "ailb"
    port = free_port()
    config = tmp / f"{name}.yaml"
    config.write_text(ailb_config(up, port, tmp / f"{name}-data", features))
    argv = [sys.executable, "-m", "ailb", "--config", str(config)]
    child = spawn(name, argv, core=core, log_path=logs / f"{name}.log", env=ailb_env(),
                  cwd=AILB_SRC)
    label = "AILB with memory and RAG on" if features else "AILB (auth + metrics on)"
    target = Target(name, label, port, port, child.pid, auth=ADMIN_KEY, child=child)
    try:
        wait_http_ok(child, port, "/healthz", timeout=90)
    except BaseException:
        target.close()
        raise
    return target


def _expected_text(chunks: int) -> str:
    return "".join(f"tok{i} " for i in range(chunks))


_EXPECTED_TEXT = _expected_text(canned.STREAM_CONTENT_CHUNKS)
_EXPECTED_REPLY = json.loads(canned.chat_completion_json())["choices"][0]["message"]["content"]


def validate(body: bytes, full: bool, stream: bool, chunks: int = canned.STREAM_CONTENT_CHUNKS
             ) -> str | None:
    """None when ``body`` is the canned answer as a client would see it, else what is wrong."""
    if not full:
        ok = body.endswith(b"[DONE]\n\n") if stream else body.rstrip().endswith(b"}")
        return None if ok else f"unexpected end of body: {body[-80:]!r}"
    try:
        if not stream:
            got = json.loads(body)["choices"][0]["message"]["content"]
            return None if got == _EXPECTED_REPLY else f"content {got!r}"
        events = [e for e in body.decode().replace("\r\n", "\n").split("\n\n") if e.strip()]
        datas = [e.removeprefix("data:").strip() for e in events if e.startswith("data:")]
        if not datas or datas[-1] != "[DONE]":
            return f"stream does not end with data: [DONE] ({len(datas)} data events)"
        text = "".join(c["delta"].get("content") or "" for d in datas[:-1]
                       for c in json.loads(d).get("choices", []))
        want = _EXPECTED_TEXT if chunks == canned.STREAM_CONTENT_CHUNKS else _expected_text(
            chunks)
        return None if text == want else f"streamed text {text[:80]!r}"
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        return f"unparsable body: {exc!r}"
