"""Several AILB instances as real processes (``python -m ailb``), each with its own data dir and
ports, sharing what the test gives them (``DATABASE_URL``, ``REDIS_URL``), in front of one
upstream. Used by the cross-instance guarantee tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import trio

from tests.conftest import ADMIN_KEY, auth, free_port, wait_ready

MODEL = "gpt-4o-mini"


@dataclass
class Instance:
    name: str
    config: Path
    port: int
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    log: Path = field(default_factory=Path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.log = self.config.with_suffix(".log")
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "ailb", "--config",
                                          str(self.config)], env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def _env(extra: Mapping[str, str]) -> dict[str, str]:
    own = ("AILB_", "HTTP_", "GRPC_", "OPENAI_", "ANTHROPIC_", "OLLAMA_", "DATABASE_URL",
           "REDIS_URL", "WORKERS", "NOTIFY_SOCKET")
    return {**{k: v for k, v in os.environ.items() if not k.startswith(own)}, **extra}


@asynccontextmanager
async def cluster(tmp_path: Path, count: int, upstream: str, *, env: Mapping[str, str],
                  **config: Any) -> AsyncIterator[list[Instance]]:
    """``count`` instances serving ``MODEL`` from the OpenAI-compatible ``upstream``, ready when
    this yields; stopped (SIGTERM) after."""
    instances = []
    for i in range(count):
        port = free_port()
        path = tmp_path / f"ailb-{i}.yaml"
        path.write_text(json.dumps({
            "HOST": "127.0.0.1", "HTTP_PORT": port, "GRPC_PORT": 0, "MODULE_ID": f"ailb-{i}",
            "AILB_DATA_DIR": str(tmp_path / f"data-{i}"), "AILB_ADMIN_KEY": ADMIN_KEY,
            "LOG_LEVEL": "warning", "ENABLE_MEMORY": False, "OPENAI_API_KEY": "sk-fake",
            "OPENAI_BASE_URL": upstream, "OPENAI_MODELS": MODEL, "ECHO_MODELS": "",
            "server": {"unready_delay_s": 0, "grace_s": 5}, **config}))
        instances.append(Instance(f"ailb-{i}", path, port, _env(env)))
    try:
        for instance in instances:
            instance.start()
        async with httpx.AsyncClient(timeout=10) as http:
            for instance in instances:
                await wait_ready(http, instance.url, timeout_s=60)
        yield instances
    finally:
        for instance in instances:
            instance.stop()


async def create_key(http: httpx.AsyncClient, instance: Instance, **fields: Any) -> dict[str, Any]:
    reply = await http.post(f"{instance.url}/admin/keys", headers=auth(),
                            json={"name": "cluster", **fields})
    assert reply.status_code in (200, 201), reply.text
    answer: dict[str, Any] = reply.json()
    return answer


async def usage(http: httpx.AsyncClient, instance: Instance, key_id: str) -> dict[str, Any]:
    reply = await http.get(f"{instance.url}/admin/keys/{key_id}/usage", headers=auth())
    assert reply.status_code == 200, reply.text
    answer: dict[str, Any] = reply.json()
    return answer


async def until(check: Any, timeout_s: float, step_s: float = 0.02) -> float:
    """Poll the async ``check`` until it returns true; how long that took. Fails after
    ``timeout_s``."""
    start = trio.current_time()
    with trio.fail_after(timeout_s):
        while not await check():
            await trio.sleep(step_s)
    return trio.current_time() - start
