"""Graceful drain: in-flight streams finish within the grace period, later ones are told, and the
process exits 0 on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from ailb.supervisor import Running, run
from tests.conftest import ADMIN_KEY, auth, free_port, make_settings, wait_ready
from tests.fakes.openai_upstream import FakeOpenAI, start_fake

MSGS = [{"role": "user", "content": "hi"}]


async def _stream_events(http: httpx.AsyncClient, url: str, started: trio.Event) -> list[str]:
    events: list[str] = []
    async with http.stream(
        "POST",
        f"{url}/v1/chat/completions",
        headers=auth(),
        json={"model": "m", "messages": MSGS, "stream": True},
    ) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                started.set()
    return events


async def test_shutdown_lets_streams_finish(nursery: trio.Nursery, tmp_path: Path) -> None:
    fake = FakeOpenAI(reply="one two three four five six seven eight nine ten")
    fake.chunk_delay_s = 0.05
    base = await start_fake(nursery, fake)
    settings = make_settings(
        tmp_path,
        server={"grace_s": 10, "unready_delay_s": 0},
        deployments=[{"name": "up", "type": "openai", "base_url": base, "models": ["m"]}],
    )
    events: list[str] = []
    with trio.fail_after(10):
        async with httpx.AsyncClient() as http, trio.open_nursery() as inner:
            running: Running = await inner.start(run, settings)
            started = trio.Event()

            async def consume() -> None:
                events.extend(await _stream_events(http, running.http_url, started))

            inner.start_soon(consume)
            host, port = running.http_url.removeprefix("http://").split(":")
            kept_alive = await trio.open_tcp_stream(host, int(port))
            async with kept_alive:
                await kept_alive.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = b""
                while b'"status"' not in answer:  # the whole (small) answer: now it is idle
                    answer += await kept_alive.receive_some(65536)
                await started.wait()
                running.request_shutdown()
                # an idle keep-alive connection is closed as the listener closes (its client
                # connects again, elsewhere), while the stream in flight goes on
                while await kept_alive.receive_some(65536):
                    pass
            with pytest.raises(httpx.ConnectError):  # new connections are not accepted
                await http.post(
                    f"{running.http_url}/v1/chat/completions",
                    headers=auth(),
                    json={"model": "m", "messages": MSGS},
                )
        # leaving the nursery means run() returned
    assert events[-1] == "[DONE]"
    text = "".join(json.loads(e)["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert text.split() == fake.reply.split()


@pytest.mark.parametrize("transport", ["lean", "httpx"])
async def test_streams_past_the_grace_period_end_with_an_error_event(
    nursery: trio.Nursery, tmp_path: Path, transport: str
) -> None:
    """Cut by closing the upstream response (AILB's own transport) or, on httpx's, by the
    cancel scope around each wait."""
    fake = FakeOpenAI(reply="word " * 200)
    fake.chunk_delay_s = 0.05  # 10 s per stream: far past the grace period
    base = await start_fake(nursery, fake)
    settings = make_settings(
        tmp_path,
        server={"grace_s": 0.3, "unready_delay_s": 0},
        upstream={"transport": transport},
        deployments=[{"name": "up", "type": "openai", "base_url": base, "models": ["m"]}],
    )
    events: list[str] = []
    with trio.fail_after(10):
        async with httpx.AsyncClient() as http, trio.open_nursery() as inner:
            running: Running = await inner.start(run, settings)
            started = trio.Event()

            async def consume() -> None:
                events.extend(await _stream_events(http, running.http_url, started))

            inner.start_soon(consume)
            await started.wait()
            running.request_shutdown()
    assert "[DONE]" not in events
    assert json.loads(events[-1])["error"]["code"] == "server_shutting_down"
    with trio.fail_after(2):
        await fake.wait_disconnect()  # the upstream call was cancelled, not left running


async def test_process_exits_zero_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    env = {
        **os.environ,
        "HTTP_PORT": str(port),
        "GRPC_PORT": "0",
        "HOST": "127.0.0.1",
        "AILB_DATA_DIR": str(tmp_path / "data"),
        "AILB_ADMIN_KEY": ADMIN_KEY,
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ailb",
            "--config",
            str(Path(__file__).parent.parent / "config" / "ailb.yaml"),
        ],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )
    try:
        async with httpx.AsyncClient() as http:
            await wait_ready(http, f"http://127.0.0.1:{port}", 20)
            ok = await http.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                headers=auth(),
                json={"model": "echo-1", "messages": MSGS},
            )
            assert ok.status_code == 200
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            code = await trio.to_thread.run_sync(proc.wait)
        assert code == 0
        assert proc.stderr is not None
        logs = proc.stderr.read().decode()
        assert ADMIN_KEY not in logs
        assert '"msg":"AILB stopped"' in logs
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env = {
            **os.environ,
            "HTTP_PORT": str(busy.getsockname()[1]),
            "GRPC_PORT": "0",
            "HOST": "127.0.0.1",
            "AILB_DATA_DIR": str(tmp_path / "data"),
            "AILB_ADMIN_KEY": ADMIN_KEY,
        }
        done = subprocess.run(
            [sys.executable, "-m", "ailb"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1].startswith("ailb: cannot start:")
    assert "Traceback" not in done.stderr


async def test_readiness_turns_false_before_the_listener_closes(tmp_path: Path) -> None:
    # 2 s: room for the request below on a loaded machine (then the listener closes, and with
    # it this client's idle keep-alive connection)
    settings = make_settings(tmp_path, server={"unready_delay_s": 2})
    async with httpx.AsyncClient() as http, trio.open_nursery() as life:
        running: Running = await life.start(run, settings)
        url = running.http_url
        with trio.fail_after(5):
            while (await http.get(f"{url}/readyz")).status_code != 200:
                await trio.sleep(0.01)
        running.request_shutdown()
        with trio.fail_after(5):  # at once (a closed listener would fail the GET instead)
            while (await http.get(f"{url}/readyz")).status_code != 503:
                await trio.sleep(0.01)
        served = await http.post(
            f"{url}/v1/chat/completions", headers=auth(), json={"model": "echo-1", "messages": MSGS}
        )
        assert served.status_code == 200  # still served while load balancers catch up
        with trio.fail_after(5):  # then the listener closes
            while True:
                try:
                    async with httpx.AsyncClient() as fresh:
                        await fresh.get(f"{url}/readyz")
                except httpx.ConnectError:
                    break
                except (httpx.RemoteProtocolError, httpx.ReadError):
                    pass  # accepted in the instant the listener closed, then cut: ask again
                await trio.sleep(0.02)
