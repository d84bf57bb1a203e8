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
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Final, TextIO

import httpx

from ailb.cli_rag_corpus import Progress, Source, Tally, batches, collect
from ailb.errors import CommandFailed
from ailb.rag.documents import UPLOAD_EXTENSIONS

DEFAULT_URL: Final = "http://127.0.0.1:8080"
POLL_S: Final = 0.3
BUSY_TRIES: Final = 10  # a request answered 429 is sent again at most this many times
BUSY_WAIT_S: Final = (5.0, 60.0)  # without / at most, whatever Retry-After asks


def unusable(message: str) -> CommandFailed:
    """The server cannot be used at all: exit 2 with this message."""
    return CommandFailed(message, exit_code=2)


def retry_after_s(value: str | None, now: datetime) -> float:
    """The wait a ``Retry-After`` header asks for (delta-seconds or an HTTP-date), within
    ``BUSY_WAIT_S``: absent or unreadable, the default; a date gone by, no wait."""
    if not value:
        return BUSY_WAIT_S[0]
    try:
        wait = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return BUSY_WAIT_S[0]
        wait = (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp() \
            - now.timestamp()
    if wait != wait:  # NaN
        return BUSY_WAIT_S[0]
    return min(max(wait, 0.0), BUSY_WAIT_S[1])


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
            raise unusable(f"cannot read {args.admin_key_file}: {exc.strerror}") from None
    key = os.environ.get("AILB_API_KEY") or os.environ.get("AILB_ADMIN_KEY")
    if not key:
        raise unusable("no key: give --api-key (or AILB_API_KEY), or --admin-key-file (or "
                       "AILB_ADMIN_KEY)")
    return key


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
                raise unusable(f"cannot create collection '{self._collection}': {_error(made)}")
            self._progress.say(f"created collection '{self._collection}'")
        elif got.status_code != 200:
            raise unusable(f"cannot use collection '{self._collection}': {_error(got)}")

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
        for _ in range(BUSY_TRIES + 1):
            response = self._http.post(
                f"/v1/rag/collections/{self._collection}/documents",
                params={"async": "true"}, files=files,
                data={"id": [s.doc_id for s in group]})
            if response.status_code != 429:
                break
            time.sleep(retry_after_s(response.headers.get("retry-after"), datetime.now(UTC)))
        else:  # still busy: these files fail, the next batch may find room
            for source in group:
                self._failed(source, f"{_error(response)} (tried {BUSY_TRIES + 1} times)")
            return
        if response.status_code in (401, 403, 404):
            raise unusable(_error(response))
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
                raise unusable(f"cannot follow job {job['id']}: {_error(polled)}")
            job = polled.json()
        if job["status"] == "failed":
            done = int(job["documents_done"])
            error = job.get("error") or {}
            why = f"{error.get('code')}: {error.get('message')}"
            if done >= len(group):  # every document was added before the job failed
                self._progress.say(f"job {job['id']} failed after adding all its documents "
                                   f"({why})")
                return
            self._failed(group[done], why)
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
        # trust_env=False: a proxy from the environment must not see the key
        with httpx.Client(base_url=url, timeout=120, trust_env=False,
                          headers={"authorization": f"Bearer {key}"}) as http:
            ingest = Ingest(http, args.collection, tally, progress)
            ingest.ensure_collection()
            progress.show()
            for group in batches(sources, max(1, args.batch_bytes)):
                ingest.send(group)
    except CommandFailed as exc:
        progress.end()
        print(f"ailb rag: {exc.message}", file=stderr)
        return exc.exit_code
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
