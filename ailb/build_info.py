"""What this build of AILB is: version, git commit, build date.

Importing this module does nothing (no file read, no subprocess): every value is computed when a
function is called.

- ``version()``: the installed distribution's version (``importlib.metadata``), else
  ``ailb.__version__`` (the one-file binary carries no ``ailb`` dist-info).
- ``commit()`` / ``build_date()``: from ``ailb/_build.json``, which ``scripts/release.py
  build-info`` writes into the package before PyInstaller runs (the spec bundles it as data, so
  inside the binary it sits beside this module). Without that file: ``"unknown"``, or, for
  ``commit(use_git=True)`` in a source checkout (never in the frozen binary), ``git rev-parse``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

UNKNOWN = "unknown"
BUILD_FILE = Path(__file__).with_name("_build.json")  # tests monkeypatch this


def _build_record() -> dict[str, Any]:
    """The contents of ``_build.json``, or ``{}`` when it is missing or unreadable."""
    try:
        data = json.loads(BUILD_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def version() -> str:
    try:
        return metadata.version("ailb")
    except metadata.PackageNotFoundError:
        from ailb import __version__

        return __version__


def git_commit(directory: Path | None = None) -> str | None:
    """``git rev-parse --short HEAD`` of the checkout holding ``directory`` (default: this
    package's source), with ``-dirty`` when tracked files changed; None without git or a
    checkout."""
    where = directory or Path(__file__).resolve().parent
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=5, check=True)
        status = subprocess.run(["git", "-C", str(where), "status", "--porcelain",
                                 "--untracked-files=no"],
                                capture_output=True, text=True, timeout=5, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    sha = head.stdout.strip()
    if not sha:
        return None
    return sha + ("-dirty" if status.stdout.strip() else "")


def commit(use_git: bool = False) -> str:
    """The commit the build was made from. ``use_git``: when no build record exists, ask git
    (only from a source checkout: a frozen binary must not report whatever repository its
    working directory happens to be in)."""
    recorded = _text(_build_record().get("commit"))
    if recorded:
        return recorded
    if use_git and not getattr(sys, "frozen", False):
        return git_commit() or UNKNOWN
    return UNKNOWN


def build_date() -> str:
    """UTC ISO 8601 time of the build (``2025-01-31T12:00:00Z``), or ``"unknown"``."""
    return _text(_build_record().get("build_date")) or UNKNOWN


def describe(use_git: bool = False) -> str:
    """One line for ``ailb --version``: ``ailb 0.1.0 (commit 1a2b3c4, built 2025-...Z)``."""
    return f"ailb {version()} (commit {commit(use_git)}, built {build_date()})"
