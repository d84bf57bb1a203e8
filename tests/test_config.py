"""Configuration: defaults, YAML, environment over YAML, validation errors that name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ailb.cli import main
from ailb.config.parse import parse_mapping
from ailb.config.settings import load_settings
from ailb.config.values import Secret
from ailb.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def test_defaults_of_the_configuration_guide() -> None:
    s = parse_mapping({}, {})
    assert (s.server.http_port, s.server.host, s.server.grpc_port) == (8080, "0.0.0.0", 50051)
    assert s.module_id == "ailb-1"
    assert s.routing_strategy == "load_balanced"
    assert (s.enable_memory, s.enable_rag) == (True, False)
    assert (s.memory_backend, s.rag_backend) == ("chromadb", "chromadb")
    assert s.data_dir == Path("./data")
    # no provider configured: the offline echo deployment answers
    assert [(d.name, d.type, d.models) for d in s.deployments] == [("echo", "echo", ("echo-1",))]


def test_environment_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "ailb.yaml"
    cfg.write_text("HTTP_PORT: 9000\nMODULE_ID: from-yaml\nupstream:\n  read_timeout_s: 12\n")
    env = {
        "HTTP_PORT": "9100",
        "GRPC_PORT": "50052",
        "ROUTING_STRATEGY": "failover",
        "ENABLE_RAG": "true",
        "OPENAI_API_KEY": "123456",  # TOML-parsed to an int by Dynaconf: must stay a string
        "OPENAI_MODELS": "gpt-4o,gpt-4o-mini",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
        "ANTHROPIC_API_KEY": "sk-ant-x",
        "ANTHROPIC_MODELS": "claude-a",
        "OLLAMA_BASE_URL": "http://127.0.0.1:11434",
        "UPSTREAM__FIRST_TOKEN_TIMEOUT_S": "7",
        "AILB_DATA_DIR": str(tmp_path / "state"),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    import os

    s = load_settings(str(cfg), os.environ)
    assert s.server.http_port == 9100
    assert s.server.grpc_port == 50052
    assert s.module_id == "from-yaml"
    assert s.routing_strategy == "failover"
    assert s.enable_rag is True
    assert s.upstream.read_timeout_s == 12
    assert s.upstream.first_token_timeout_s == 7
    assert s.data_dir == tmp_path / "state"
    openai = s.deployment("openai")
    assert openai.api_key == Secret("123456")
    assert openai.models == ("gpt-4o", "gpt-4o-mini")
    assert openai.base_url == "http://127.0.0.1:9/v1"
    assert s.deployment("anthropic").models == ("claude-a",)
    ollama = s.deployment("ollama")
    assert ollama.discovers_models
    assert [d.name for d in s.deployments] == ["openai", "anthropic", "ollama"]


def test_declared_deployments_and_aliases() -> None:
    s = parse_mapping({
        "deployments": [
            {"name": "a", "type": "openai", "base_url": "http://h1/v1", "api_key_env": "KEY_A",
             "models": ["m1"], "weight": 2},
            {"name": "b", "type": "ollama", "base_url": "http://h2:11434", "models": "m1,m2"},
        ],
        "aliases": {"smart": {"strategy": "failover", "targets": ["a/m1", "b/m2"]},
                    "plain": ["b/m1"]},
    }, {"KEY_A": "secret-a"})
    a = s.deployment("a")
    assert a.api_key.value == "secret-a" and a.weight == 2
    assert s.deployment("b").models == ("m1", "m2")
    smart, plain = s.aliases
    assert smart.strategy == "failover"
    assert [(t.deployment, t.model) for t in smart.targets] == [("a", "m1"), ("b", "m2")]
    assert plain.strategy is None


@pytest.mark.parametrize(
    ("raw", "key", "words"),
    [
        ({"HTTP_PORT": "abc"}, "HTTP_PORT", "integer from 0 to 65535"),
        ({"HTTP_PORT": 70000}, "HTTP_PORT", "integer from 0 to 65535"),
        ({"ROUTING_STRATEGY": "fastest"}, "ROUTING_STRATEGY", "round_robin"),
        ({"ENABLE_MEMORY": "maybe"}, "ENABLE_MEMORY", "true or false"),
        ({"LOG_LEVEL": "loud"}, "LOG_LEVEL", "debug"),
        ({"OPENAI_BASE_URL": "ftp://x"}, "OPENAI_BASE_URL", "http"),
        ({"HTTP_PROT": 1}, "HTTP_PROT", "not a known"),
        ({"upstream": {"read_timeout": 3}}, "UPSTREAM.read_timeout", "not a known key"),
        ({"deployments": [{"name": "x", "type": "grpc", "models": ["m"]}]},
         "deployments[0].type", "openai"),
        ({"deployments": [{"name": "x", "type": "openai", "base_url": "http://h",
                           "api_key_env": "MISSING", "models": ["m"]}]},
         "deployments[0].api_key_env", "not set"),
        ({"deployments": [{"name": "x", "type": "openai", "base_url": "http://h"}]},
         "deployments[0].models", "at least one"),
        ({"aliases": {"s": ["nowhere/m"]}}, "aliases.s.targets[0]", "not configured"),
        ({"deployments": [{"name": "echo", "type": "echo", "models": ["e"]},
                          {"name": "echo", "type": "echo", "models": ["f"]}]},
         "DEPLOYMENTS", "used twice"),
    ],
)
def test_bad_values_name_the_key(raw: dict[str, object], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_mapping(raw, {})
    assert info.value.key == key
    assert words in str(info.value)


def test_bad_value_exits_with_code_2(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("HTTP_PORT", "not-a-port")
    assert main(["--config", str(ROOT / "config" / "ailb.yaml")]) == 2
    err = capsys.readouterr().err
    assert "HTTP_PORT" in err and "integer" in err


def test_missing_config_file_exits_with_code_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", "/nonexistent/ailb.yaml"]) == 2
    assert "--config" in capsys.readouterr().err


def test_config_command_masks_secrets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-live-very-secret-value-9876")
    monkeypatch.setenv("AILB_ADMIN_KEY", "admin-very-secret-value-1234")
    assert main(["--config", str(ROOT / "config" / "ailb.yaml"), "config"]) == 0
    out = capsys.readouterr().out
    assert "very-secret-value" not in out
    shown = json.loads(out)
    assert shown["deployments"][0]["api_key"] == "***9876"
    assert shown["admin_key"] == "***1234"


def test_config_command_masks_headers_and_url_passwords(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "ailb.yaml"
    cfg.write_text(
        "deployments:\n"
        "  - name: azure\n"
        "    type: openai\n"
        "    base_url: https://user:hunter2pass@azure.example.com/v1\n"
        "    headers: {api-key: azure-SECRET-header-value}\n"
        "    api_key: short\n"
        "    models: [gpt-4o]\n")
    assert main(["--config", str(cfg), "config"]) == 0
    out = capsys.readouterr().out
    assert "hunter2pass" not in out and "SECRET" not in out and "short" not in out
    shown = json.loads(out)["deployments"][0]
    assert shown["headers"] == {"api-key": "***"}
    assert shown["base_url"] == "https://user:***@azure.example.com/v1"
    assert shown["api_key"] == "***"


def test_shipped_yaml_is_valid_and_commented() -> None:
    text = (ROOT / "config" / "ailb.yaml").read_text()
    assert text.count("#") > 40
    s = load_settings(str(ROOT / "config" / "ailb.yaml"), {})
    assert s.server.http_port == 8080


def test_secret_repr_hides_value() -> None:
    assert "abc" not in repr(Secret("abcdefghijkl"))
    assert "abcdefghijkl" not in repr(parse_mapping({"OPENAI_API_KEY": "abcdefghijkl"}, {}))


def test_chroma_url_credentials_are_kept_out_of_the_url() -> None:
    from ailb.config.view import masked
    from ailb.vectors.chroma import _auth_header

    settings = parse_mapping({"CHROMA_URL": "https://ops:S3cret%21@chroma.internal:8443/"}, {})
    assert settings.chroma_url == "https://chroma.internal:8443"
    assert settings.chroma_auth.value == "ops:S3cret!"
    assert "S3cret" not in repr(settings) and "S3cret" not in str(masked(settings))
    assert _auth_header("ops:S3cret!") == {"Authorization": "Basic b3BzOlMzY3JldCE="}
    assert _auth_header(":tok") == {"Authorization": "Bearer tok"}
    assert _auth_header("") == {}
    plain = parse_mapping({"CHROMA_URL": "http://127.0.0.1:8000"}, {})
    assert (plain.chroma_url, plain.chroma_auth.value) == ("http://127.0.0.1:8000", "")


@pytest.mark.parametrize("in_yaml", [False, True])
def test_database_and_redis_urls_come_from_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_yaml: bool) -> None:
    # Dynaconf takes a REDIS_URL default for its own option; AILB must still see the variable
    path = tmp_path / "ailb.yaml"
    path.write_text(json.dumps({"REDIS_URL": "redis://yaml:6379/0"} if in_yaml else {}))
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6390/1")
    monkeypatch.setenv("DATABASE_URL", "postgresql://ailb:pw@127.0.0.1/ailb")
    settings = load_settings(str(path), {"REDIS_URL": "redis://127.0.0.1:6390/1"})
    assert settings.shared.redis_url.value == "redis://127.0.0.1:6390/1"
    assert settings.shared.database_url.value == "postgresql://ailb:pw@127.0.0.1/ailb"
    monkeypatch.setenv("REDIS_URL", "http://nope")
    with pytest.raises(ConfigError, match="REDIS_URL"):
        load_settings(str(path), {"REDIS_URL": "http://nope"})
