"""Two AILB instances sharing one ChromaDB server (``CHROMA_URL``): a conversation started on
one continues on the other, and a collection filled through one answers on the other. The server
is ChromaDB's own ``chroma run``, on loopback."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trio

from ailb.supervisor import Running, run
from tests.conftest import auth, free_port, make_settings

CHROMA = Path(sys.executable).parent / "chroma"


@pytest.fixture
def chroma_url(tmp_path: Path) -> Iterator[str]:
    command = str(CHROMA) if CHROMA.exists() else shutil.which("chroma")
    if command is None:
        pytest.skip("ChromaDB's `chroma` command is not installed")
    port = free_port()
    server = subprocess.Popen([command, "run", "--path", str(tmp_path / "chroma"), "--host",
                               "127.0.0.1", "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client() as http:
            for _ in range(600):
                try:
                    if http.get(f"{url}/api/v2/heartbeat", timeout=1).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if server.poll() is not None:
                    pytest.fail(f"chroma run exited with {server.returncode}")
                trio.run(trio.sleep, 0.05)
            else:
                pytest.fail("chroma run did not answer within 30 s")
        yield url
    finally:
        server.terminate()
        server.wait(timeout=10)


async def chat(http: httpx.AsyncClient, url: str, text: str, **extra: object) -> httpx.Response:
    reply = await http.post(f"{url}/v1/chat/completions", headers={
        **auth(), "x-session-id": "shared-session"}, json={
        "model": "echo-1", "messages": [{"role": "user", "content": text}], **extra})
    assert reply.status_code == 200, reply.text
    return reply


async def test_two_instances_share_memory_and_rag(chroma_url: str, tmp_path: Path) -> None:
    first = make_settings(tmp_path / "a", CHROMA_URL=chroma_url, ENABLE_RAG=True)
    second = make_settings(tmp_path / "b", CHROMA_URL=chroma_url, ENABLE_RAG=True)
    async with httpx.AsyncClient(timeout=30) as http, trio.open_nursery() as nursery:
        a: Running = await nursery.start(run, first)
        b: Running = await nursery.start(run, second)
        await chat(http, a.http_url, "The parcel goes to dock 12.")
        created = await http.post(f"{a.http_url}/v1/rag/collections", headers=auth(),
                                  json={"name": "depot"})
        assert created.status_code == 201, created.text
        added = await http.post(f"{a.http_url}/v1/rag/collections/depot/documents",
                                headers=auth(), json={"documents": [
                                    {"id": "hours", "text": "The depot opens at 6 am on "
                                                            "weekdays and closes at noon."}]})
        assert added.status_code == 201, added.text
        memory = a.services.memory
        assert memory is not None
        with trio.fail_after(10):
            while memory.writer.written < 1:
                await trio.sleep(0.01)
        # the other instance: same key (the admin key), same session, same collection
        reply = await chat(http, b.http_url, "When does the depot open on weekdays?",
                           rag={"collection": "depot"})
        assert reply.headers["x-ailb-memory"] == "recent=1, recalled=0"
        assert reply.headers["x-ailb-rag-sources"] == "hours"
        turns = (await http.get(f"{b.http_url}/v1/memory/shared-session",
                                headers=auth())).json()["turns"]
        assert turns[0]["messages"][0]["content"] == "The parcel goes to dock 12."
        a.request_shutdown()
        b.request_shutdown()
