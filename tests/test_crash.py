"""SIGKILL in the middle of a load: after a restart, every key's spend (and its team's) is at
least what was served (reservations are written ahead), and the ledger holds the row of every
answered request (rows are acknowledged before the answer ends)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from tests.conftest import ADMIN_KEY, auth, free_port, wait_ready

PRICE = {"input_per_mtok": 12500, "output_per_mtok": 12500}  # $0.10 per request below
BODY = {"model": "echo-1", "max_tokens": 1, "messages": [{"role": "user", "content": "hi"}]}


def _start(tmp_path: Path, port: int) -> subprocess.Popen[bytes]:
    config = tmp_path / "ailb.yaml"
    config.write_text(
        json.dumps(
            {
                "HOST": "127.0.0.1",
                "HTTP_PORT": port,
                "GRPC_PORT": 0,
                "AILB_DATA_DIR": str(tmp_path / "data"),
                "AILB_ADMIN_KEY": ADMIN_KEY,
                "LOG_LEVEL": "warning",
                "prices": {"echo-1": PRICE},
                "accounting": {"ledger_flush_s": 0.2},
            }
        )
    )  # JSON is YAML
    return subprocess.Popen(
        [sys.executable, "-m", "ailb", "--config", str(config)],
        env={
            k: v for k, v in os.environ.items() if not k.startswith(("AILB_", "HTTP_", "OPENAI_"))
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def test_sigkill_mid_load_never_loses_spend(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = _start(tmp_path, port)
    served = 0
    try:
        async with httpx.AsyncClient(timeout=5, limits=httpx.Limits(max_connections=40)) as http:
            await wait_ready(http, url)
            team = {"id": "load", "monthly_budget_usd": 100_000}
            assert (await http.post(f"{url}/admin/teams", headers=auth(), json=team)).is_success
            created = (
                await http.post(
                    f"{url}/admin/keys",
                    headers=auth(),
                    json={"name": "load", "monthly_budget_usd": 100_000, "team": "load"},
                )
            ).json()
            killed = trio.Event()

            async def client() -> None:
                nonlocal served
                while not killed.is_set():
                    try:
                        response = await http.post(
                            f"{url}/v1/chat/completions", headers=auth(created["key"]), json=BODY
                        )
                    except httpx.TransportError:
                        return
                    if response.status_code == 200:
                        served += 1

            async with trio.open_nursery() as nursery:
                for _ in range(30):
                    nursery.start_soon(client)
                await trio.sleep(1.5)
                proc.send_signal(signal.SIGKILL)
                killed.set()
            assert served > 20
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    proc = _start(tmp_path, port)
    try:
        async with httpx.AsyncClient(timeout=5) as http:
            await wait_ready(http, url)
            usage = (
                await http.get(f"{url}/admin/keys/{created['id']}/usage", headers=auth())
            ).json()
            team_usage = (await http.get(f"{url}/admin/teams/load/usage", headers=auth())).json()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    assert usage["spend_usd"] >= served * 0.10 - 1e-6  # never behind what was served
    assert usage["spend_usd"] <= (served + 30) * 0.10 + 1e-6  # plus at most those in flight
    assert usage["requests"] <= served + 30
    assert usage["requests"] >= served  # every answered request's row was committed first
    # the team's spend is written ahead the same way (its own reservation per request)
    assert served * 0.10 - 1e-6 <= team_usage["spend_usd"] <= (served + 30) * 0.10 + 1e-6
    assert served <= team_usage["requests"] <= served + 30
