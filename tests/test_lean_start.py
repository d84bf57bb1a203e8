"""A gateway started the way ``python -m ailb`` starts it, with the features off (no memory, RAG,
Redis, PostgreSQL or tracing), imports none of the libraries only those features use: each is
megabytes resident (coredis and beartype about 13 MiB, the OpenTelemetry SDK and OTLP encoder
about 5, httpx's command line with rich and pygments about 4). The resident size itself is a
benchmark figure (docs/benchmarks.md, "peak RSS"); this pins what drove it.

The features themselves, once configured, are covered where they are tested (test_redis_shared,
test_tracing, test_postgres_gateway, test_memory, test_rag_api).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ADMIN_KEY, free_port

ROOT = Path(__file__).resolve().parent.parent

# Libraries of features that are off here (top-level package names).
HEAVY = ("coredis", "beartype", "opentelemetry", "rich", "pygments", "chromadb", "onnxruntime",
         "numpy", "tokenizers", "psycopg", "psycopg_pool", "psycopg_binary")

# Runs ``ailb.cli.main`` (what ``python -m ailb`` and the binary run) in the main thread; a
# second thread waits until the gateway is ready, sends one chat request (its upstream is down:
# the answer is an error, the request path is walked all the same), writes the imported modules
# to a file and asks the gateway to stop with SIGINT, as an operator would.
_PROBE = """
import http.client, json, os, signal, sys, threading, time

port, out = int(sys.argv[1]), sys.argv[2]

def get(method, path, body=None, headers=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        return conn.getresponse().status
    finally:
        conn.close()

def probe():
    try:
        deadline = time.monotonic() + 60
        while True:  # /healthz: live (not /readyz: no deployment answers here)
            try:
                if get("GET", "/healthz") == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the gateway did not start")
            time.sleep(0.05)
        body = json.dumps({"model": "m1", "messages": [{"role": "user", "content": "hi"}]})
        status = get("POST", "/v1/chat/completions", body,
                     {"Content-Type": "application/json",
                      "Authorization": "Bearer %s" % os.environ["AILB_ADMIN_KEY"]})
        with open(out, "w") as f:
            json.dump({"status": status, "modules": sorted(list(sys.modules))}, f)
    finally:
        os.kill(os.getpid(), signal.SIGINT)

threading.Thread(target=probe, daemon=True).start()
from ailb.cli import main
raise SystemExit(main(["--config", sys.argv[3]]))
"""


def test_features_off_import_none_of_their_libraries(tmp_path: Path) -> None:
    port, dead = free_port(), free_port()
    deployments = "".join(
        f"  - name: d{i}\n    type: openai\n    base_url: http://127.0.0.1:{dead}/v1\n"
        f"    api_key: x\n    models: [m{i}]\n" for i in (1, 2))
    config = tmp_path / "ailb.yaml"
    config.write_text(f"HTTP_PORT: {port}\nHOST: 127.0.0.1\nGRPC_PORT: {free_port()}\n"
                      f"ENABLE_MEMORY: false\nENABLE_RAG: false\nLOG_LEVEL: warning\n"
                      f"server:\n  unready_delay_s: 0\n"
                      f"deployments:\n{deployments}")
    environ = {k: v for k, v in os.environ.items()
               if not k.startswith(("AILB_", "HTTP_", "OTEL_", "REDIS", "DATABASE", "SHARED",
                                    "OPENAI_", "ANTHROPIC_", "OLLAMA_", "ENABLE_"))}
    environ.update({"AILB_DATA_DIR": str(tmp_path / "data"), "AILB_ADMIN_KEY": ADMIN_KEY})
    out = tmp_path / "modules.json"
    done = subprocess.run([sys.executable, "-c", _PROBE, str(port), str(out), str(config)],
                          env=environ, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(out.read_text())
    assert seen["status"] >= 500  # the request went through the pipeline to the dead upstream
    modules = set(seen["modules"])
    assert {"ailb.supervisor", "ailb.http_api.chat", "httpx", "grpclib"} <= modules
    loaded = sorted({m.split(".")[0] for m in modules} & set(HEAVY))
    assert not loaded, f"imported although their features are off: {loaded}"
