"""A configuration with several problems reports every one of them: when parsed, at start-up
(exit code 2), from ``ailb check-config``, and when a reload refuses it (the log and
/healthz; the gRPC Reload answers with the same text). SIGHUP on a real process:
tests/test_operations.py."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from ailb.cli import main
from ailb.config.parse import parse_mapping
from ailb.config.settings import load_settings
from ailb.errors import ConfigError, ConfigErrors
from ailb.supervisor import Running, run
from tests.conftest import ADMIN_KEY

# eleven problems, in every part of the file
BROKEN: dict[str, Any] = {
    "HTTP_PROT": 8080,  # a typo of a top-level key
    "HTTP_PORT": "eighty",
    "LOG_LEVEL": "loud",
    "server": {"grace_s": -1, "max_body_bytes": "big", "colour": "blue"},
    "routing": {"max_attempts": 0},
    "rag": {"chunk_chars": 10},
    "deployments": [
        {"name": "a", "type": "grpc", "models": ["m"]},
        {"name": "b", "type": "openai", "base_url": "http://h"},  # no models
        {"name": "c", "type": "echo", "models": ["c-1"]},  # fine
    ],
    # "a" is declared (wrongly: its own problem), "nowhere" is not
    "aliases": {"smart": ["a/m"], "fast": ["nowhere/m"]},
    "prices": {"m": {"input_per_mtok": -5}},
}
EXPECTED = {"HTTP_PROT", "HTTP_PORT", "LOG_LEVEL", "SERVER.grace_s", "SERVER.max_body_bytes",
            "SERVER.colour", "ROUTING.max_attempts", "RAG.chunk_chars", "deployments[0].type",
            "deployments[1].models", "aliases.fast.targets[0]", "prices.m.input_per_mtok"}


def test_every_problem_is_listed_not_only_the_first() -> None:
    with pytest.raises(ConfigErrors) as info:
        parse_mapping(BROKEN, {})
    keys = [error.key for error in info.value.errors]
    assert sorted(keys) == sorted(EXPECTED)  # each once; none made up by another one's default
    text = str(info.value)
    assert text.startswith(f"{len(EXPECTED)} configuration errors: ")
    for error in info.value.errors:
        assert str(error) in text
    assert isinstance(info.value, ConfigError) and info.value.key == keys[0]


def test_one_problem_is_still_a_plain_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_mapping({"server": {"grace_s": -1}}, {})
    assert type(info.value) is ConfigError and info.value.key == "SERVER.grace_s"


def test_cross_checks_run_only_on_valid_values() -> None:
    """RAG's overlap must be under its chunk size: not reported when the size is wrong."""
    with pytest.raises(ConfigError) as info:
        parse_mapping({"rag": {"chunk_chars": "x", "chunk_overlap": 500}}, {})
    assert type(info.value) is ConfigError and info.value.key == "RAG.chunk_chars"
    with pytest.raises(ConfigErrors) as both:
        parse_mapping({"rag": {"chunk_chars": 200, "chunk_overlap": 300, "top_k": 0},
                       "embeddings": {"embedder": "provider"}}, {})
    assert {e.key for e in both.value.errors} == {"RAG.top_k", "RAG.chunk_overlap",
                                                  "EMBEDDINGS.model"}


def _write(path: Path, raw: dict[str, Any]) -> Path:
    path.write_text(json.dumps(raw))  # JSON is YAML
    return path


def test_check_config_and_start_up_list_every_problem_and_exit_2(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _write(tmp_path / "ailb.yaml", BROKEN)
    for argv in (["check-config", str(config)], ["--config", str(config)]):
        assert main(argv) == 2
        lines = capsys.readouterr().err.splitlines()
        assert lines[0] == f"ailb: {len(EXPECTED)} configuration errors:"
        assert len(lines) == 1 + len(EXPECTED)
        assert {line.split()[1] for line in lines[1:]} == EXPECTED  # "  - KEY problem"


def test_a_real_process_with_a_bad_file_exits_2_naming_every_problem(tmp_path: Path) -> None:
    config = _write(tmp_path / "ailb.yaml", {**BROKEN, "AILB_DATA_DIR": str(tmp_path / "d")})
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AILB_", "HTTP_"))}
    done = subprocess.run([sys.executable, "-m", "ailb", "--config", str(config)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    for key in EXPECTED:
        assert f"  - {key} " in done.stderr


async def test_a_refused_reload_reports_every_problem(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    good: dict[str, Any] = {"HOST": "127.0.0.1", "HTTP_PORT": 0, "GRPC_PORT": 0,
                            "AILB_DATA_DIR": str(tmp_path / "data"),
                            "AILB_ADMIN_KEY": ADMIN_KEY, "server": {"unready_delay_s": 0}}
    config = _write(tmp_path / "ailb.yaml", good)
    settings = load_settings(str(config), {})
    async with httpx.AsyncClient() as http, trio.open_nursery() as life:
        running: Running = await life.start(partial(
            run, settings, load=partial(load_settings, str(config), {})))
        _write(config, {**good, **{k: v for k, v in BROKEN.items() if k != "HTTP_PORT"}})
        with caplog.at_level(logging.ERROR, logger="ailb.runtime"):
            assert not running.reload()
        expected = EXPECTED - {"HTTP_PORT"}
        record = next(r for r in caplog.records if "reload refused" in r.getMessage())
        fields = record.__dict__["fields"]
        assert {error.split()[0] for error in fields["errors"]} == expected
        health = (await http.get(f"{running.http_url}/healthz")).json()
        reported = health["config"]["last_reload_error"]
        assert reported.startswith(f"{len(expected)} configuration errors: ")
        assert all(f"{key} " in reported for key in expected)
        running.request_shutdown()
