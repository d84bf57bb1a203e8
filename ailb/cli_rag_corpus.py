"""What ``ailb rag ingest`` uploads (the files found under the paths given, in batches of
bounded size) and the tally of what is done, shown as progress on stderr."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TextIO

from ailb.rag.documents import UPLOAD_EXTENSIONS

MAX_FILES: Final = 200  # per request (the server takes at most 1000 parts)

@dataclass(frozen=True, slots=True)
class Source:
    path: Path
    doc_id: str
    size: int


@dataclass(slots=True)
class Tally:
    files_total: int = 0
    bytes_total: int = 0
    files_done: int = 0
    bytes_done: int = 0
    chunks: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    skipped: list[str] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)


def collect(paths: Sequence[str], tally: Tally) -> list[Source]:
    """The files to upload, in order; others are noted in ``tally.skipped``."""
    found: list[Source] = []

    def take(path: Path, doc_id: str) -> None:
        if path.suffix.lower().lstrip(".") not in UPLOAD_EXTENSIONS:
            tally.skipped.append(str(path))
        else:
            found.append(Source(path, doc_id, path.stat().st_size))

    for given in paths:
        root = Path(given)
        if root.is_dir():
            for path in sorted(_walk(root)):
                take(path, ":".join(path.relative_to(root).parts))
        elif root.is_file():
            take(root, root.name)
        else:
            tally.failed.append((given, "no such file or directory"))
    return found


def _walk(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in files:
            yield Path(folder) / name


def batches(sources: Sequence[Source], most_bytes: int) -> Iterator[list[Source]]:
    """``sources`` in order, in groups of at most ``most_bytes`` (a larger file alone)."""
    group: list[Source] = []
    size = 0
    for source in sources:
        if group and (size + source.size > most_bytes or len(group) >= MAX_FILES):
            yield group
            group, size = [], 0
        group.append(source)
        size += source.size
    if group:
        yield group


class Progress:
    """Files and bytes done on stderr: a redrawn bar on a terminal, else a line per change."""

    def __init__(self, tally: Tally, out: TextIO, quiet: bool) -> None:
        self._tally, self._out, self._quiet = tally, out, quiet
        self._tty = out.isatty()
        self._last = ""

    def show(self) -> None:
        t = self._tally
        text = (f"{t.files_done}/{t.files_total} files, {_mb(t.bytes_done)}/"
                f"{_mb(t.bytes_total)}, {t.chunks} chunks, {len(t.failed)} failed")
        if self._quiet or text == self._last:
            return
        self._last = text
        if self._tty:
            done = t.bytes_done / t.bytes_total if t.bytes_total else 1.0
            bar = "#" * int(done * 30)
            self._out.write(f"\r[{bar:<30}] {done:4.0%} {text}\x1b[K")
        else:
            self._out.write(f"progress: {text}\n")
        self._out.flush()

    def say(self, line: str) -> None:
        if not self._quiet:
            self._out.write(("\n" if self._tty and self._last else "") + line + "\n")
            self._last = ""
            self._out.flush()

    def end(self) -> None:
        if self._tty and self._last and not self._quiet:
            self._out.write("\n")


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"
