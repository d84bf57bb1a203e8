"""Deployment files checked without deploying: the systemd unit, the Dockerfile and compose
file, and ``ailb.build_info``. Fast, offline, no Docker engine needed. ``make release`` (the real
build, ~1.5 min) is not part of the test suite.
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from types import ModuleType

import pytest

from ailb import __version__, build_info

ROOT = Path(__file__).resolve().parent.parent
UNIT = ROOT / "config" / "ailb.service"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = ROOT / "docker-compose.yml"


# --- systemd unit ------------------------------------------------------------------------------

def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """{section: {key: [values in order]}}; comments and blank lines skipped."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"directive outside a section: {line!r}"
        key, sep, value = line.partition("=")
        assert sep, f"not a key=value line: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    unit = parse_unit(UNIT.read_text(encoding="utf-8"))
    assert {"Unit", "Service", "Install"} <= set(unit)
    return unit["Service"]


def one(service: dict[str, list[str]], key: str) -> str:
    values = service.get(key)
    assert values, f"{key}= missing"
    return values[-1]


def yes(value: str) -> bool:
    return value.lower() in {"yes", "true", "1", "on"}


def test_unit_runs_the_binary_as_a_notify_service(service: dict[str, list[str]]) -> None:
    assert one(service, "Type") == "notify"
    # The one-file bootloader is MAINPID; notifications come from its child.
    assert one(service, "NotifyAccess") == "all"
    assert one(service, "WatchdogSec") == "30"
    assert one(service, "ExecStart") == "/usr/local/bin/ailb --config /etc/ailb/ailb.yaml"
    reload = one(service, "ExecReload")
    assert "-HUP" in reload and "$MAINPID" in reload
    assert one(service, "EnvironmentFile").lstrip("-") == "/etc/ailb/ailb.env"
    assert (one(service, "User"), one(service, "Group")) == ("ailb", "ailb")
    assert not yes(service.get("DynamicUser", ["no"])[-1])


def test_unit_state_and_stop(service: dict[str, list[str]]) -> None:
    assert one(service, "StateDirectory") == "ailb"
    assert "AILB_DATA_DIR=%S/ailb" in service["Environment"]
    assert one(service, "RuntimeDirectory") == "ailb"
    assert one(service, "KillSignal") == "SIGTERM"
    assert one(service, "KillMode") == "mixed"  # SIGTERM to the bootloader only, forwarded once
    assert int(one(service, "TimeoutStopSec")) > 30  # longer than the 30 s drain
    assert one(service, "Restart") == "on-failure"
    assert "2" in one(service, "RestartPreventExitStatus").split()  # config errors
    assert one(service, "LimitNOFILE") == "65536"


def test_unit_hardening(service: dict[str, list[str]]) -> None:
    assert one(service, "ProtectSystem") == "strict"
    for key in ("ProtectHome", "NoNewPrivileges", "PrivateTmp", "PrivateDevices",
                "LockPersonality", "RestrictRealtime", "ProtectKernelTunables",
                "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups"):
        assert yes(one(service, key)), key
    assert service["CapabilityBoundingSet"] == [""]  # empty: no capability at all
    assert service["AmbientCapabilities"] == [""]
    assert set(one(service, "RestrictAddressFamilies").split()) == {"AF_INET", "AF_INET6",
                                                                    "AF_UNIX"}
    assert one(service, "SystemCallArchitectures") == "native"
    # Not proven safe for the one-file binary with onnxruntime: see the comment in the unit.
    assert "MemoryDenyWriteExecute" not in service


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze not installed (apt-get install systemd)")
    # verify insists that ExecStart's program exists: point it at a stand-in.
    stand_in = tmp_path / "ailb"
    stand_in.write_text("#!/bin/sh\n")
    stand_in.chmod(0o755)
    unit = tmp_path / "ailb.service"
    unit.write_text(UNIT.read_text(encoding="utf-8").replace("/usr/local/bin/ailb",
                                                              str(stand_in)))
    out = subprocess.run([tool, "verify", "--man=no", "--generators=no", str(unit)],
                         capture_output=True, text=True, timeout=30)
    # verify exits 0 even for unknown keys or bad values: any message is a failure.
    messages = (out.stdout + out.stderr).strip()
    assert out.returncode == 0 and not messages, messages


def test_env_example_lists_the_secrets() -> None:
    text = (ROOT / "config" / "ailb.env.example").read_text(encoding="utf-8")
    keys = {line.split("=", 1)[0] for line in text.splitlines()
            if line and not line.startswith("#")}
    assert {"OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AILB_ADMIN_KEY"} <= keys
    assert all(line.endswith("=") for line in text.splitlines()
               if line and not line.startswith("#")), "the example must hold no values"
    assert "0600" in text


# --- Dockerfile, .dockerignore, compose -------------------------------------------------------

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line = pending + line
        pending = ""
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def dockerignored(path: str) -> bool:
    ignored = False
    for raw in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/").removeprefix("**/")
        parts = Path(path).parts
        prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        if any(fnmatch.fnmatch(p, pattern) or fnmatch.fnmatch(Path(p).name, pattern)
               for p in prefixes):
            ignored = not negate
    return ignored


def test_dockerfile_stages_and_runtime() -> None:
    instructions = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
    froms = [args for word, args in instructions if word == "FROM"]
    assert froms[0].startswith("python:3.11-slim-bookworm AS builder")
    assert froms[-1].startswith("debian:bookworm-slim")  # same glibc as the builder
    assert len(froms) == 2
    runtime = instructions[[i for i, (w, _) in enumerate(instructions) if w == "FROM"][-1]:]
    words = {w: a for w, a in runtime}  # the last of each in the runtime stage
    users = [a for w, a in runtime if w == "USER"]
    assert users and users[-1].split(":")[0] == "10001"
    assert set(words["EXPOSE"].split()) == {"8080", "50051"}
    assert "curl" in words["HEALTHCHECK"] and "/healthz" in words["HEALTHCHECK"]
    assert any(w == "RUN" and "curl" in a for w, a in runtime)  # installed where it runs
    assert json.loads(words["ENTRYPOINT"]) == ["/usr/local/bin/ailb", "--config",
                                               "/etc/ailb/ailb.yaml"]
    volumes = json.loads(words["VOLUME"])
    assert volumes == ["/var/lib/ailb"]  # memory/ and rag/ live in AILB_DATA_DIR too
    assert any(w == "ENV" and "AILB_DATA_DIR=/var/lib/ailb" in a for w, a in runtime)
    assert any(w == "COPY" and "--from=builder" in a and "/usr/local/bin/ailb" in a
               for w, a in runtime)


def test_dockerfile_copies_only_files_that_exist_and_are_sent() -> None:
    instructions = dockerfile_instructions(DOCKERFILE.read_text(encoding="utf-8"))
    sources = []
    for word, args in instructions:
        if word != "COPY" or "--from=" in args:
            continue
        parts = [p for p in args.split() if not p.startswith("--")]
        sources += parts[:-1]
    assert sources, "no COPY from the build context"
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
        assert not dockerignored(source), f"COPY {source}: excluded by .dockerignore"
    for private in (".venv", "dist", "build", "data", ".git", "ailb.env", "ailb/_build.json"):
        assert dockerignored(private), f"{private} is sent to the Docker daemon"


def test_compose_file() -> None:
    yaml = pytest.importorskip("yaml", reason="PyYAML is not installed")
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    services = compose["services"]
    assert set(services) == {"ailb", "ollama"}
    ailb = services["ailb"]
    assert ailb["build"] == "."
    assert {"8080:8080", "50051:50051"} <= set(ailb["ports"])
    assert ailb["env_file"] == "ailb.env"
    assert ailb["environment"]["OLLAMA_BASE_URL"] == "http://ollama:11434"
    mounts = {v.split(":")[1] for v in ailb["volumes"]}
    assert "/var/lib/ailb" in mounts
    ollama = services["ollama"]
    assert ollama["image"].startswith("ollama/ollama")
    assert "11434:11434" in ollama["ports"]
    assert any(v.endswith(":/root/.ollama") for v in ollama["volumes"])
    named = {v.split(":")[0] for s in services.values() for v in s.get("volumes", [])}
    assert named <= set(compose["volumes"]), "every named volume is declared"


# --- ailb.build_info ---------------------------------------------------------------------------

@pytest.fixture
def build_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "_build.json"
    monkeypatch.setattr(build_info, "BUILD_FILE", path)
    return path


def test_build_info_from_the_build_file(build_file: Path) -> None:
    build_file.write_text(json.dumps({"commit": "1a2b3c4", "build_date": "2025-01-31T12:00:00Z"}))
    assert build_info.commit() == "1a2b3c4"
    assert build_info.commit(use_git=True) == "1a2b3c4"  # the record wins over git
    assert build_info.build_date() == "2025-01-31T12:00:00Z"
    assert build_info.describe() == (f"ailb {build_info.version()} "
                                     "(commit 1a2b3c4, built 2025-01-31T12:00:00Z)")


@pytest.mark.parametrize("content", [None, "not json", "[1, 2]", '{"commit": ""}'])
def test_build_info_without_a_usable_file(build_file: Path, content: str | None) -> None:
    if content is not None:
        build_file.write_text(content)
    assert build_info.commit() == "unknown"
    assert build_info.build_date() == "unknown"


def test_build_info_git_only_when_asked_and_not_frozen(
        build_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake_git(directory: Path | None = None) -> str:
        calls.append("git")
        return "abcdef0"

    monkeypatch.setattr(build_info, "git_commit", fake_git)
    assert build_info.commit() == "unknown" and not calls
    assert build_info.commit(use_git=True) == "abcdef0"
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    assert build_info.commit(use_git=True) == "unknown"  # never ask git from the binary
    assert calls == ["git"]


def test_build_info_version(monkeypatch: pytest.MonkeyPatch) -> None:
    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    assert build_info.version()  # the installed distribution (the dev venv has it)
    monkeypatch.setattr(metadata, "version", not_installed)
    assert build_info.version() == __version__  # as in the one-file binary


def test_build_info_import_has_no_side_effects(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("build_info ran a command at import")

    monkeypatch.setattr(subprocess, "run", forbidden)
    spec = importlib.util.spec_from_file_location("_build_info_copy",
                                                  ROOT / "ailb" / "build_info.py")
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # reads no file either: BUILD_FILE need not exist
    assert module.UNKNOWN == "unknown"


def test_git_commit_outside_a_checkout(tmp_path: Path) -> None:
    assert build_info.git_commit(tmp_path) is None


def _release_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_release_copy", ROOT / "scripts" / "release.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_release_ships_the_grpc_protos_next_to_the_binary(tmp_path: Path) -> None:
    """dist/release/proto/ holds every .proto of proto/ at its own path (what protoc -I and
    the imports inside the files expect), replacing what an older release left there."""
    release = _release_script()
    stale = tmp_path / "proto" / "old" / "gone.proto"
    stale.parent.mkdir(parents=True)
    stale.write_text("syntax = \"proto3\";\n")
    copied = release.copy_protos(tmp_path)
    assert {"ailb/v1/gateway.proto", "marchproxy/module.proto",
            "marchproxy/types.proto"} <= set(copied)
    for name in copied:
        assert (tmp_path / "proto" / name).read_bytes() == (ROOT / "proto" / name).read_bytes()
    assert not stale.exists()
    source = (ROOT / "scripts" / "release.py").read_text(encoding="utf-8")
    assert "copy_protos(OUT)" in source  # release() writes them
