"""``ailb rag ingest PATH...``: fill a RAG collection with a corpus through a running server.

Files and directories (walked recursively, in name order) are uploaded through the server's
API (never a local store): files whose extension the RAG route understands (``.txt``, ``.md``,
``.html`` ...) go in batches of at most ``--batch-bytes`` per request, each run as an ingest job
(``?async=true``) that is followed to its end; other files are skipped and listed. A file's
document id is its path below the directory given, ``/`` written as ``:`` (a file given by
itself: its name), so ingesting the same tree again replaces its documents.

Progress (files and bytes done) goes to stderr: a bar on a terminal, else a line per change;
``--quiet`` says nothing but errors, ``--json`` prints a summary object on stdout at the end.
Exit status: 0 when every file was ingested, 1 when any failed (they are listed), 2 when the
server could not be used at all (unreachable, a wrong key, no such collection and no right to
create it).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, TextIO

import httpx

from ailb.rag.documents import UPLOAD_EXTENSIONS

DEFAULT_URL: Final = "http://127.0.0.1:8080"
POLL_S: Final = 0.3
MAX_FILES: Final = 200  # per request (the server takes at most 1000 parts)


class CliError(Exception):
    """The server cannot be used at all: exit 2 with this message."""


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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ailb rag", description="RAG collections.")
    sub = parser.add_subparsers(dest="action", required=True)
    ingest = sub.add_parser("ingest", help="upload files and directories into a collection")
    ingest.add_argument("paths", nargs="+", metavar="PATH")
    ingest.add_argument("--collection", required=True)
    ingest.add_argument("--url", default=None, help=f"the server (default: $AILB_URL or "
                                                    f"{DEFAULT_URL})")
    ingest.add_argument("--api-key", default=None, help="a virtual key whose rag_collections "
                        "grants the collection (default: $AILB_API_KEY)")
    ingest.add_argument("--admin-key-file", default=None, type=Path,
                        help="a file holding the admin key (default: $AILB_ADMIN_KEY)")
    ingest.add_argument("--batch-bytes", type=int, default=8 * 1024 * 1024,
                        help="file bytes per request at most (default 8 MiB; keep it under the "
                             "server's RAG.max_upload_bytes)")
    ingest.add_argument("--quiet", action="store_true", help="no progress output")
    ingest.add_argument("--json", action="store_true", help="a JSON summary on stdout")
    return parser


def _key(args: argparse.Namespace) -> str:
    if args.api_key:
        return str(args.api_key)
    if args.admin_key_file is not None:
        try:
            return str(args.admin_key_file.read_text(encoding="utf-8").strip())
        except OSError as exc:
            raise CliError(f"cannot read {args.admin_key_file}: {exc.strerror}") from None
    key = os.environ.get("AILB_API_KEY") or os.environ.get("AILB_ADMIN_KEY")
    if not key:
        raise CliError("no key: give --api-key (or AILB_API_KEY), or --admin-key-file (or "
                       "AILB_ADMIN_KEY)")
    return key


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


def _error(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
        return f"{response.status_code} {error.get('code') or ''}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code}: {response.text[:200]}"


class Ingest:
    def __init__(self, http: httpx.Client, collection: str, tally: Tally,
                 progress: Progress) -> None:
        self._http, self._collection = http, collection
        self._tally, self._progress = tally, progress

    def ensure_collection(self) -> None:
        path = f"/v1/rag/collections/{self._collection}"
        got = self._http.get(path)
        if got.status_code == 404 and got.json().get("error", {}).get("code") == \
                "collection_not_found":
            made = self._http.post("/v1/rag/collections", json={"name": self._collection})
            if made.status_code != 201:
                raise CliError(f"cannot create collection '{self._collection}': {_error(made)}")
            self._progress.say(f"created collection '{self._collection}'")
        elif got.status_code != 200:
            raise CliError(f"cannot use collection '{self._collection}': {_error(got)}")

    def send(self, group: list[Source]) -> None:
        """Upload ``group`` as one job and follow it; a refused request is tried file by file
        to find the bad ones."""
        try:  # httpx names each part's type from the file name; the server reads the kind
            files = [("file", (s.path.name, s.path.read_bytes())) for s in group]
        except OSError as exc:
            if len(group) > 1:
                for source in group:
                    self.send([source])
            else:
                self._failed(group[0], exc.strerror or str(exc))
            return
        while True:
            response = self._http.post(
                f"/v1/rag/collections/{self._collection}/documents",
                params={"async": "true"}, files=files,
                data={"id": [s.doc_id for s in group]})
            if response.status_code != 429:
                break
            time.sleep(float(response.headers.get("retry-after", "5")))
        if response.status_code in (401, 403, 404):
            raise CliError(_error(response))
        if response.status_code != 202:
            if len(group) > 1:
                for source in group:
                    self.send([source])
            else:
                self._failed(group[0], _error(response))
            return
        self._follow(response.json(), group)

    def _follow(self, job: dict[str, Any], group: list[Source]) -> None:
        self._tally.jobs.append(job["id"])
        base = (self._tally.files_done, self._tally.bytes_done, self._tally.chunks)
        while True:
            done = int(job["documents_done"])
            self._tally.files_done = base[0] + done
            self._tally.bytes_done = base[1] + sum(s.size for s in group[:done])
            self._tally.chunks = base[2] + int(job["chunks_done"])
            self._progress.show()
            if job["status"] in ("succeeded", "failed"):
                break
            time.sleep(POLL_S)
            polled = self._http.get(f"/v1/rag/jobs/{job['id']}")
            if polled.status_code != 200:
                raise CliError(f"cannot follow job {job['id']}: {_error(polled)}")
            job = polled.json()
        if job["status"] == "failed":
            done = int(job["documents_done"])
            error = job.get("error") or {}
            self._failed(group[done], f"{error.get('code')}: {error.get('message')}")
            if done + 1 < len(group):
                self.send(group[done + 1:])

    def _failed(self, source: Source, why: str) -> None:
        self._tally.failed.append((str(source.path), why))
        self._tally.files_done += 1
        self._tally.bytes_done += source.size
        self._progress.say(f"failed: {source.path}: {why}")
        self._progress.show()


def run_rag(argv: Sequence[str], stdout: TextIO = sys.stdout,
            stderr: TextIO = sys.stderr) -> int:
    args = _parser().parse_args(argv)
    tally = Tally()
    progress = Progress(tally, stderr, args.quiet)
    try:
        key = _key(args)
        sources = collect(args.paths, tally)
        tally.files_total = len(sources) + len(tally.failed)
        tally.bytes_total = sum(s.size for s in sources)
        tally.files_done = len(tally.failed)
        for path in tally.skipped:
            progress.say(f"skipped (not .{', .'.join(sorted(UPLOAD_EXTENSIONS))}): {path}")
        url = args.url or os.environ.get("AILB_URL") or DEFAULT_URL
        with httpx.Client(base_url=url, timeout=120,
                          headers={"authorization": f"Bearer {key}"}) as http:
            ingest = Ingest(http, args.collection, tally, progress)
            ingest.ensure_collection()
            progress.show()
            for group in batches(sources, max(1, args.batch_bytes)):
                ingest.send(group)
    except CliError as exc:
        progress.end()
        print(f"ailb rag: {exc}", file=stderr)
        return 2
    except httpx.HTTPError as exc:
        progress.end()
        print(f"ailb rag: the server cannot be reached: {exc}", file=stderr)
        return 2
    progress.end()
    ok = tally.files_total - len(tally.failed)
    if args.json:
        json.dump({"collection": args.collection, "files": tally.files_total, "ingested": ok,
                   "bytes": tally.bytes_total, "chunks": tally.chunks, "jobs": tally.jobs,
                   "skipped": tally.skipped,
                   "failed": [{"path": p, "error": e} for p, e in tally.failed]}, stdout)
        stdout.write("\n")
    elif not args.quiet:
        print(f"ingested {ok} of {tally.files_total} file(s) ({tally.chunks} chunks) into "
              f"'{args.collection}'; {len(tally.skipped)} skipped, {len(tally.failed)} failed",
              file=stderr)
    if tally.failed:
        print("failed files:", file=stderr)
        for path, why in tally.failed:
            print(f"  {path}: {why}", file=stderr)
        return 1
    return 0
