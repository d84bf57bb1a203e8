"""A large RAG JSON body (up to ``RAG.max_upload_bytes``, 64 MiB by default) is decoded and
its text checked in a worker thread: the event loop keeps its turns meanwhile, so the gateway's
other requests are not held behind it."""

from __future__ import annotations

import json
import time

import httpx
import trio
from trio.abc import Instrument

from tests.conftest import StartGateway, auth
from tests.test_rag_api import RAG, create_collection


class LongestStep(Instrument):
    """The longest time one task ran without giving the loop back."""

    def __init__(self) -> None:
        self.started: dict[object, float] = {}
        self.longest = 0.0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.started[task] = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        began = self.started.pop(task, None)
        if began is not None:
            self.longest = max(self.longest, time.perf_counter() - began)


async def test_a_large_json_body_does_not_hold_the_event_loop(
        start_gateway: StartGateway, http: httpx.AsyncClient) -> None:
    url = (await start_gateway(ENABLE_RAG=True)).http_url
    await create_collection(http, url, "kb")
    # (on the loop: ~2.5 s for the decode, ~1.2 s for the check here; in a thread: ~0.06 s)
    # ~40 MB of many small strings (the costly kind to decode and check); a wrong ``async``
    # parameter refuses it after the decode, the extraction and the text check, before any
    # embedding
    documents = [{"id": f"d{n}", "text": "word " * 8, "metadata": {"n": n, "tag": "x" * 8}}
                 for n in range(400_000)]
    body = json.dumps({"documents": documents}).encode()
    assert len(body) > 30_000_000
    probe = LongestStep()
    trio.lowlevel.add_instrument(probe)
    try:
        answer = await http.post(f"{url}{RAG}/kb/documents?async=maybe", headers={
            **auth(), "content-type": "application/json"}, content=body,
            timeout=60)  # 40 MB sent and checked on a loaded 2-core CI machine: not 10 s
    finally:
        trio.lowlevel.remove_instrument(probe)
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "async"
    assert probe.longest < 0.5, f"the loop was held {probe.longest:.3f} s at once"
