"""A new user's path, end to end: upload a small document set, ask questions that need it, hold
a conversation sending only the newest message, restart AILB, and carry on. Driven by the
official ``openai`` SDK (and httpx for the RAG API) against a fake OpenAI upstream that records
what it was sent."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import trio

from ailb.rag.context import OPEN as CONTEXT_OPEN
from ailb.supervisor import Running, run
from tests.conftest import ADMIN_KEY, auth, in_thread, make_settings
from tests.fakes.openai_upstream import FakeOpenAI, start_fake
from tests.test_memory import deployment, upstream_messages

CORPUS = Path(__file__).parent / "data" / "rag_corpus"
QUESTIONS = [  # a question, and the file that answers it
    ("how much money do I get per day for food on a work trip", "travel_policy.md"),
    ("my starter has a layer of dark liquid on it, is it ruined?", "sourdough.txt"),
    ("what free kick does the referee give for offside", "offside_law.md"),
    ("how much notice do I need to give my landlord before moving out", "tenancy_deposits.md"),
]


async def ingest(http: httpx.AsyncClient, url: str) -> None:
    created = await http.post(f"{url}/v1/rag/collections", headers=auth(),
                              json={"name": "handbook"})
    assert created.status_code == 201, created.text
    files = [("file", (path.name, path.read_bytes(), "application/octet-stream"))
             for path in sorted(CORPUS.iterdir())]
    added = await http.post(f"{url}/v1/rag/collections/handbook/documents", headers=auth(),
                            files=files)
    assert added.status_code == 201, added.text
    assert sorted(d["id"] for d in added.json()["data"]) == sorted(p.name for p in
                                                                   CORPUS.iterdir())


def ask(client: openai.OpenAI, text: str, **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}],
        extra_headers={"x-session-id": "onboarding"}, **extra)


async def test_ingest_ask_converse_restart_and_continue(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    fake = FakeOpenAI(reply="Here is what the documents say.")
    settings = make_settings(tmp_path, deployments=[deployment(await start_fake(nursery, fake))],
                             ENABLE_RAG=True)
    async with httpx.AsyncClient(timeout=30) as http:
        async with trio.open_nursery() as first_life:
            running: Running = await first_life.start(run, settings)
            await ingest(http, running.http_url)
            client = openai.OpenAI(base_url=f"{running.http_url}/v1", api_key=ADMIN_KEY,
                                   max_retries=0, timeout=30)
            for question, source in QUESTIONS:
                raw = await in_thread(lambda q=question: ask(  # type: ignore[misc]
                    client, q, extra_body={"rag": {"collection": "handbook", "top_k": 3}}))
                assert source in raw.headers["x-ailb-rag-sources"].split(","), question
                sent = upstream_messages(fake)
                assert sent[0]["role"] == "system" and sent[0]["content"].startswith(
                    CONTEXT_OPEN)
                assert f"source: {source}" in sent[0]["content"]
                assert "rag" not in fake.requests[-1].body
            fake.reply = "Noted: your trip is to Lisbon next Tuesday."
            await in_thread(lambda: ask(client, "Please remember: my trip is to Lisbon."))
            running.request_shutdown()  # at once: queued turns are written before exit
            client.close()
        async with trio.open_nursery() as second_life:
            running = await second_life.start(run, settings)
            client = openai.OpenAI(base_url=f"{running.http_url}/v1", api_key=ADMIN_KEY,
                                   max_retries=0, timeout=30)
            fake.reply = "Your trip is to Lisbon."
            raw = await in_thread(lambda: ask(client, "Where am I travelling to?"))
            said = "\n".join(str(m["content"]) for m in upstream_messages(fake))
            assert "my trip is to Lisbon" in said  # the conversation carried over the restart
            assert raw.parse().choices[0].message.content == "Your trip is to Lisbon."
            # and the collection is still there to ask
            again = await in_thread(lambda: ask(
                client, QUESTIONS[0][0], extra_body={"rag_collection": "handbook"}))
            assert QUESTIONS[0][1] in again.headers["x-ailb-rag-sources"]
            running.request_shutdown()
            client.close()
