"""Operations: systemd's notify protocol over a real Unix datagram socket, live reload (in
process and by SIGHUP to a real process), in-flight requests finishing on their configuration."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from ailb.config.schema import Settings
from ailb.errors import ConfigError
from ailb.supervisor import Running, run
from ailb.systemd import Notifier
from tests.conftest import ADMIN_KEY, auth, free_port, make_settings, wait_ready
from tests.fakes.openai_upstream import FakeOpenAI, start_fake

MSGS = [{"role": "user", "content": "hi"}]


class NotifySocket:
    """systemd's side of the protocol: a datagram socket that collects what AILB says."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.messages: list[str] = []

    async def bind(self) -> None:
        await self.sock.bind(str(self.path))

    async def collect(self) -> None:
        while True:
            self.messages.append((await self.sock.recv(4096)).decode())

    def seen(self, field: str) -> int:
        return sum(field in message.split("\n") for message in self.messages)

    async def wait_for(self, condition: Callable[[], bool], timeout_s: float = 5) -> None:
        with trio.fail_after(timeout_s):
            while not condition():
                await trio.sleep(0.01)


async def test_notify_protocol_and_watchdog(tmp_path: Path) -> None:
    listener = NotifySocket(tmp_path / "notify.sock")
    await listener.bind()
    settings = make_settings(tmp_path)
    environ = {"NOTIFY_SOCKET": str(listener.path), "WATCHDOG_USEC": "100000"}
    with listener.sock:
        async with trio.open_nursery() as collecting:
            collecting.start_soon(listener.collect)
            async with trio.open_nursery() as life:
                running: Running = await life.start(
                    partial(run, settings, environ=environ, load=lambda: settings)
                )
                await trio.sleep(0.3)  # real time: the watchdog's pace is what is checked
                assert listener.seen("READY=1") == 1  # once, when serving
                assert listener.seen("WATCHDOG=1") >= 4  # every 50 ms, from the event loop
                assert running.reload()
                await listener.wait_for(lambda: listener.seen("READY=1") == 2)
                reloading = [m for m in listener.messages if m.startswith("RELOADING=1")]
                assert reloading and "MONOTONIC_USEC=" in reloading[0]
                running.request_shutdown()
            await listener.wait_for(lambda: listener.seen("STOPPING=1") >= 1)
            collecting.cancel_scope.cancel()
    assert listener.seen("STOPPING=1") == 1


def test_notifier_without_systemd_does_nothing() -> None:
    notifier = Notifier({})
    assert not notifier.enabled and notifier.watchdog_s is None
    notifier.ready()  # no socket: no error
    assert Notifier({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}).watchdog_s is None
    assert Notifier({"NOTIFY_SOCKET": "@abstract"}).enabled


async def test_reload_swaps_routes_and_keeps_in_flight_streams(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    a, b = FakeOpenAI(reply="from a"), FakeOpenAI(reply="from b")
    a.chunks, a.chunk_delay_s = 10, 0.05
    a_base, b_base = await start_fake(nursery, a), await start_fake(nursery, b)
    first = make_settings(
        tmp_path,
        deployments=[
            {"name": "a", "type": "openai", "base_url": a_base, "models": ["m"]},
            {"name": "keep", "type": "echo", "models": ["e"]},
        ],
    )
    second = make_settings(
        tmp_path,
        deployments=[
            {"name": "b", "type": "openai", "base_url": b_base, "models": ["m"]},
            {"name": "keep", "type": "echo", "models": ["e"]},
        ],
        aliases={"new-alias": ["b/m"]},
    )
    current: list[Settings] = [first]
    events: list[str] = []
    async with httpx.AsyncClient(timeout=10) as http, trio.open_nursery() as life:
        running: Running = await life.start(partial(run, first, load=lambda: current[0]))
        url = running.http_url
        kept = running.services.router._providers["keep"]
        started = trio.Event()

        async def stream_on_a() -> None:
            async with http.stream(
                "POST",
                f"{url}/v1/chat/completions",
                headers=auth(),
                json={"model": "m", "messages": MSGS, "stream": True},
            ) as r:
                async for line in r.aiter_lines():
                    if line.startswith("data: "):
                        events.append(line[6:])
                        started.set()

        life.start_soon(stream_on_a)
        await started.wait()
        current[0] = second
        assert running.reload()
        after = await http.post(
            f"{url}/v1/chat/completions", headers=auth(), json={"model": "m", "messages": MSGS}
        )
        assert after.json()["choices"][0]["message"]["content"] == "from b"
        models = (await http.get(f"{url}/v1/models", headers=auth())).json()
        assert "new-alias" in [m["id"] for m in models["data"]]
        assert running.services.router._providers["keep"] is kept
        with trio.fail_after(5):
            while events[-1:] != ["[DONE]"]:
                await trio.sleep(0.02)
        health = (await http.get(f"{url}/healthz")).json()
        assert set(health["providers"]) == {"b", "keep"}
        assert health["config"]["generation"] == 2
        running.request_shutdown()
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert text.split() == ["from", "a"]  # the stream finished on the configuration it began


async def test_a_bad_reload_keeps_the_running_configuration(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)

    def broken() -> Settings:
        raise ConfigError("HTTP_PORT", "must be an integer from 0 to 65535, got 'x'")

    async with httpx.AsyncClient() as http, trio.open_nursery() as life:
        running: Running = await life.start(partial(run, settings, load=broken))
        assert not running.reload()
        ok = await http.post(
            f"{running.http_url}/v1/chat/completions",
            headers=auth(),
            json={"model": "echo-1", "messages": MSGS},
        )
        assert ok.status_code == 200
        health = (await http.get(f"{running.http_url}/healthz")).json()
        assert health["status"] == "degraded"
        assert "HTTP_PORT" in health["config"]["last_reload_error"]
        metrics = (await http.get(f"{running.http_url}/metrics")).text
        assert 'ailb_config_reloads_total{outcome="failed"} 1.0' in metrics
        running.request_shutdown()


async def test_sighup_reloads_a_real_process(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "ailb.yaml"
    base: dict[str, Any] = {
        "HOST": "127.0.0.1",
        "HTTP_PORT": port,
        "GRPC_PORT": 0,
        "LOG_LEVEL": "warning",
        "AILB_DATA_DIR": str(tmp_path / "data"),
        "AILB_ADMIN_KEY": ADMIN_KEY,
    }
    config.write_text(json.dumps(base))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AILB_", "HTTP_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ailb", "--config", str(config)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient() as http:
            await wait_ready(http, url, 20)

            async def models() -> list[str]:
                answer = (await http.get(f"{url}/v1/models", headers=auth())).json()
                return [m["id"] for m in answer["data"]]

            assert await models() == ["echo-1"]
            config.write_text(json.dumps({**base, "ECHO_MODELS": "echo-1,echo-2"}))
            proc.send_signal(signal.SIGHUP)
            with trio.fail_after(5):
                while await models() != ["echo-1", "echo-2"]:
                    await trio.sleep(0.05)
            config.write_text("HTTP_PORT: [not, a, port")  # broken YAML
            proc.send_signal(signal.SIGHUP)
            with trio.fail_after(5):
                while (await http.get(f"{url}/healthz")).json()["config"][
                    "last_reload_error"
                ] is None:
                    await trio.sleep(0.05)
            assert await models() == ["echo-1", "echo-2"]  # still the last good one
            # several problems: the reload's report names every one, not just the first
            config.write_text(json.dumps({**base, "LOG_LEVEL": "loud", "ROUTING_STRATEGY": "x",
                                          "server": {"grace_s": -1}}))
            proc.send_signal(signal.SIGHUP)
            with trio.fail_after(5):
                while not (error := (await http.get(f"{url}/healthz")).json()["config"][
                        "last_reload_error"]).startswith("3 configuration errors"):
                    await trio.sleep(0.05)
            assert all(key in error for key in ("LOG_LEVEL", "ROUTING_STRATEGY", "grace_s"))
            # each SIGHUP is in the audit log: by the signal, ok or refused
            audit = (await http.get(f"{url}/admin/audit", headers=auth())).json()["data"]
            assert [(e["actor"], e["door"], e["action"], e["outcome"], e["target"])
                    for e in audit] == [
                ("signal", "process", "config.reload", outcome, str(config))
                for outcome in ("refused", "refused", "ok")]
            assert audit[0]["changes"]["error"].startswith("3 configuration errors")
            assert audit[2]["changes"]["generation"] == 2
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0


@pytest.mark.parametrize("unused", [None])
def test_unit_file_mentions_sighup(unused: None) -> None:
    unit = Path(__file__).parent.parent / "config" / "ailb.service"
    if not unit.exists():
        pytest.skip("config/ailb.service not written yet")
    assert "HUP" in unit.read_text()


@pytest.mark.parametrize("grace_s", [30.0, 0.4])
async def test_sigterm_during_streaming_load(
    nursery: trio.Nursery, tmp_path: Path, grace_s: float
) -> None:
    """Every stream that started completes (long grace) or ends with an error event (short
    grace); the process exits 0; every request is in the ledger after a restart."""
    fake = FakeOpenAI(reply="word " * 60)
    fake.chunk_delay_s = 0.05  # 60 chunks: 3 s per stream
    base = await start_fake(nursery, fake)
    port = free_port()
    config = tmp_path / "ailb.yaml"
    config.write_text(
        json.dumps(
            {
                "HOST": "127.0.0.1",
                "HTTP_PORT": port,
                "GRPC_PORT": 0,
                "LOG_LEVEL": "warning",
                "AILB_DATA_DIR": str(tmp_path / "data"),
                "AILB_ADMIN_KEY": ADMIN_KEY,
                "server": {"grace_s": grace_s, "unready_delay_s": 0.2},
                "prices": {"m": {"input_per_mtok": 1000, "output_per_mtok": 1000}},
                "deployments": [
                    {"name": "up", "type": "openai", "base_url": base, "models": ["m"]}
                ],
            }
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AILB_", "HTTP_"))}

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "ailb", "--config", str(config)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    url = f"http://127.0.0.1:{port}"

    proc = start()
    endings: list[str] = []
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            await wait_ready(http, url, 20)
            key = (
                await http.post(f"{url}/admin/keys", headers=auth(), json={"name": "load"})
            ).json()

            async def stream() -> None:
                last = ""
                async with http.stream(
                    "POST",
                    f"{url}/v1/chat/completions",
                    headers=auth(key["key"]),
                    json={"model": "m", "messages": MSGS, "stream": True},
                ) as response:
                    async for line in response.aiter_lines():
                        if line.startswith("data: "):
                            last = line[6:]
                endings.append("done" if last == "[DONE]" else json.loads(last)["error"]["code"])

            async with trio.open_nursery() as clients:
                for _ in range(10):
                    clients.start_soon(stream)
                await trio.sleep(0.5)
                proc.send_signal(signal.SIGTERM)
            code = await trio.to_thread.run_sync(partial(proc.wait, 30))
            assert code == 0
            if grace_s > 1:
                assert endings == ["done"] * 10
            else:
                assert endings == ["server_shutting_down"] * 10
            proc = start()
            await wait_ready(http, url, 20)
            usage = (await http.get(f"{url}/admin/keys/{key['id']}/usage", headers=auth())).json()
            assert usage["requests"] == 10  # nothing recorded was lost
            assert usage["spend_usd"] > 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
