"""Every feature through every door: the same chat request sent through the OpenAI chat API,
the Anthropic Messages API (each plain and streamed, with the official SDKs) and gRPC
``ChatComplete`` / ``ChatStream`` (grpcio's client over a real port) reaches the upstream as
the same body, writes the same ledger row, is a cache hit on repeat, shares one session's
memory, gets retrieved context, and is held to the same key limits and budget, with AILB's
notes as HTTP headers or gRPC metadata."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import grpc
import httpx
import openai
import pytest
import trio

from ailb.grpc_api.gen.ailb.v1 import gateway_pb2 as gw
from ailb.supervisor import Running
from tests.conftest import ADMIN_KEY, StartGateway, auth, in_thread
from tests.fakes.openai_upstream import FakeOpenAI, start_fake
from tests.grpc_stubs.ailb.v1 import gateway_pb2_grpc
from tests.test_memory import UPSTREAM_KEY, chats, deployment

DOORS = ("chat", "chat-stream", "messages", "messages-stream", "grpc", "grpc-stream")
MODEL = "gpt-4o-mini"


@dataclass
class Reply:
    """What a client got: the answer's text, or the error's status; and AILB's notes."""

    text: str = ""
    status: int = 200  # HTTP status, or the HTTP status of the gRPC code
    notes: dict[str, str] | None = None


GRPC_TO_HTTP = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.UNAUTHENTICATED: 401,
                grpc.StatusCode.PERMISSION_DENIED: 403, grpc.StatusCode.NOT_FOUND: 404,
                grpc.StatusCode.RESOURCE_EXHAUSTED: 429, grpc.StatusCode.UNAVAILABLE: 503}


def _lower(headers: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in headers}


def _openai(running: Running, key: str, text: str, session: str | None, stream: bool,
            headers: dict[str, str]) -> Reply:
    client = openai.OpenAI(base_url=f"{running.http_url}/v1", api_key=key, max_retries=0,
                           timeout=15)
    extra = {**headers, **({"X-Session-ID": session} if session else {})}
    try:
        raw = client.chat.completions.with_raw_response.create(
            model=MODEL, messages=[{"role": "user", "content": text}], temperature=0,
            max_tokens=20, stream=stream, extra_headers=extra)
        notes = _lower(raw.headers.items())
        parsed = raw.parse()
        if stream:
            answer = "".join(c.choices[0].delta.content or "" for c in parsed if c.choices)
        else:
            answer = parsed.choices[0].message.content or ""
        return Reply(answer, 200, notes)
    except openai.APIStatusError as exc:
        return Reply(exc.message, exc.status_code, _lower(exc.response.headers.items()))
    finally:
        client.close()


def _anthropic(running: Running, key: str, text: str, session: str | None, stream: bool,
               headers: dict[str, str]) -> Reply:
    client = anthropic.Anthropic(base_url=running.http_url, api_key=key, max_retries=0,
                                 timeout=15)
    extra = {**headers, **({"X-Session-ID": session} if session else {})}
    try:
        raw = client.messages.with_raw_response.create(  # this SDK has no `temperature`
            model=MODEL, messages=[{"role": "user", "content": text}], max_tokens=20,
            stream=stream, extra_headers=extra, extra_body={"temperature": 0})
        notes = _lower(raw.headers.items())
        parsed = raw.parse()
        if stream:
            answer = "".join(e.delta.text for e in parsed if e.type == "content_block_delta"
                             and e.delta.type == "text_delta")
        else:
            answer = "".join(b.text for b in parsed.content if b.type == "text")
        return Reply(answer, 200, notes)
    except anthropic.APIStatusError as exc:
        return Reply(exc.message, exc.status_code, _lower(exc.response.headers.items()))
    finally:
        client.close()


def _grpc(running: Running, key: str, text: str, session: str | None, stream: bool,
          headers: dict[str, str]) -> Reply:
    request = gw.ChatRequest(model=MODEL, session_id=session or "", max_tokens=20,
                             temperature=0, messages=[gw.Message(role="user", content=text)])
    metadata = [("authorization", f"Bearer {key}"), *headers.items()]
    with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
        stub = gateway_pb2_grpc.GatewayStub(channel)
        try:
            if stream:
                call = stub.ChatStream(request, metadata=metadata, timeout=15)
                answer = ""
                for chunk in call:
                    for choice in json.loads(chunk.chunk_json).get("choices") or []:
                        answer += choice.get("delta", {}).get("content") or ""
                notes = _lower([*call.initial_metadata(), *call.trailing_metadata()])
                return Reply(answer, 200, notes)
            reply, unary = stub.ChatComplete.with_call(request, metadata=metadata, timeout=15)
            body = json.loads(reply.body_json)
            return Reply(body["choices"][0]["message"]["content"], 200,
                         _lower([*unary.initial_metadata(), *unary.trailing_metadata()]))
        except grpc.RpcError as exc:
            return Reply(exc.details() or "", GRPC_TO_HTTP.get(exc.code(), 500),
                         _lower(exc.trailing_metadata() or ()))


async def send(door: str, running: Running, text: str, key: str = ADMIN_KEY,
               session: str | None = None, headers: dict[str, str] | None = None) -> Reply:
    """One chat request through ``door`` with the official client of that door."""
    kind, _, streamed = door.partition("-")
    client: Callable[..., Reply] = {"chat": _openai, "messages": _anthropic, "grpc": _grpc}[kind]
    return await in_thread(lambda: client(running, key, text, session, streamed == "stream",
                                          headers or {}))


async def start(nursery: trio.Nursery, start_gateway: StartGateway, reply: str,
                **raw: Any) -> tuple[FakeOpenAI, Running]:
    fake = FakeOpenAI(api_key=UPSTREAM_KEY, reply=reply)
    running = await start_gateway(deployments=[deployment(await start_fake(nursery, fake))],
                                  ACCOUNTING={"ledger_flush_s": 0.01}, **raw)
    return fake, running


async def new_key(running: Running, **fields: Any) -> tuple[str, str]:
    async with httpx.AsyncClient() as http:
        created = await http.post(f"{running.http_url}/admin/keys", headers=auth(),
                                  json={"name": "door", **fields})
    assert created.status_code in (200, 201), created.text
    return created.json()["id"], created.json()["key"]


def ledger(data_dir: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(data_dir / "ailb.db") as db:
        return db.execute("SELECT key_id, model, deployment, prompt_tokens, completion_tokens, "
                          "status FROM ledger ORDER BY rowid").fetchall()


async def ledger_rows(data_dir: Path, count: int) -> list[tuple[Any, ...]]:
    with trio.fail_after(10):
        while len(rows := ledger(data_dir)) < count:
            await trio.sleep(0.02)
    return rows


def upstream_body(fake: FakeOpenAI, index: int = -1) -> dict[str, Any]:
    """What the upstream received, less how it is delivered (stream flags)."""
    body = dict(chats(fake)[index].body)
    body.pop("stream", None)
    body.pop("stream_options", None)
    return body


@pytest.mark.parametrize("door", DOORS)
async def test_one_request_one_upstream_body_one_ledger_row_and_its_notes(
        door: str, nursery: trio.Nursery, start_gateway: StartGateway, tmp_path: Path) -> None:
    fake, running = await start(nursery, start_gateway, "Paris.")
    key_id, key = await new_key(running, rpm_limit=100, monthly_budget_usd=50)
    reply = await send(door, running, "Capital of France?", key)
    assert (reply.status, reply.text) == (200, "Paris."), reply
    assert upstream_body(fake) == {
        "model": MODEL, "messages": [{"role": "user", "content": "Capital of France?"}],
        "max_tokens": 20, "temperature": 0}
    # the same row whatever the door: the fake upstream counts 6 prompt tokens, 1 completion
    assert await ledger_rows(tmp_path / "data", 1) == [(key_id, MODEL, "up", 6, 1, 200)]
    notes = reply.notes or {}
    assert notes["x-ailb-deployment"] == "up" and notes["x-ailb-model"] == f"up/{MODEL}"
    assert len(notes["x-request-id"]) >= 16
    assert notes["x-ratelimit-limit-requests"] == "100"
    assert notes["x-ratelimit-remaining-requests"] == "99"
    assert float(notes["x-ailb-budget-remaining"]) <= 50
    async with httpx.AsyncClient() as http:  # counted once, with the route's bounded label
        metrics = (await http.get(f"{running.http_url}/metrics")).text
    assert f'ailb_requests_total{{model="{MODEL}",provider="openai",status="200"}} 1.0' \
        in metrics


@pytest.mark.parametrize("door", DOORS)
async def test_a_repeated_request_is_a_cache_hit(
        door: str, nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    fake, running = await start(nursery, start_gateway, "Cached answer.",
                                CACHE={"response": True})
    first = await send(door, running, "What is cached?")
    second = await send(door, running, "What is cached?")
    assert (first.notes or {})["x-ailb-cache"] == "miss"
    assert (second.notes or {})["x-ailb-cache"] == "hit"
    assert first.text == second.text == "Cached answer." and len(chats(fake)) == 1
    assert "x-ailb-deployment" not in (second.notes or {})  # nothing was called


async def test_a_cached_answer_serves_every_door(
        nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    fake, running = await start(nursery, start_gateway, "Shared.", CACHE={"response": True})
    replies = [await send(door, running, "Same question?") for door in DOORS]
    assert [r.text for r in replies] == ["Shared."] * len(DOORS)
    assert [(r.notes or {})["x-ailb-cache"] for r in replies] == ["miss"] + ["hit"] * 5
    assert len(chats(fake)) == 1


async def test_one_session_remembers_across_every_door(
        nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    fake, running = await start(nursery, start_gateway, "Noted.")
    said: list[str] = []
    for index, door in enumerate(DOORS):
        text = f"Fact number {index} came through {door}."
        reply = await send(door, running, text, session="one-session")
        assert reply.status == 200, reply
        if index:  # every earlier turn, whatever door it came through, is replayed
            notes = reply.notes or {}
            assert notes["x-ailb-memory"].startswith(f"recent={index},"), (door, notes)
            contents = [m["content"] for m in chats(fake)[-1].body["messages"]]
            assert contents[:-1] == [c for pair in zip(said, ["Noted."] * index, strict=True)
                                     for c in pair], door
        said.append(text)
        memory = running.services.memory
        assert memory is not None
        with trio.fail_after(10):  # the turn is written before the next door asks
            while memory.writer.written < index + 1:
                await trio.sleep(0.01)


@pytest.mark.parametrize("door", DOORS)
async def test_retrieved_context_reaches_the_upstream(
        door: str, nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    fake, running = await start(nursery, start_gateway, "Use the portal.", ENABLE_RAG=True)
    async with httpx.AsyncClient() as http:
        url = f"{running.http_url}/v1/rag/collections"
        assert (await http.post(url, headers=auth(), json={"name": "kb"})).status_code == 201
        added = await http.post(f"{url}/kb/documents", headers=auth(), json={"documents": [
            {"id": "pw", "text": "To reset a password, open the self-service portal."}]})
        assert added.status_code == 201, added.text
    reply = await send(door, running, "How do I reset my password?",
                       headers={"x-ailb-rag-collection": "kb"})
    assert reply.status == 200, reply
    assert (reply.notes or {})["x-ailb-rag-sources"].startswith("pw")
    system = chats(fake)[-1].body["messages"][0]
    assert system["role"] == "system" and "self-service portal" in system["content"]


@pytest.mark.parametrize("door", DOORS)
async def test_limits_and_budgets_hold_through_every_door(
        door: str, nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    fake, running = await start(nursery, start_gateway, "Fine.")
    _, limited = await new_key(running, rpm_limit=2)
    assert [(await send(door, running, f"q{i}", limited)).status for i in range(2)] == [200] * 2
    refused = await send(door, running, "q3", limited)
    assert refused.status == 429 and "requests per minute" in refused.text
    assert int((refused.notes or {})["retry-after"]) >= 1
    _, tight = await new_key(running, tpm_limit=30)  # one request reserves 6 + 20 tokens
    assert (await send(door, running, "t1", tight)).status == 200
    refused = await send(door, running, "t2", tight)
    assert refused.status == 429 and "tokens per minute" in refused.text
    _, broke = await new_key(running, monthly_budget_usd=0.0000001)
    poor = await send(door, running, "expensive?", broke)
    assert poor.status in (402, 429) and "budget" in poor.text  # gRPC: RESOURCE_EXHAUSTED
    _, narrow = await new_key(running, allowed_models=["other-*"])
    assert (await send(door, running, "hi", narrow)).status == 403
    assert len(chats(fake)) == 3  # nothing refused reached the upstream


@pytest.mark.parametrize("door", DOORS)
async def test_a_slow_deployment_is_hedged_through_every_door(
        door: str, nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    slow = FakeOpenAI(api_key=UPSTREAM_KEY, reply="Slow.")
    slow.latency_s = slow.first_token_delay_s = 5.0
    fast = FakeOpenAI(api_key=UPSTREAM_KEY, reply="Fast.")
    running = await start_gateway(
        deployments=[{**deployment(await start_fake(nursery, slow)), "name": "slow",
                      "priority": 0},
                     {**deployment(await start_fake(nursery, fast)), "name": "fast",
                      "priority": 1}],
        aliases={MODEL: {"strategy": "failover", "targets": [f"slow/{MODEL}", f"fast/{MODEL}"]}})
    reply = await send(door, running, "Quick?", headers={"x-ailb-hedge-ms": "50"})
    assert (reply.status, reply.text) == (200, "Fast."), reply
    notes = reply.notes or {}
    assert notes["x-ailb-hedged"] == "fast" and notes["x-ailb-deployment"] == "fast"
    assert notes["x-ailb-attempts"] == "2"


@pytest.mark.parametrize("door", ["chat", "messages", "grpc", "grpc-stream"])
async def test_a_bug_of_ours_is_a_500_under_the_request_id_never_a_499(
        door: str, nursery: trio.Nursery, start_gateway: StartGateway,
        monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*args: Any) -> Any:
        raise ZeroDivisionError("a bug")

    for module in ("ailb.http_api.chat", "ailb.http_api.messages",
                   "ailb.grpc_api.gateway_service"):
        monkeypatch.setattr(f"{module}.run_chat", broken)
    _, running = await start(nursery, start_gateway, "unused")
    reply = await send(door, running, "hi")
    assert reply.status == 500 and "a bug" not in reply.text, reply
    assert (reply.notes or {})["x-request-id"]
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{running.http_url}/metrics")).text
    assert 'status="500"' in metrics and 'status="499"' not in metrics


@pytest.mark.parametrize("kind", ["unary", "stream", "stream-before-first-token"])
async def test_a_grpc_client_that_leaves_is_settled_and_released_once(
        kind: str, nursery: trio.Nursery, start_gateway: StartGateway, tmp_path: Path) -> None:
    """grpclib cancels a handler more than once when its client leaves: the frame still
    closes (status 499, one ledger row, the key's parallel slot given back)."""
    import asyncio

    from grpclib.client import Channel

    from ailb.grpc_api.gen.ailb.v1 import gateway_grpc
    from tests.test_grpc import on_asyncio

    fake = FakeOpenAI(api_key=UPSTREAM_KEY, reply="word " * 100)
    fake.chunk_delay_s = 0.05
    fake.latency_s = 5 if kind == "unary" else 0
    fake.first_token_delay_s = 5 if kind == "stream-before-first-token" else 0
    running = await start_gateway(deployments=[deployment(await start_fake(nursery, fake))],
                                  ACCOUNTING={"ledger_flush_s": 0.01})
    key_id, key = await new_key(running, max_parallel_requests=1, monthly_budget_usd=10)
    request = gw.ChatRequest(model=MODEL, messages=[gw.Message(role="user", content="hi")])

    async def leave() -> None:
        channel = Channel("127.0.0.1", running.grpc_port)
        stub = gateway_grpc.GatewayStub(channel)
        rpc = stub.ChatComplete if kind == "unary" else stub.ChatStream
        try:
            async with rpc.open(metadata={"authorization": f"Bearer {key}"}) as call:
                await call.send_message(request, end=True)
                if kind == "stream":
                    await call.recv_message()
                else:
                    await asyncio.sleep(0.3)
                await call.cancel()
        finally:
            channel.close()

    await on_asyncio(leave)
    with trio.fail_after(10):
        while running.services.drain.in_flight:
            await trio.sleep(0.02)
    [row] = await ledger_rows(tmp_path / "data", 1)
    assert row[0] == key_id and row[-1] == 499
    assert running.services.metrics.in_flight._value.get() == 0
    again = await send("grpc", running, "still usable?", key)  # the parallel slot came back
    assert again.status == 200, again


async def test_grpc_notes_come_as_initial_and_as_final_trailing_metadata(
        nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    _, running = await start(nursery, start_gateway, "Noted.")
    _, key = await new_key(running, rpm_limit=10, monthly_budget_usd=5)

    def call() -> tuple[dict[str, str], dict[str, str]]:
        request = gw.ChatRequest(model=MODEL, session_id="meta", max_tokens=20,
                                 messages=[gw.Message(role="user", content="hello")])
        with grpc.insecure_channel(f"127.0.0.1:{running.grpc_port}") as channel:
            _, unary = gateway_pb2_grpc.GatewayStub(channel).ChatComplete.with_call(
                request, metadata=[("authorization", f"Bearer {key}")], timeout=15)
            return _lower(unary.initial_metadata()), _lower(unary.trailing_metadata())

    initial, trailing = await in_thread(call)
    assert initial["x-ailb-memory"] == "recent=0, recalled=0"
    assert initial["x-ailb-deployment"] == "up" and initial["x-ratelimit-limit-requests"] == "10"
    assert trailing["x-request-id"] == initial["x-request-id"]
    # the trailers are final: the key's spend after the call was settled
    assert float(trailing["x-ailb-key-spend"]) < float(initial["x-ailb-key-spend"])
