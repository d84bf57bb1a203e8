"""One AILB process for the fuzz suites: the offline ``echo`` deployment, memory and RAG on, a
virtual key with limits and a budget (so admission's math runs on every fuzzed number), and
a RAG collection to query. Sync helpers: hypothesis and schemathesis drive it from plain
(non-trio) tests over real sockets."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.cluster import _env
from tests.conftest import ADMIN_KEY, auth, free_port

MODEL = "echo-1"
COLLECTION = "fuzz"


@dataclass(frozen=True)
class FuzzServer:
    url: str
    grpc_port: int
    key: str  # a virtual key with RPM/TPM/parallel limits and a budget (a huge max_tokens
    # meets the "larger than the whole TPM" refusal)
    log: Path

    def alive(self) -> bool:
        """The server still answers a plain request."""
        try:
            reply = httpx.get(f"{self.url}/v1/models", headers=auth(), timeout=10)
        except httpx.TransportError:
            return False
        return reply.status_code == 200


def start(tmp: Path) -> Iterator[FuzzServer]:
    port, grpc_port = free_port(), free_port()
    config = tmp / "ailb.yaml"
    config.write_text(json.dumps({
        "HOST": "127.0.0.1", "HTTP_PORT": port, "GRPC_PORT": grpc_port, "MODULE_ID": "fuzz",
        "AILB_DATA_DIR": str(tmp / "data"), "AILB_ADMIN_KEY": ADMIN_KEY,
        "LOG_LEVEL": "warning", "ENABLE_MEMORY": True, "ENABLE_RAG": True,
        "server": {"unready_delay_s": 0, "grace_s": 2}}))
    log = tmp / "ailb.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "ailb", "--config", str(config)],
                                env=_env({}), stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        key = _setup(url)
        yield FuzzServer(url, grpc_port, key, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _setup(url: str) -> str:
    made = httpx.post(f"{url}/admin/keys", headers=auth(), timeout=10, json={
        "name": "fuzz", "rpm_limit": 1_000_000, "tpm_limit": 100_000,
        "max_parallel_requests": 1000, "monthly_budget_usd": 1e9})
    assert made.status_code == 201, made.text
    made_collection = httpx.post(f"{url}/v1/rag/collections", headers=auth(), timeout=10,
                                 json={"name": COLLECTION})
    assert made_collection.status_code == 201, made_collection.text
    added = httpx.post(f"{url}/v1/rag/collections/{COLLECTION}/documents", headers=auth(),
                       timeout=30, json={"documents": [{"id": "d1", "text": "Fuzzing finds "
                                                        "the inputs nobody thought of."}]})
    assert added.status_code == 201, added.text
    secret: str = made.json()["key"]
    return secret


def error_shape_ok(path: str, body: Any) -> bool:
    """An error body in the API's own shape: Anthropic's for ``/v1/messages`` (and its
    ``/count_tokens``), OpenAI's for every other route."""
    if not isinstance(body, dict):
        return False
    error = body.get("error")
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return False
    if path.startswith("/v1/messages"):
        return body.get("type") == "error" and isinstance(error.get("type"), str)
    return isinstance(error.get("type"), str) and set(error) <= {"message", "type", "param",
                                                                 "code"}
