"""Operator tooling: ``ailb check-config`` and ``ailb keys`` (through the server, or the store
with ``--local``; more in tests/test_cli_keys.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from tests.conftest import ADMIN_KEY, StartGateway, auth

ROOT = Path(__file__).resolve().parent.parent


def ailb(
    *args: str, data: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("AILB_", "HTTP_"))}
    environ.update({"AILB_DATA_DIR": str(data), "AILB_ADMIN_KEY": ADMIN_KEY, **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "ailb", *args],
        env=environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_config(tmp_path: Path) -> None:
    good = ailb("check-config", str(ROOT / "config" / "ailb.yaml"), data=tmp_path)
    assert good.returncode == 0 and "configuration OK" in good.stdout
    bad_file = tmp_path / "bad.yaml"
    bad_file.write_text("ROUTING_STRATEGY: fastest\n")
    bad = ailb("check-config", str(bad_file), data=tmp_path)
    assert bad.returncode == 2 and "ROUTING_STRATEGY" in bad.stderr
    env_bad = ailb("check-config", data=tmp_path, env={"GRPC_PORT": "-1"})
    assert env_bad.returncode == 2 and "GRPC_PORT" in env_bad.stderr


def test_keys_through_the_store_with_local(tmp_path: Path) -> None:
    made = ailb("keys", "create", "--local", "--json", "--name", "ops", "--rpm-limit", "10",
                "--allowed-models", "gpt-4o*,echo-1", data=tmp_path)
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    assert created["key"].startswith(f"sk-ailb-{created['id']}-")
    assert created["allowed_models"] == ["gpt-4o*", "echo-1"]
    assert "via the key store" in made.stderr
    listed = json.loads(ailb("keys", "list", "--local", "--json", data=tmp_path).stdout)
    assert [k["id"] for k in listed["data"]] == [created["id"]]
    assert "key" not in listed["data"][0]
    revoked = json.loads(ailb("keys", "revoke", created["id"], "--local", "--json",
                              data=tmp_path).stdout)
    assert revoked["active"] is False
    bad = ailb("keys", "create", "--local", "--name", "x", "--tpm-limit", "0", data=tmp_path)
    assert bad.returncode == 2 and "tpm_limit" in bad.stderr


async def test_keys_through_a_running_server(start_gateway: StartGateway, tmp_path: Path) -> None:
    running = await start_gateway()
    made = await trio.to_thread.run_sync(
        lambda: ailb("keys", "create", "--json", "--name", "live", "--url", running.http_url,
                     data=tmp_path / "other")
    )
    assert made.returncode == 0, made.stderr
    assert "via the server" in made.stderr
    key = json.loads(made.stdout)["key"]
    async with httpx.AsyncClient() as http:  # the running server knows the key at once
        answer = await http.post(
            f"{running.http_url}/v1/chat/completions",
            headers=auth(key),
            json={"model": "echo-1", "messages": [{"role": "user", "content": "hi"}]},
        )
    assert answer.status_code == 200


@pytest.mark.parametrize("args", [["config", "extra"], ["run", "--bogus"]])
def test_unexpected_arguments(tmp_path: Path, args: list[str]) -> None:
    assert ailb(*args, data=tmp_path).returncode == 2


async def test_the_store_is_not_written_behind_a_running_server(start_gateway: StartGateway,
                                                               tmp_path: Path) -> None:
    running = await start_gateway()
    data = tmp_path / "data"  # the gateway's own data dir (see tests/conftest.py)
    done = await trio.to_thread.run_sync(lambda: ailb("keys", "list", "--local", data=data))
    assert done.returncode == 1 and "in use by a running AILB" in done.stderr
    assert running.services.keys.all() == []
