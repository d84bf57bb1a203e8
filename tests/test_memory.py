"""Conversation memory end to end: the official ``openai`` SDK talks to AILB, which talks to a
fake OpenAI upstream that records what it received (so the tests see the injected context)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from ailb.errors import ConfigError
from ailb.memory.assemble import OPEN
from ailb.supervisor import Running, run
from tests.conftest import SDKFactory, StartGateway, auth, in_thread, make_settings
from tests.fakes.openai_upstream import FakeOpenAI, start_fake

UPSTREAM_KEY = "sk-upstream-secret-key-4242"


def deployment(base: str) -> dict[str, Any]:
    return {"name": "up", "type": "openai", "base_url": base, "api_key": UPSTREAM_KEY,
            "models": ["gpt-4o-mini"]}


def chats(fake: FakeOpenAI) -> list[Any]:
    """The chat requests the upstream received (health probes left out)."""
    return [r for r in fake.requests if r.path == "/v1/chat/completions"]


def upstream_messages(fake: FakeOpenAI, index: int = -1) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = chats(fake)[index].body["messages"]
    return messages


def said(fake: FakeOpenAI, index: int = -1) -> str:
    """Everything the upstream received in one request, as text."""
    return "\n".join(str(m.get("content")) for m in upstream_messages(fake, index))


async def ask(client: Any, text: str, session: str | None = "s1", **extra: Any) -> Any:
    headers = {"X-Session-ID": session} if session else {}
    return await in_thread(lambda: client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}],
        extra_headers=headers, **extra))


async def memory_written(running: Running, count: int) -> None:
    memory = running.services.memory
    assert memory is not None
    with trio.fail_after(10):
        while memory.writer.written < count:
            await trio.sleep(0.01)


async def test_a_session_remembers_its_turns_through_the_sdk(
        nursery: trio.Nursery, start_gateway: StartGateway, sdk: SDKFactory) -> None:
    fake = FakeOpenAI(api_key=UPSTREAM_KEY, reply="Nice to meet you, Ada.")
    running = await start_gateway(deployments=[deployment(await start_fake(nursery, fake))])
    client = sdk(running.http_url)
    await ask(client, "Hello, my name is Ada and I collect stamps.")
    assert upstream_messages(fake) == [
        {"role": "user", "content": "Hello, my name is Ada and I collect stamps."}]
    fake.reply = "You told me: Ada."
    raw = await in_thread(lambda: client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "What is my name?"}],
        extra_body={"session_id": "s1"}))  # the body field works like the header
    assert raw.headers["x-ailb-memory"] == "recent=1, recalled=0"
    assert upstream_messages(fake) == [
        {"role": "user", "content": "Hello, my name is Ada and I collect stamps."},
        {"role": "assistant", "content": "Nice to meet you, Ada."},
        {"role": "user", "content": "What is my name?"}]
    assert "session_id" not in chats(fake)[-1].body  # stripped before the upstream call
    await ask(client, "And my hobby?")
    assert [m["content"] for m in upstream_messages(fake)][-3:] == [
        "What is my name?", "You told me: Ada.", "And my hobby?"]
    # no session: no memory
    await ask(client, "Who am I?", session=None)
    assert upstream_messages(fake) == [{"role": "user", "content": "Who am I?"}]


async def test_streamed_answers_and_tool_calls_are_remembered(
        nursery: trio.Nursery, start_gateway: StartGateway, sdk: SDKFactory) -> None:
    fake = FakeOpenAI(api_key=UPSTREAM_KEY, reply="It is sunny in Paris today.")
    running = await start_gateway(deployments=[deployment(await start_fake(nursery, fake))])
    client = sdk(running.http_url)

    def stream(text: str) -> str:
        with client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": text}],
                stream=True, extra_headers={"x-session-id": "trip"}) as chunks:
            return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    assert await in_thread(lambda: stream("Weather in Paris?")) == "It is sunny in Paris today."
    tools = [{"type": "function", "function": {"name": "book", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    fake.tool_call = {"name": "book", "arguments": {"city": "Paris"}}
    answer = await in_thread(lambda: client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Book it."}], tools=tools,
        extra_headers={"x-session-id": "trip"}))
    call = answer.choices[0].message.tool_calls[0]
    fake.tool_call = None
    fake.reply = "Booked."
    await in_thread(lambda: client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "tool", "tool_call_id": call.id,
                                        "content": "confirmation 77"}],
        tools=tools, extra_headers={"x-session-id": "trip"}))
    sent = upstream_messages(fake)
    assert [m["role"] for m in sent] == ["user", "assistant", "user", "assistant", "tool"]
    assert sent[1]["content"] == "It is sunny in Paris today."  # rebuilt from the stream
    assert sent[3]["tool_calls"][0]["id"] == call.id
    assert sent[3]["tool_calls"][0]["function"] == {"name": "book",
                                                    "arguments": '{"city": "Paris"}'}
    await memory_written(running, 3)
    async with httpx.AsyncClient() as http:
        got = (await http.get(f"{running.http_url}/v1/memory/trip", headers=auth())).json()
    assert [len(t["messages"]) for t in got["turns"]] == [2, 2, 2]
    assert got["turns"][2]["messages"][0]["content"] == "confirmation 77"


async def test_older_relevant_turns_are_recalled_in_a_delimited_block(
        nursery: trio.Nursery, start_gateway: StartGateway, sdk: SDKFactory) -> None:
    fake = FakeOpenAI(api_key=UPSTREAM_KEY, reply="Noted.")
    running = await start_gateway(deployments=[deployment(await start_fake(nursery, fake))],
                                  MEMORY={"recent_tokens": 40, "relevant_min_score": 0.2})
    client = sdk(running.http_url)
    await ask(client, "My dog is a beagle called Rex and he loves carrots.")
    for filler in ("The invoice for March is attached.", "Please schedule the meeting Monday.",
                   "The printer on floor two is broken again."):
        await ask(client, filler)
    await memory_written(running, 4)
    raw = await in_thread(lambda: client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "What does my dog love?"}],
        extra_headers={"x-session-id": "s1"}))
    assert raw.headers["x-ailb-memory"].endswith("recalled=1")
    sent = upstream_messages(fake)
    assert sent[0]["role"] == "system" and sent[0]["content"].startswith(OPEN)
    assert "beagle called Rex" in sent[0]["content"]
    assert "invoice" not in sent[0]["content"]
    assert sent[-1] == {"role": "user", "content": "What does my dog love?"}


async def test_two_keys_with_the_same_session_id_never_share_memory(
        nursery: trio.Nursery, start_gateway: StartGateway, sdk: SDKFactory) -> None:
    fake = FakeOpenAI(api_key=UPSTREAM_KEY, reply="ok")
    running = await start_gateway(deployments=[deployment(await start_fake(nursery, fake))])
    async with httpx.AsyncClient() as http:
        created = (await http.post(f"{running.http_url}/admin/keys", headers=auth(),
                                   json={"name": "other"})).json()
        await ask(sdk(running.http_url), "The vault code is 1234.", session="shared")
        await ask(sdk(running.http_url, created["key"]), "What is the vault code?",
                  session="shared")
        assert "1234" not in said(fake)
        assert upstream_messages(fake) == [{"role": "user", "content": "What is the vault code?"}]
        await memory_written(running, 2)
        theirs = (await http.get(f"{running.http_url}/v1/memory/sessions",
                                 headers=auth(created["key"]))).json()["data"]
        mine = (await http.get(f"{running.http_url}/v1/memory/shared", headers=auth())).json()
        assert [t["messages"][0]["content"] for t in mine["turns"]] == ["The vault code is 1234."]
        # a virtual key cannot read another key's memory, even naming it
        other = await http.get(f"{running.http_url}/v1/memory/shared?key_id=admin",
                               headers=auth(created["key"]))
        assert other.status_code == 403 and other.json()["error"]["code"] == "admin_only"
    assert [s["id"] for s in theirs] == ["shared"]


async def test_deleting_a_session_forgets_it(
        nursery: trio.Nursery, start_gateway: StartGateway, sdk: SDKFactory) -> None:
    fake = FakeOpenAI(api_key=UPSTREAM_KEY, reply="ok")
    running = await start_gateway(deployments=[deployment(await start_fake(nursery, fake))])
    client = sdk(running.http_url)
    await ask(client, "Remember the word pineapple.", session="p")
    await ask(client, "Also remember mango.", session="q")
    url = running.http_url
    async with httpx.AsyncClient() as http:
        # deleted at once, even if the writer has not written the turn yet
        gone = await http.delete(f"{url}/v1/memory/p", headers=auth())
        assert gone.status_code == 200 and gone.json()["deleted"] is True
        assert gone.json()["turns_removed"] == 1
        missing = await http.get(f"{url}/v1/memory/p", headers=auth())
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "session_not_found"
        sessions = (await http.get(f"{url}/v1/memory/sessions", headers=auth())).json()
        assert [s["id"] for s in sessions["data"]] == ["q"]
        bad = await http.get(f"{url}/v1/memory/not%20valid", headers=auth())
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "session_id"
        unauth = await http.get(f"{url}/v1/memory/sessions")
        assert unauth.status_code == 401
    await ask(client, "What fruit?", session="p")
    assert "pineapple" not in said(fake)


async def test_retention_keeps_the_newest_turns_of_a_session(
        nursery: trio.Nursery, start_gateway: StartGateway, sdk: SDKFactory) -> None:
    fake = FakeOpenAI(api_key=UPSTREAM_KEY, reply="ok")
    running = await start_gateway(deployments=[deployment(await start_fake(nursery, fake))],
                                  MEMORY={"max_turns_per_session": 3})
    client = sdk(running.http_url)
    for n in range(5):
        await ask(client, f"message {n}")
    await memory_written(running, 5)
    async with httpx.AsyncClient() as http:
        got = (await http.get(f"{running.http_url}/v1/memory/s1", headers=auth())).json()
    assert [t["messages"][0]["content"] for t in got["turns"]] == [
        "message 2", "message 3", "message 4"]


async def test_memory_survives_a_restart_and_a_new_embedder_is_refused(
        nursery: trio.Nursery, tmp_path: Path) -> None:
    fake = FakeOpenAI(api_key=UPSTREAM_KEY, reply="Your order is 55.")
    base = await start_fake(nursery, fake)
    settings = make_settings(tmp_path, deployments=[deployment(base)])
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Order 55 please"}]}
    headers = {**auth(), "x-session-id": "shop"}
    async with httpx.AsyncClient() as http:
        async with trio.open_nursery() as first_life:
            running: Running = await first_life.start(run, settings)
            reply = await http.post(f"{running.http_url}/v1/chat/completions", json=body,
                                    headers=headers)
            assert reply.status_code == 200
            running.request_shutdown()  # at once: the writer flushes the queued turn
        async with trio.open_nursery() as second_life:
            running = await second_life.start(run, settings)
            body["messages"] = [{"role": "user", "content": "Which order?"}]
            await http.post(f"{running.http_url}/v1/chat/completions", json=body,
                            headers=headers)
            assert "Your order is 55." in said(fake)
            running.request_shutdown()
    other = make_settings(tmp_path, deployments=[deployment(base)],
                          EMBEDDINGS={"dimensions": 256})
    with pytest.raises(ConfigError) as refused:
        await nursery.start(run, other)
    assert "lexical-v1/2048" in str(refused.value) and "lexical-v1/256" in str(refused.value)


async def test_memory_off_strips_the_field_and_says_so(
        nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    fake = FakeOpenAI(api_key=UPSTREAM_KEY, reply="ok")
    running = await start_gateway(deployments=[deployment(await start_fake(nursery, fake))],
                                  ENABLE_MEMORY=False)
    async with httpx.AsyncClient() as http:
        reply = await http.post(f"{running.http_url}/v1/chat/completions", headers=auth(),
                                json={"model": "gpt-4o-mini", "session_id": "x",
                                      "messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == 200 and "x-ailb-memory" not in reply.headers
        assert "session_id" not in chats(fake)[-1].body
        off = await http.get(f"{running.http_url}/v1/memory/sessions", headers=auth())
        assert off.status_code == 404 and off.json()["error"]["code"] == "memory_disabled"
    assert running.services.memory is None


async def test_provider_embeddings_go_through_the_gateways_own_routing(
        nursery: trio.Nursery, start_gateway: StartGateway, sdk: SDKFactory) -> None:
    fake = FakeOpenAI(api_key=UPSTREAM_KEY, reply="ok")
    up = {**deployment(await start_fake(nursery, fake)),
          "models": ["gpt-4o-mini", "text-embedding-3-small"]}
    # every older turn counts as relevant: the fake's vectors carry no meaning
    running = await start_gateway(deployments=[up],
                                  MEMORY={"recent_tokens": 0, "relevant_min_score": -1},
                                  EMBEDDINGS={"embedder": "provider",
                                              "model": "text-embedding-3-small"})
    client = sdk(running.http_url)
    await ask(client, "The spare key is under the blue flowerpot.")
    await memory_written(running, 1)
    embedded = [r for r in fake.requests if r.path == "/v1/embeddings"]
    assert embedded and embedded[0].body["model"] == "text-embedding-3-small"
    assert "blue flowerpot" in embedded[0].body["input"][0]
    # the turn is recalled by a vector from the same provider model
    raw = await in_thread(lambda: client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Where is the spare key?"}],
        extra_headers={"x-session-id": "s1"}))
    queries = [r.body["input"] for r in fake.requests if r.path == "/v1/embeddings"]
    assert ["Where is the spare key?"] in queries  # the question, embedded by the provider
    assert raw.headers["x-ailb-memory"] == "recent=0, recalled=1"
    assert "blue flowerpot" in said(fake)
