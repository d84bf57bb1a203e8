"""RAG ingestion of real corpora on a real gateway: uploads above the chat body limit, large
document requests as ingest jobs (202, status in the store, interrupted and refused jobs), and
``ailb rag ingest`` as a subprocess against a running gateway."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from ailb.keys.store import SqliteStore
from ailb.rag.jobs import STALE_S, IngestJob, as_seen, is_job_id, new_job_id
from ailb.supervisor import Running, run
from tests.conftest import ADMIN_KEY, StartGateway, auth, make_settings
from tests.test_connection_hygiene import Conn, connector, head
from tests.test_rag_api import RAG, assert_error, create_collection, new_key, query

MIB = 1024 * 1024
FAST = {"chunk_chars": 20_000, "chunk_overlap": 100}  # few chunks per megabyte: a quick ingest


def corpus_text(n: int, marker: str) -> bytes:
    """About ``n`` bytes of plain text with one sentence naming ``marker``."""
    line = b"The quarterly report lists revenue, costs and the outlook for each region.\n"
    body = line * (n // len(line))
    return body + f"The {marker} is stored in vault number seven.\n".encode()


async def wait_for(http: httpx.AsyncClient, url: str, job_id: str,
                   key: str = ADMIN_KEY) -> dict[str, Any]:
    seen: list[str] = []
    with trio.fail_after(60):
        while True:
            got = await http.get(f"{url}/v1/rag/jobs/{job_id}", headers=auth(key))
            assert got.status_code == 200, got.text
            job: dict[str, Any] = got.json()
            seen.append(job["status"])
            if job["status"] in ("succeeded", "failed"):
                return job
            await trio.sleep(0.05)


async def test_rag_uploads_pass_the_chat_body_limit(start_gateway: StartGateway) -> None:
    url = (await start_gateway(ENABLE_RAG=True, RAG={**FAST, "max_upload_bytes": 8 * MIB},
                               )).http_url
    body = corpus_text(4 * MIB + 200_000, "falcon ledger")  # over SERVER.max_body_bytes (4 MiB)
    async with httpx.AsyncClient(timeout=60) as http:
        await create_collection(http, url, "reports")
        chat = await http.post(f"{url}/v1/chat/completions", headers=auth(),
                               content=b'{"model":"echo-1","messages":[],"x":"' + body + b'"}')
        assert_error(chat, 413, "request_too_large")
        upload = await http.post(f"{url}{RAG}/reports/documents", headers=auth(),
                                 files=[("file", ("report.txt", body, "text/plain"))])
        assert upload.status_code == 202, upload.text  # over RAG.sync_max_bytes: a job
        job = await wait_for(http, url, upload.json()["id"])
        assert (job["status"], job["documents_done"], job["error"]) == ("succeeded", 1, None)
        found = (await query(http, url, "reports", "where is the falcon ledger?")).json()
        assert "falcon ledger" in found["data"][0]["text"]
        over = await http.post(f"{url}{RAG}/reports/documents", headers=auth(),
                               files=[("file", ("big.txt", body * 2, "text/plain"))])
        assert_error(over, 413, "request_too_large")  # over RAG.max_upload_bytes


async def test_rag_body_limit_keeps_the_connection_rules(start_gateway: StartGateway,
                                                         nursery: trio.Nursery) -> None:
    running = await start_gateway(ENABLE_RAG=True, server={"unready_delay_s": 0,
                                                           "max_body_bytes": 4096},
                                  RAG={"max_upload_bytes": 100_000})
    connect = connector(running, nursery)
    # over the RAG limit, the body still arriving: 413, then the connection is closed or
    # answers the next request, never hangs
    conn: Conn = await connect()
    big = 1024 * 1024
    await conn.send(head("POST", f"{RAG}/docs/documents", ADMIN_KEY, big, conn.host))
    async with trio.open_nursery() as sending:
        async def send_quietly() -> None:
            try:
                await conn.send(b"x" * big)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        sending.start_soon(send_quietly)
        answer = await conn.response()
    assert answer.status == 413 and answer.error()["code"] == "request_too_large"
    assert await conn.next_request_answered_or_closed() in ("answered", "closed")
    # under the RAG limit but over SERVER.max_body_bytes: read whole, answered, connection kept
    conn = await connect()
    body = json.dumps({"documents": [{"text": "word " * 4000}]}).encode()
    await conn.send(head("POST", f"{RAG}/docs/documents", ADMIN_KEY, len(body), conn.host)
                    + body)
    answer = await conn.response()
    assert answer.status == 404 and answer.error()["code"] == "collection_not_found"
    assert answer.headers.get("connection") != "close"
    assert await conn.next_request_answered_or_closed() == "answered"
    # the same size anywhere else: 413
    conn = await connect()
    await conn.send(head("POST", "/admin/keys", ADMIN_KEY, len(body), conn.host) + body)
    assert (await conn.response()).status == 413


async def test_job_lifecycle_and_permissions(start_gateway: StartGateway,
                                             http: httpx.AsyncClient) -> None:
    url = (await start_gateway(ENABLE_RAG=True)).http_url
    granted = await new_key(http, url, rag_collections=["docs"])
    reader = await new_key(http, url)
    assert (await create_collection(http, url, "docs", key=granted)).status_code == 201
    files = [("file", (f"{name}.md", f"# {name}\n\nThe {name} fact is {n}.".encode()))
             for n, name in enumerate(["alpha", "beta", "gamma"])]
    accepted = await http.post(f"{url}{RAG}/docs/documents", params={"async": "true"},
                               headers=auth(granted), files=files,
                               data={"id": ["a:alpha.md", "b:beta.md", "c:gamma.md"]})
    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    assert set(job) == {"object", "id", "status", "collection", "documents_total",
                        "documents_done", "chunks_done", "error", "created_at", "updated_at"}
    assert (job["object"], job["collection"], job["documents_total"]) == \
        ("rag.ingest_job", "docs", 3)
    assert job["status"] in ("queued", "running") and is_job_id(job["id"])
    assert accepted.headers["location"] == f"/v1/rag/jobs/{job['id']}"
    done = await wait_for(http, url, job["id"], granted)
    assert (done["status"], done["documents_done"], done["chunks_done"]) == ("succeeded", 3, 3)
    assert done["updated_at"] >= done["created_at"]
    assert (await wait_for(http, url, job["id"]))["status"] == "succeeded"  # the admin key
    assert_error(await http.get(f"{url}/v1/rag/jobs/{job['id']}", headers=auth(reader)), 403,
                 "collection_not_allowed")
    assert_error(await http.get(f"{url}/v1/rag/jobs/{new_job_id()}", headers=auth()), 404,
                 "job_not_found")
    assert_error(await http.get(f"{url}/v1/rag/jobs/nope", headers=auth()), 404,
                 "job_not_found")
    listed = (await http.get(f"{url}{RAG}/docs/documents", headers=auth())).json()
    assert [d["id"] for d in listed["data"]] == ["a:alpha.md", "b:beta.md", "c:gamma.md"]
    found = (await query(http, url, "docs", "what is the beta fact?", key=reader)).json()
    assert found["data"][0]["document_id"] == "b:beta.md"
    # small and not asked: synchronous as before; unknown collection: 404 before any job
    sync = await http.post(f"{url}{RAG}/docs/documents", headers=auth(granted),
                           json={"documents": [{"text": "Plain."}]})
    assert sync.status_code == 201
    assert_error(await http.post(f"{url}{RAG}/nope/documents", params={"async": "true"},
                                 headers=auth(), json={"documents": [{"text": "x"}]}), 404,
                 "collection_not_found")
    assert_error(await http.post(f"{url}{RAG}/docs/documents", params={"async": "maybe"},
                                 headers=auth(), json={"documents": [{"text": "x"}]}), 400,
                 param="async")
    assert_error(await http.post(f"{url}{RAG}/docs/documents", headers=auth(), files=files,
                                 data={"id": ["only-one"]}), 400, param="id")


async def test_a_bad_file_is_refused_before_any_job(start_gateway: StartGateway,
                                               http: httpx.AsyncClient) -> None:
    """Extraction happens before the job is made: a file that is not text is a 400 at once."""
    url = (await start_gateway(ENABLE_RAG=True)).http_url
    await create_collection(http, url, "docs")
    bad = await http.post(f"{url}{RAG}/docs/documents", params={"async": "true"},
                          headers=auth(), files=[("file", ("x.txt", b"\x00\x01binary"))])
    assert_error(bad, 400, param="file")


async def test_queue_full_is_refused(start_gateway: StartGateway,
                                     http: httpx.AsyncClient) -> None:
    url = (await start_gateway(ENABLE_RAG=True, RAG={"chunk_chars": 200, "chunk_overlap": 20,
                                                     "job_workers": 1, "job_queue": 0})).http_url
    await create_collection(http, url, "docs")
    slow = corpus_text(150_000, "owl")  # ~750 chunks: longer than the next request
    first = await http.post(f"{url}{RAG}/docs/documents", params={"async": "true"},
                            headers=auth(), files=[("file", ("slow.txt", slow))], timeout=60)
    assert first.status_code == 202, first.text
    refused = await http.post(f"{url}{RAG}/docs/documents", params={"async": "true"},
                              headers=auth(), json={"documents": [{"text": "More."}]})
    assert_error(refused, 429, "ingest_queue_full")
    assert int(refused.headers["retry-after"]) > 0
    async with httpx.AsyncClient(timeout=60) as slow_http:
        assert (await wait_for(slow_http, url, first.json()["id"]))["status"] == "succeeded"
    again = await http.post(f"{url}{RAG}/docs/documents", params={"async": "true"},
                            headers=auth(), json={"documents": [{"text": "More."}]})
    assert again.status_code == 202  # the slot is free again


async def test_the_bytes_held_by_queued_jobs_are_bounded(start_gateway: StartGateway,
                                                         http: httpx.AsyncClient) -> None:
    """Room for 8 jobs, but not for the text of these two at once (RAG.job_queue_bytes)."""
    url = (await start_gateway(ENABLE_RAG=True, RAG={
        "chunk_chars": 200, "chunk_overlap": 20, "job_workers": 1, "job_queue": 8,
        "job_queue_bytes": 1 << 20})).http_url
    await create_collection(http, url, "docs")
    slow = corpus_text(600_000, "owl")  # ~3000 chunks: longer than the next requests
    first = await http.post(f"{url}{RAG}/docs/documents", params={"async": "true"},
                            headers=auth(), files=[("file", ("slow.txt", slow))], timeout=60)
    assert first.status_code == 202, first.text
    small = await http.post(f"{url}{RAG}/docs/documents", params={"async": "true"},
                            headers=auth(), json={"documents": [{"text": "More."}]})
    assert small.status_code == 202  # it fits beside the first
    large = {"documents": [{"id": "big", "text": corpus_text(500_000, "elk").decode()}]}
    refused = await http.post(f"{url}{RAG}/docs/documents", params={"async": "true"},
                              headers=auth(), json=large)
    assert_error(refused, 429, "ingest_queue_full")
    assert "RAG.job_queue_bytes" in refused.json()["error"]["message"]
    assert int(refused.headers["retry-after"]) > 0
    async with httpx.AsyncClient(timeout=60) as slow_http:
        for job in (first, small):
            assert (await wait_for(slow_http, url, job.json()["id"]))["status"] == "succeeded"
    again = await http.post(f"{url}{RAG}/docs/documents", params={"async": "true"},
                            headers=auth(), json=large)
    assert again.status_code == 202  # the bytes are free again


def test_a_job_not_updated_reads_as_interrupted() -> None:
    job = IngestJob("job_" + "0" * 24, "docs", "running", 4, 1, 9, None, 100.0, 100.0)
    assert as_seen(job, 100.0 + STALE_S) == job
    seen = as_seen(job, 101.0 + STALE_S)
    assert seen.status == "failed" and seen.error is not None
    assert seen.error.code == "interrupted" and seen.documents_done == 1
    finished = IngestJob(job.id, "docs", "succeeded", 4, 4, 9, None, 100.0, 100.0)
    assert as_seen(finished, 10_000.0) == finished
    assert IngestJob.from_data(job.id, job.created_at, job.updated_at, job.data()) == job


async def test_job_status_lives_in_the_store(tmp_path: Path) -> None:
    """Another process reads a job from the store: after a restart the finished job is still
    there, and a job left running by a process that died reads as failed (interrupted)."""
    settings = make_settings(tmp_path, ENABLE_RAG=True)
    async with httpx.AsyncClient(timeout=30) as http:
        async with trio.open_nursery() as first_life:
            running: Running = await first_life.start(run, settings)
            url = running.http_url
            await create_collection(http, url, "docs")
            accepted = await http.post(f"{url}{RAG}/docs/documents", params={"async": "true"},
                                       headers=auth(), json={"documents": [{"text": "One."}]})
            job_id = accepted.json()["id"]
            assert (await wait_for(http, url, job_id))["status"] == "succeeded"
            running.request_shutdown()
        store = await SqliteStore.open(settings.data_dir / "ailb.db")
        stored = await store.get_rag_job(job_id)
        assert stored is not None and stored.status == "succeeded"
        dead = IngestJob(new_job_id(), "docs", "running", 5, 2, 7, None, time.time() - 600,
                         time.time() - 600)
        await store.put_rag_job(dead)
        await store.aclose()
        async with trio.open_nursery() as second_life:
            running = await second_life.start(run, settings)
            url = running.http_url
            assert (await wait_for(http, url, job_id))["status"] == "succeeded"
            gone = await wait_for(http, url, dead.id)
            assert (gone["status"], gone["documents_done"], gone["error"]["code"]) == \
                ("failed", 2, "interrupted")
            running.request_shutdown()


def ailb_rag(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AILB_")}
    environ["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    environ.update(env)
    return subprocess.run([sys.executable, "-m", "ailb", "rag", "ingest", *args], cwd=cwd,
                          env=environ, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("with_admin_key_file", [False, True])
async def test_cli_ingests_a_directory(start_gateway: StartGateway, http: httpx.AsyncClient,
                                       tmp_path: Path, with_admin_key_file: bool) -> None:
    url = (await start_gateway(ENABLE_RAG=True)).http_url
    corpus = tmp_path / "corpus"
    (corpus / "guide" / "deep").mkdir(parents=True)
    (corpus / "readme.md").write_text("# Readme\n\nThe harbor opens at six.\n")
    (corpus / "guide" / "intro.txt").write_text("The lighthouse keeper is named Ada.\n")
    (corpus / "guide" / "deep" / "faq.html").write_text(
        "<html><head><title>FAQ</title></head><body><p>Ferries leave hourly.</p></body></html>")
    (corpus / "guide" / "readme.md").write_text("# Guide readme\n\nSame name, other folder.\n")
    (corpus / "logo.png").write_bytes(b"\x89PNG\r\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if with_admin_key_file:
        (tmp_path / "admin.key").write_text(ADMIN_KEY + "\n")
        keys = ["--admin-key-file", str(tmp_path / "admin.key")]
        env = {"AILB_URL": url}
    else:
        granted = await new_key(http, url, rag_collections=["kb"])
        keys, env = [], {"AILB_API_KEY": granted}
        keys += ["--url", url]
    # a proxy from the environment never sees the key: the CLI does not use it (port 9: none)
    proxied = {**env, "HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9",
               "NO_PROXY": "", "no_proxy": ""}
    done = await trio.to_thread.run_sync(lambda: ailb_rag(
        "../corpus", "--collection", "kb", "--batch-bytes", "120", "--json", *keys,
        cwd=elsewhere, env=proxied))
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["files"], summary["ingested"], summary["failed"]) == (4, 4, [])
    assert summary["skipped"] == [str(Path("../corpus/logo.png"))] and len(summary["jobs"]) >= 2
    assert "progress: 4/4 files" in done.stderr  # not a terminal: a line per update
    assert "created collection 'kb'" in done.stderr and "logo.png" in done.stderr
    listed = (await http.get(f"{url}{RAG}/kb/documents", headers=auth())).json()
    assert sorted(d["id"] for d in listed["data"]) == [
        "guide:deep:faq.html", "guide:intro.txt", "guide:readme.md", "readme.md"]
    found = (await query(http, url, "kb", "who keeps the lighthouse?")).json()
    assert found["data"][0]["document_id"] == "guide:intro.txt"

    (corpus / "guide" / "broken.txt").write_bytes(b"\x00\x01\x02 not text")
    again = await trio.to_thread.run_sync(lambda: ailb_rag(
        str(corpus), "--collection", "kb", *keys, cwd=elsewhere, env=env))
    assert again.returncode == 1
    assert "failed files:" in again.stderr and "broken.txt" in again.stderr
    assert "ingested 4 of 5 file(s)" in again.stderr
    nothing = await trio.to_thread.run_sync(lambda: ailb_rag(
        str(corpus), "--collection", "kb", "--quiet", "--url", url, cwd=elsewhere,
        env={"AILB_API_KEY": "sk-ailb-000000000000-wrong"}))
    assert nothing.returncode == 2 and "invalid_api_key" in nothing.stderr


@pytest.mark.parametrize(("grace_s", "status", "code"), [(0.5, "failed", "shutdown"),
                                                       (60, "succeeded", None)])
async def test_shutdown_lets_a_job_finish_within_the_grace_period(
        tmp_path: Path, grace_s: float, status: str, code: str | None) -> None:
    """A job counts in the drain: it runs on for the grace period, and is failed (shutdown)
    once that is over."""
    settings = make_settings(tmp_path, ENABLE_RAG=True, server={"unready_delay_s": 0,
                                                                "grace_s": grace_s},
                             RAG={"chunk_chars": 200, "chunk_overlap": 20})
    async with httpx.AsyncClient(timeout=60) as http:
        async with trio.open_nursery() as life:
            running: Running = await life.start(run, settings)
            url = running.http_url
            await create_collection(http, url, "docs")
            accepted = await http.post(
                f"{url}{RAG}/docs/documents", params={"async": "true"}, headers=auth(),
                files=[("file", ("slow.txt", corpus_text(150_000, "owl")))])
            assert accepted.status_code == 202
            started = time.monotonic()
            running.request_shutdown()
        if grace_s < 1:
            assert time.monotonic() - started < 15  # the job did not hold the shutdown up
    store = await SqliteStore.open(settings.data_dir / "ailb.db")
    try:
        job = await store.get_rag_job(accepted.json()["id"])
    finally:
        await store.aclose()
    assert job is not None and job.status == status
    assert (job.error and job.error.code) == code
