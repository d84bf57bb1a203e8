"""``ailb rag ingest``'s own rules, without a gateway: the server's ``Retry-After`` in both of
its forms, a server that stays busy, and a job that fails after adding all its documents.
(Ingesting through a running gateway: tests/test_rag_jobs.py.)"""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import httpx
import pytest

from ailb.cli_rag import BUSY_TRIES, BUSY_WAIT_S, Ingest, retry_after_s
from ailb.cli_rag_corpus import Progress, Source, Tally
from ailb.errors import CommandFailed

NOW = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(("value", "wait"), [
    ("3", 3.0), ("0.5", 0.5), ("-4", 0.0), ("100000", BUSY_WAIT_S[1]), (None, BUSY_WAIT_S[0]),
    ("soon", BUSY_WAIT_S[0]), ("nan", BUSY_WAIT_S[0]),
    (format_datetime(NOW + timedelta(seconds=7), usegmt=True), 7.0),
    (format_datetime(NOW - timedelta(hours=1), usegmt=True), 0.0),
])
def test_retry_after_in_both_forms(value: str | None, wait: float) -> None:
    assert retry_after_s(value, NOW) == wait


def _ingest(tmp_path: Path, answer: httpx.Response) -> tuple[Ingest, Tally, list[Source],
                                                             list[int]]:
    sent: list[int] = []

    def server(request: httpx.Request) -> httpx.Response:  # a server that always says this
        sent.append(1)
        return answer

    files = []
    for name in ("a.txt", "b.txt"):
        (tmp_path / name).write_text("text")
        files.append(Source(tmp_path / name, name, 4))
    tally = Tally(files_total=2, bytes_total=8)
    http = httpx.Client(base_url="http://ailb.test", transport=httpx.MockTransport(server))
    return Ingest(http, "kb", tally, Progress(tally, io.StringIO(), True)), tally, files, sent


def test_a_server_that_stays_busy_fails_the_batch_after_a_bounded_number_of_tries(
        tmp_path: Path) -> None:
    gone_by = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    busy = httpx.Response(429, headers={"retry-after": gone_by}, json={"error": {
        "code": "ingest_queue_full", "message": "busy"}})
    ingest, tally, files, sent = _ingest(tmp_path, busy)
    ingest.send(files)
    assert len(sent) == BUSY_TRIES + 1
    assert [path for path, _ in tally.failed] == [str(s.path) for s in files]
    assert "ingest_queue_full" in tally.failed[0][1]


def test_a_job_failing_after_all_its_documents_fails_no_file(tmp_path: Path) -> None:
    ingest, tally, files, _ = _ingest(tmp_path, httpx.Response(500))
    ingest._follow({"id": "job-1", "status": "failed", "documents_done": 2, "chunks_done": 2,
                    "error": {"code": "shutdown", "message": "AILB shut down"}}, files)
    assert tally.failed == [] and tally.files_done == 2
    ingest._follow({"id": "job-2", "status": "failed", "documents_done": 1, "chunks_done": 1,
                    "error": {"code": "x", "message": "bad"}}, files[:1] + files[1:])
    assert [path for path, _ in tally.failed] == [str(files[1].path)]


def test_a_server_that_cannot_be_used_is_a_command_failure(tmp_path: Path) -> None:
    ingest, _, files, _ = _ingest(tmp_path, httpx.Response(403, json={"error": {
        "code": "permission_denied", "message": "no"}}))
    with pytest.raises(CommandFailed) as failed:
        ingest.send(files)
    assert failed.value.exit_code == 2 and "permission_denied" in failed.value.message
