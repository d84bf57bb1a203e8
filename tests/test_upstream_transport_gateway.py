"""AILB end to end on each upstream transport (``UPSTREAM__TRANSPORT``: lean, the default, and
httpx): a JSON call and a stream go through on one reused upstream connection, and a client that
leaves mid-stream makes the upstream see its connection closed at once."""

from __future__ import annotations

import json

import httpx
import pytest
import trio

from tests.conftest import StartGateway, auth
from tests.upstream_wire import CHUNKED_HEAD, Upstream, chunked, response, serve

COMPLETION = {"id": "c1", "object": "chat.completion", "created": 1, "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


def event(delta: str | None, usage: bool = False) -> bytes:
    chunk = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
             "choices": [] if delta is None else
             [{"index": 0, "delta": {"content": delta}, "finish_reason": None}]}
    if usage:
        chunk["usage"] = COMPLETION["usage"]
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


async def openai(stream: trio.abc.Stream, head: bytes, conn: int, number: int) -> bool:
    if not head.startswith(b"POST /v1/chat/completions "):
        await stream.send_all(response(b'{"object":"list","data":[]}'))
        return True
    body = json.loads(head.partition(b"\r\n\r\n")[2])
    if not body.get("stream"):
        await stream.send_all(response(json.dumps(COMPLETION).encode()))
        return True
    await stream.send_all(CHUNKED_HEAD + chunked(event("hi"), event(" there")))
    if body["messages"][0]["content"] == "hold":
        return True  # the rest never comes: the next read sees the client leave
    await stream.send_all(chunked(event(None, usage=True), b"data: [DONE]\n\n") + b"0\r\n\r\n")
    return True


def chat(content: str, stream: bool = False) -> dict[str, object]:
    return {"model": "m", "stream": stream, "messages": [{"role": "user", "content": content}]}


@pytest.mark.parametrize("transport", ["lean", "httpx"])
async def test_gateway_on_each_upstream_transport(
    nursery: trio.Nursery, start_gateway: StartGateway, transport: str
) -> None:
    up = await serve(nursery, Upstream(openai))
    running = await start_gateway(
        deployments=[{"name": "up", "type": "openai", "base_url": f"{up.url}/v1",
                      "models": ["m"], "pool_size": 1}],
        upstream={"transport": transport})
    url = f"{running.http_url}/v1/chat/completions"
    async with httpx.AsyncClient(timeout=10) as http:
        for _ in range(2):
            answer = await http.post(url, headers=auth(), json=chat("hello"))
            assert answer.json()["choices"][0]["message"]["content"] == "hi"
            answer = await http.post(url, headers=auth(), json=chat("hello", stream=True))
            assert answer.text.count('"content"') == 2
            assert answer.text.rstrip().endswith("data: [DONE]")
        assert up.connections == 1  # pool_size 1: every call on the same connection
        async with http.stream("POST", url, headers=auth(), json=chat("hold", True)) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    break  # one event, then the client leaves
        with trio.fail_after(5):  # a guard only: the upstream sees EOF at once
            await up.until(lambda: up.eofs == 1)
        answer = await http.post(url, headers=auth(), json=chat("hello"))
        assert answer.status_code == 200
        assert up.connections == 2
