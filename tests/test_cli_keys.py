"""``ailb keys``: the real command line, run as a subprocess from a directory that has nothing to
do with the server, against a running gateway (its admin API) or, with ``--local``, its store."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import trio

from ailb.audit.log import cli_actor
from ailb.cli import take_config
from tests.conftest import ADMIN_KEY, StartGateway, auth

ROOT = Path(__file__).resolve().parent.parent
SECRET = re.compile(r"sk-ailb-[0-9a-f]{12}-\S+")
_STRIPPED = ("AILB_", "HTTP_", "GRPC_", "OPENAI_", "ANTHROPIC_", "OLLAMA_", "DATABASE_URL",
             "REDIS_URL")


def keys(*args: str, cwd: Path, env: dict[str, str] | None = None,
         command: str = "keys") -> subprocess.CompletedProcess[str]:
    """``python -m ailb keys ARGS`` in ``cwd`` with no AILB, port or provider variable but
    ``env``'s."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(_STRIPPED)}
    environ.update({"PYTHONPATH": str(ROOT), **(env or {})})
    return subprocess.run([sys.executable, "-m", "ailb", *([command] if command else []), *args],
                          env=environ, cwd=cwd, capture_output=True, text=True, timeout=60)


async def in_thread(*args: str, cwd: Path, env: dict[str, str] | None = None,
                    command: str = "keys") -> subprocess.CompletedProcess[str]:
    return await trio.to_thread.run_sync(lambda: keys(*args, cwd=cwd, env=env, command=command))


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """An empty working directory, unrelated to the gateway's data dir."""
    path = tmp_path / "elsewhere"
    path.mkdir()
    return path


def _empty(directory: Path) -> bool:
    return not any(directory.iterdir())


def _secrets(text: str) -> list[str]:
    return SECRET.findall(text)


async def test_every_action_through_the_server(start_gateway: StartGateway,
                                               elsewhere: Path) -> None:
    running = await start_gateway()
    url = running.http_url
    env = {"AILB_ADMIN_KEY": ADMIN_KEY}
    async with httpx.AsyncClient() as client:  # a key's team must exist
        team = await client.post(f"{url}/admin/teams", headers=auth(), json={"id": "search"})
        assert team.status_code == 201, team.text

    made = await in_thread("create", "--name", "ops", "--team", "search", "--rpm-limit", "60",
                           "--monthly-budget-usd", "25", "--allowed-models", "echo-1",
                           "--url", url, cwd=elsewhere, env=env)
    assert made.returncode == 0, made.stderr
    assert len(_secrets(made.stdout)) == 1 and not _secrets(made.stderr)
    assert "shown this once" in made.stdout and f"via the server at {url}" in made.stderr
    secret = _secrets(made.stdout)[0]
    key_id = secret.split("-")[2]
    assert running.services.keys.require(key_id).rpm_limit == 60  # the server saw it at once

    listed = await in_thread("list", "--url", url, cwd=elsewhere, env=env)
    assert listed.returncode == 0, listed.stderr
    header, row = listed.stdout.splitlines()
    assert header.split() == ["ID", "NAME", "TEAM", "RPM", "TPM", "PARALLEL", "BUDGET", "SPEND",
                              "ACTIVE", "EXPIRES"]
    assert row.split() == [key_id, "ops", "search", "60", "-", "-", "$25.00", "$0.00", "yes",
                           "-"]
    as_json = json.loads((await in_thread("list", "--json", "--url", url, cwd=elsewhere,
                                          env=env)).stdout)
    assert [k["id"] for k in as_json["data"]] == [key_id] and "key" not in as_json["data"][0]

    shown = await in_thread("show", key_id, "--url", url, cwd=elsewhere, env=env)
    assert shown.returncode == 0 and "monthly budget     $25.00" in shown.stdout
    assert not _secrets(shown.stdout)

    updated = await in_thread("update", key_id, "--clear-budget", "--tpm-limit", "5000",
                              "--clear-allowed-models", "--json", "--url", url, cwd=elsewhere,
                              env=env)
    assert updated.returncode == 0, updated.stderr
    view = json.loads(updated.stdout)
    assert (view["monthly_budget_usd"], view["tpm_limit"], view["allowed_models"]) == \
        (None, 5000, [])
    record = running.services.keys.require(key_id)
    assert record.monthly_budget_usd is None and record.tpm_limit == 5000

    async with httpx.AsyncClient() as http:  # one request, to see it in the usage
        answer = await http.post(f"{url}/v1/chat/completions", headers=auth(secret),
                                 json={"model": "echo-1", "messages": [
                                     {"role": "user", "content": "hi"}]})
        assert answer.status_code == 200
    usage = await in_thread("usage", key_id, "--url", url, cwd=elsewhere, env=env)
    assert usage.returncode == 0 and "1 request(s)" in usage.stdout and "echo-1" in usage.stdout
    usage_json = json.loads((await in_thread("usage", key_id, "--json", "--url", url,
                                             cwd=elsewhere, env=env)).stdout)
    assert usage_json["key_id"] == key_id and usage_json["requests"] == 1

    rotated = await in_thread("rotate", key_id, "--json", "--url", url, cwd=elsewhere, env=env)
    assert rotated.returncode == 0, rotated.stderr
    new_secret = json.loads(rotated.stdout)["key"]
    assert new_secret != secret and rotated.stdout.count(new_secret) == 1
    rotated_table = await in_thread("rotate", key_id, "--url", url, cwd=elsewhere, env=env)
    assert len(_secrets(rotated_table.stdout)) == 1 and "shown this once" in rotated_table.stdout

    revoked = await in_thread("revoke", key_id, "--url", url, cwd=elsewhere, env=env)
    assert revoked.returncode == 0 and re.search(r"^active\s+no$", revoked.stdout, re.M)
    assert running.services.keys.require(key_id).active is False
    again = await in_thread("update", key_id, "--activate", "--url", url, cwd=elsewhere, env=env)
    assert again.returncode == 0 and running.services.keys.require(key_id).active is True

    missing = await in_thread("show", "0123456789ab", "--url", url, cwd=elsewhere, env=env)
    assert missing.returncode == 1 and "0123456789ab" in missing.stderr
    bad = await in_thread("create", "--name", "x", "--tpm-limit", "0", "--url", url,
                          cwd=elsewhere, env=env)
    assert bad.returncode == 2 and "tpm_limit" in bad.stderr
    assert _empty(elsewhere)  # nothing written where the CLI ran

    # the audit log names the OS user the CLI said it runs as (a hint beside the admin key)
    page = await running.services.audit.page()
    changes = [e for e in page["data"] if e["action"].startswith("key.")]
    assert len(changes) == 7 and {e["door"] for e in changes} == {"http"}
    assert {e["actor"] for e in changes} == {f"admin-key ({cli_actor()})"}


async def test_environment_names_the_server_and_the_admin_key(start_gateway: StartGateway,
                                                              elsewhere: Path) -> None:
    running = await start_gateway()
    env = {"AILB_URL": running.http_url, "AILB_ADMIN_KEY": ADMIN_KEY}
    made = await in_thread("create", "--name", "from-env", "--json", cwd=elsewhere, env=env)
    assert made.returncode == 0, made.stderr
    assert running.services.keys.require(json.loads(made.stdout)["id"]).name == "from-env"
    key_file = elsewhere.parent / "admin.key"
    key_file.write_text(ADMIN_KEY + "\n")
    by_file = await in_thread("list", "--admin-key-file", str(key_file), cwd=elsewhere,
                              env={"AILB_URL": running.http_url})
    assert by_file.returncode == 0 and "from-env" in by_file.stdout


async def test_a_refused_admin_key_is_said_plainly(start_gateway: StartGateway,
                                                   elsewhere: Path) -> None:
    running = await start_gateway()
    refused = await in_thread("list", "--url", running.http_url, cwd=elsewhere,
                              env={"AILB_ADMIN_KEY": "sk-not-the-admin-key"})
    assert refused.returncode == 1 and refused.stdout == ""
    assert f"the server at {running.http_url} refused the admin key (from AILB_ADMIN_KEY)" \
        in refused.stderr
    assert _empty(elsewhere)


def test_a_url_where_nothing_listens_is_an_error_not_a_new_store(elsewhere: Path) -> None:
    for args, env in ((["--url", "http://127.0.0.1:9"], {}),
                      ([], {"AILB_URL": "http://127.0.0.1:9"}),
                      ([], {"HTTP_PORT": "9"})):  # the default URL: the configuration's port
        done = keys("create", "--name", "lost", *args, cwd=elsewhere,
                    env={"AILB_ADMIN_KEY": ADMIN_KEY, **env})
        assert done.returncode == 1, done.stderr
        assert "cannot reach an AILB server at http://127.0.0.1:9" in done.stderr
        assert _empty(elsewhere)  # no ./data, no store made behind the back


async def test_local_is_refused_while_a_server_holds_the_data_dir(
        start_gateway: StartGateway, tmp_path: Path, elsewhere: Path) -> None:
    running = await start_gateway()
    env = {"AILB_DATA_DIR": str(tmp_path / "data")}  # the gateway's (see tests/conftest.py)
    done = await in_thread("create", "--name", "sneaky", "--local", cwd=elsewhere, env=env)
    assert done.returncode == 1
    assert "--local refused" in done.stderr and f"(process {os.getpid()})" in done.stderr
    assert "drop --local" in done.stderr
    assert running.services.keys.all() == []


async def test_local_works_when_no_server_runs(start_gateway: StartGateway, tmp_path: Path,
                                               elsewhere: Path) -> None:
    env = {"AILB_DATA_DIR": str(tmp_path / "data")}
    made = await in_thread("create", "--name", "offline", "--rpm-limit", "7", "--local",
                           cwd=elsewhere, env=env)
    assert made.returncode == 0, made.stderr
    assert len(_secrets(made.stdout)) == 1 and "via the key store (SQLite at" in made.stderr
    key_id = _secrets(made.stdout)[0].split("-")[2]
    listed = await in_thread("list", "--local", cwd=elsewhere, env=env)
    assert key_id in listed.stdout
    updated = await in_thread("update", key_id, "--clear-rpm-limit", "--local", "--json",
                              cwd=elsewhere, env=env)
    assert json.loads(updated.stdout)["rpm_limit"] is None
    usage = await in_thread("usage", key_id, "--local", "--json", cwd=elsewhere, env=env)
    assert json.loads(usage.stdout)["spend_usd"] == 0
    unknown = await in_thread("revoke", "0123456789ab", "--local", cwd=elsewhere, env=env)
    assert unknown.returncode == 1
    running = await start_gateway()  # on the same data dir: it finds the key made offline
    assert running.services.keys.require(key_id).name == "offline"
    # the local changes are in the audit log, by the OS user, through the door "cli"; the
    # update of an unknown key was refused and is recorded so
    page = await running.services.audit.page()
    cli = [e for e in page["data"] if e["door"] == "cli"]
    assert [(e["action"], e["outcome"]) for e in cli] == [
        ("key.revoke", "refused"), ("key.update", "ok"), ("key.create", "ok")]
    assert cli[0]["target"] == "0123456789ab" and "0123456789ab" in cli[0]["changes"]["error"]
    assert all(e["actor"].startswith("cli:") and e["target"] == key_id for e in cli[1:])
    assert cli[1]["changes"] == {"rpm_limit": {"from": 7, "to": None}}
    assert not _secrets(json.dumps(page))


def _config(tmp_path: Path, port: str, extra: str = "") -> Path:
    path = tmp_path / "ailb.yaml"
    path.write_text(f"HTTP_PORT: {port}\nAILB_DATA_DIR: {tmp_path / 'data'}\n{extra}")
    return path


async def test_config_anywhere_on_the_line(start_gateway: StartGateway, tmp_path: Path,
                                           elsewhere: Path) -> None:
    running = await start_gateway()
    port = running.http_url.rsplit(":", 1)[1]
    config = _config(tmp_path, port)
    env = {"AILB_ADMIN_KEY": ADMIN_KEY}
    for args in (["list", "--config", str(config)], [f"--config={config}", "list"],
                 ["list", "--json", f"--config={config}"]):
        done = await in_thread(*args, cwd=elsewhere, env=env)  # its HTTP_PORT: the server
        assert done.returncode == 0, (args, done.stderr)
        assert f"via the server at http://127.0.0.1:{port}" in done.stderr
    before = await in_thread("--config", str(config), "list", cwd=elsewhere, env=env,
                             command="")
    before_too = await in_thread("--config", str(config), "keys", "list", cwd=elsewhere,
                                 env=env, command="")
    assert before.returncode == 2 and before_too.returncode == 0  # (no command "list")
    shown = await in_thread("--config", str(config), cwd=elsewhere, command="config")
    assert shown.returncode == 0 and json.loads(shown.stdout)["server"]["http_port"] == int(port)
    checked = await in_thread("--config", str(config), cwd=elsewhere, command="check-config")
    assert checked.returncode == 0 and str(config) in checked.stdout
    empty = await in_thread("list", "--config", cwd=elsewhere, env=env)
    assert empty.returncode == 2 and "--config needs a PATH" in empty.stderr


async def test_no_provider_secret_is_needed(start_gateway: StartGateway, tmp_path: Path,
                                            elsewhere: Path) -> None:
    running = await start_gateway()
    port = running.http_url.rsplit(":", 1)[1]
    config = _config(tmp_path, port, (
        "deployments:\n  - {name: eu, type: openai, api_key_env: OPENAI_EU_KEY, "
        "models: [gpt-4o]}\n"
        "keys:\n  - {key_env: AILB_KEY_SEARCH, name: search}\n"))
    env = {"AILB_ADMIN_KEY": ADMIN_KEY}
    listed = await in_thread("--config", str(config), "keys", "list", cwd=elsewhere, env=env,
                             command="")
    assert listed.returncode == 0, listed.stderr
    # the server's own check still wants them
    checked = await in_thread(str(config), cwd=elsewhere, command="check-config")
    assert checked.returncode == 2 and "OPENAI_EU_KEY" in checked.stderr
    # nor does ailb db (here it stops at the missing DATABASE_URL, not at the secrets)
    db = await in_thread("status", "--config", str(config), cwd=elsewhere, command="db")
    assert db.returncode == 2 and "DATABASE_URL is not set" in db.stderr, db.stderr
    # a wrong value beside them is still a configuration error for the CLI
    broken = _config(tmp_path, "not-a-port")
    wrong = await in_thread("list", "--config", str(broken), cwd=elsewhere, env=env)
    assert wrong.returncode == 2 and "HTTP_PORT" in wrong.stderr


def test_missing_admin_key_and_bad_usage(elsewhere: Path) -> None:
    no_key = keys("list", "--url", "http://127.0.0.1:9", cwd=elsewhere)
    assert no_key.returncode == 2 and "no admin key" in no_key.stderr
    nothing = keys("update", "0123456789ab", "--url", "http://127.0.0.1:9", cwd=elsewhere,
                   env={"AILB_ADMIN_KEY": ADMIN_KEY})
    assert nothing.returncode == 2 and "nothing to change" in nothing.stderr
    both = keys("update", "0123456789ab", "--rpm-limit", "5", "--clear-rpm-limit",
                cwd=elsewhere)
    assert both.returncode == 2 and "not allowed with" in both.stderr
    door = keys("list", "--local", "--url", "http://127.0.0.1:9", cwd=elsewhere)
    assert door.returncode == 2
    assert _empty(elsewhere)


def test_take_config() -> None:
    assert take_config(["keys", "list", "--config", "a.yaml"]) == ("a.yaml", ["keys", "list"])
    assert take_config(["--config=a", "keys", "--config", "b"]) == ("b", ["keys"])
    assert take_config(["keys", "--", "--config", "x"]) == (None, ["keys", "--", "--config",
                                                                    "x"])
    with pytest.raises(ValueError):
        take_config(["keys", "--config"])


def test_lenient_settings_leave_out_only_what_needs_an_unset_secret() -> None:
    from ailb.config.parse import parse_mapping
    from ailb.errors import ConfigError

    raw = {"deployments": [{"name": "eu", "type": "openai", "api_key_env": "OPENAI_EU_KEY",
                            "models": ["gpt-4o"]}],
           "keys": [{"key_env": "AILB_KEY_SEARCH", "name": "search"}]}
    with pytest.raises(ConfigError):
        parse_mapping(raw, {})
    lenient = parse_mapping(raw, {}, need_secrets=False)
    assert [d.name for d in lenient.deployments] == ["echo"] and lenient.keys == ()
    with pytest.raises(ConfigError, match="HTTP_PORT"):
        parse_mapping({**raw, "HTTP_PORT": "x"}, {}, need_secrets=False)
