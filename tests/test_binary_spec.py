"""build_binary.spec, checked without building (the build itself is ``make smoke``).

The spec is executed with PyInstaller's build objects replaced by recorders, so this runs in a
second or two: the names it lists must exist in the installed libraries, and every component
chromadb loads by dotted name must survive the spec's filter and excludes (a chromadb upgrade that
moves one would otherwise surface only as a ModuleNotFoundError inside the binary).
"""

from __future__ import annotations

import importlib.util
import sys
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "build_binary.spec"


class Recorder:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        # What Analysis exposes to PYZ/EXE.
        self.pure: list[Any] = []
        self.scripts: list[Any] = []
        self.binaries: list[Any] = []
        self.datas: list[Any] = []


def run_spec(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    calls: list[tuple[str, Callable[[str], bool] | None]] = []

    def collect_submodules(package: str, filter: Callable[[str], bool] | None = None,
                           **_: Any) -> list[str]:
        calls.append((package, filter))
        return [package]

    hooks = types.ModuleType("PyInstaller.utils.hooks")
    hooks.collect_submodules = collect_submodules  # type: ignore[attr-defined]
    hooks.collect_data_files = lambda *a, **k: []  # type: ignore[attr-defined]
    for name in ("PyInstaller", "PyInstaller.utils"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "PyInstaller.utils.hooks", hooks)
    monkeypatch.setattr(sys, "path", list(sys.path))  # the spec may prepend the checkout
    namespace: dict[str, Any] = {"SPECPATH": str(ROOT), "__name__": "__main__",
                                 "Analysis": Recorder, "PYZ": Recorder, "EXE": Recorder}
    exec(compile(SPEC.read_text(encoding="utf-8"), str(SPEC), "exec"), namespace)
    namespace["_collect_calls"] = calls
    return namespace


def quietly_find(name: str) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return importlib.util.find_spec(name) is not None
        except ImportError:
            return False


def test_onefile_console_executable_named_ailb(monkeypatch: pytest.MonkeyPatch) -> None:
    ns = run_spec(monkeypatch)
    analysis, exe = ns["a"], ns["exe"]
    entry = Path(analysis.args[0][0])
    assert entry.is_absolute() and entry == ROOT / "ailb" / "__main__.py"
    assert analysis.kwargs["noarchive"] is False
    assert exe.kwargs["name"] == "ailb"
    assert exe.kwargs["console"] is True
    assert exe.kwargs["upx"] is False
    # One file: binaries and data go into the EXE itself, and there is no COLLECT step.
    assert analysis.binaries in exe.args and analysis.datas in exe.args
    assert "coll" not in ns


def test_listed_hidden_imports_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    ns = run_spec(monkeypatch)
    hidden = ns["a"].kwargs["hiddenimports"]
    for required in ("ailb", "chromadb", "onnxruntime", "tokenizers", "tqdm",
                     "dynaconf.loaders.yaml_loader", "dynaconf.loaders.env_loader",
                     "httpcore._backends.trio", "hypercorn.trio", "quart_trio"):
        assert required in hidden, required
    missing = [name for name in hidden if not quietly_find(name)]
    assert not missing, f"hidden imports that do not exist: {missing}"
    packages = [package for package, _ in ns["_collect_calls"]]
    assert "ailb" in packages and "chromadb" in packages


def test_chromadb_components_loaded_by_name_are_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    ns = run_spec(monkeypatch)
    keep = dict(ns["_collect_calls"])["chromadb"]
    assert keep is not None
    excludes = ns["a"].kwargs["excludes"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from chromadb.config import Settings
    # The defaults a PersistentClient builds its System from (chromadb.config.get_class).
    dotted = [field.default for name, field in Settings.model_fields.items()
              if name.endswith("_impl") and isinstance(field.default, str)]
    assert "chromadb.api.rust.RustBindingsAPI" in dotted
    # (Not every default exists: some name distributed-only modules that chromadb no longer
    # ships, e.g. chromadb.ingest.impl.simple_policy. The point is that the spec drops none.)
    for fqn in dotted:
        module = fqn.rsplit(".", 1)[0]
        assert keep(module), f"{module} is filtered out of collect_submodules('chromadb')"
        excluded = [e for e in excludes if module == e or module.startswith(e + ".")]
        assert not excluded, f"{module} is excluded by {excluded}"
    # And what the filter is for: Chroma's server and test suite stay out.
    assert not keep("chromadb.server.fastapi")
    assert not keep("chromadb.test.conftest")
