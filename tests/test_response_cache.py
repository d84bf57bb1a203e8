"""The exact-match response cache, and memory over gRPC's ``session_id``."""

from __future__ import annotations

import json
from typing import Any

import httpx
import trio
from grpclib.client import Channel

from ailb.grpc_api.gen.ailb.v1 import gateway_grpc
from ailb.grpc_api.gen.ailb.v1 import gateway_pb2 as gw
from tests.conftest import StartGateway, auth
from tests.fakes.openai_upstream import FakeOpenAI, start_fake
from tests.test_grpc import ADMIN, on_asyncio
from tests.test_memory import UPSTREAM_KEY, chats, deployment, upstream_messages


def body(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **extra}


async def test_deterministic_answers_are_served_from_the_cache_per_key(
        nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    fake = FakeOpenAI(api_key=UPSTREAM_KEY, reply="forty-two")
    running = await start_gateway(deployments=[deployment(await start_fake(nursery, fake))],
                                  CACHE={"response": True})
    url = f"{running.http_url}/v1/chat/completions"
    async with httpx.AsyncClient() as http:
        first = await http.post(url, headers=auth(), json=body("answer?", temperature=0))
        second = await http.post(url, headers=auth(), json=body("answer?", temperature=0,
                                                                 user="someone"))
        assert (first.headers["x-ailb-cache"], second.headers["x-ailb-cache"]) == ("miss", "hit")
        assert second.json() == first.json() and len(chats(fake)) == 1
        assert "x-ailb-deployment" not in second.headers  # no upstream was called
        # a stream of the same request is replayed from the cached answer
        streamed = await http.post(url, headers=auth(),
                                   json=body("answer?", temperature=0, stream=True))
        assert streamed.headers["x-ailb-cache"] == "hit" and len(chats(fake)) == 1
        assert "forty-two" in streamed.text and streamed.text.endswith("data: [DONE]\n\n")
        # not deterministic, or another body: the upstream answers
        await http.post(url, headers=auth(), json=body("answer?"))
        other = await http.post(url, headers=auth(), json=body("other?", seed=7))
        assert other.headers["x-ailb-cache"] == "miss" and len(chats(fake)) == 3
        # another key does not see the admin key's entry (CACHE.response_scope: key)
        created = (await http.post(f"{running.http_url}/admin/keys", headers=auth(),
                                   json={"name": "k"})).json()
        theirs = await http.post(url, headers=auth(created["key"]),
                                 json=body("answer?", temperature=0))
        assert theirs.headers["x-ailb-cache"] == "miss" and len(chats(fake)) == 4
        metrics = (await http.get(f"{running.http_url}/metrics")).text
    assert 'ailb_cache_lookups_total{cache="response",result="hit"} 2.0' in metrics
    assert 'ailb_cache_lookups_total{cache="response",result="miss"} 3.0' in metrics
    assert 'ailb_cache_entries{cache="response"} 3.0' in metrics


async def test_a_shared_cache_serves_every_key(
        nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    fake = FakeOpenAI(api_key=UPSTREAM_KEY, reply="shared")
    running = await start_gateway(deployments=[deployment(await start_fake(nursery, fake))],
                                  CACHE={"response": True, "response_scope": "shared"})
    url = f"{running.http_url}/v1/chat/completions"
    async with httpx.AsyncClient() as http:
        created = (await http.post(f"{running.http_url}/admin/keys", headers=auth(),
                                   json={"name": "k"})).json()
        await http.post(url, headers=auth(), json=body("q", temperature=0))
        again = await http.post(url, headers=auth(created["key"]), json=body("q", temperature=0))
    assert again.headers["x-ailb-cache"] == "hit" and len(chats(fake)) == 1


async def test_grpc_session_id_uses_the_same_memory(
        nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    fake = FakeOpenAI(api_key=UPSTREAM_KEY, reply="Noted: blue.")
    running = await start_gateway(deployments=[deployment(await start_fake(nursery, fake))])

    seen: dict[str, Any] = {}

    async def go() -> None:
        channel = Channel("127.0.0.1", running.grpc_port)
        stub = gateway_grpc.GatewayStub(channel)
        try:
            await stub.ChatComplete(gw.ChatRequest(
                model="gpt-4o-mini", session_id="g1",
                messages=[gw.Message(role="user", content="My favourite colour is blue.")]),
                metadata=ADMIN)
            async with stub.ChatStream.open(metadata=ADMIN) as stream:
                await stream.send_message(gw.ChatRequest(
                    model="gpt-4o-mini", session_id="g1",
                    body_json=json.dumps({"messages": [{"role": "user",
                                                        "content": "Which colour?"}]})),
                    end=True)
                await stream.recv_initial_metadata()
                seen.update(stream.initial_metadata or {})
                async for _ in stream:
                    pass
        finally:
            channel.close()

    await on_asyncio(go)
    assert seen["x-ailb-memory"] == "recent=1, recalled=0"  # as initial metadata
    assert [m["content"] for m in upstream_messages(fake)] == [
        "My favourite colour is blue.", "Noted: blue.", "Which colour?"]
    async with httpx.AsyncClient() as http:  # the HTTP API sees the gRPC session
        with trio.fail_after(10):
            while True:
                got = await http.get(f"{running.http_url}/v1/memory/g1", headers=auth())
                if got.status_code == 200 and len(got.json()["turns"]) == 2:
                    break
                await trio.sleep(0.02)


async def test_an_anthropic_body_sent_as_it_is_is_not_cached(
        nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    """``/v1/messages`` to an Anthropic deployment relays the upstream's own message (thinking
    blocks, stop sequences), which the cache's OpenAI shape would lose: no cache there; the
    same door to an OpenAI deployment is cached."""
    from tests.fakes import anthropic_upstream

    claude = anthropic_upstream.FakeAnthropic(models=["claude-x"])
    oa = FakeOpenAI(api_key=UPSTREAM_KEY, reply="cached")
    running = await start_gateway(
        deployments=[deployment(await start_fake(nursery, oa)),
                     {"name": "an", "type": "anthropic", "api_key": "k2", "models": ["claude-x"],
                      "base_url": await anthropic_upstream.start_fake(nursery, claude)}],
        CACHE={"response": True})
    url = f"{running.http_url}/v1/messages"
    async with httpx.AsyncClient() as http:
        for model in ("claude-x", "gpt-4o-mini"):
            notes = []
            for _ in range(2):
                answer = await http.post(url, headers=auth(), json={
                    "model": model, "max_tokens": 20, "temperature": 0,
                    "messages": [{"role": "user", "content": "hi"}]})
                assert answer.status_code == 200, answer.text
                notes.append(answer.headers.get("x-ailb-cache"))
            assert notes == ([None, None] if model == "claude-x" else ["miss", "hit"])
    assert len([r for r in claude.requests if r.path == "/v1/messages"]) == 2
    assert len(chats(oa)) == 1
