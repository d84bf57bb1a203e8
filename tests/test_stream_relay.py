"""The stream relay end to end: events that arrive in one upstream read leave AILB in one write
(one HTTP chunk of its response), byte for byte as the upstream framed them, with the usage
chunk cut out unless asked for, [DONE] sent by AILB itself, and errors, cuts and the drain
handled as before.

The upstream is a raw socket server here (not the fake OpenAI app), because what matters is
exactly which bytes go in which write; the client reads AILB's chunked framing off a raw socket.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from ailb.supervisor import Running, run
from tests.conftest import ADMIN_KEY, StartGateway, make_settings
from tests.upstream_wire import read_request

USAGE = {"prompt_tokens": 9, "completion_tokens": 5, "total_tokens": 14}


def event(payload: Any, eol: bytes = b"\n") -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return b"data: " + text.encode() + eol + eol


def content(i: int, finish: str | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-b", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": f"w{i} "}, "finish_reason": finish}]}


CONTENT = b"".join(event(content(i, "stop" if i == 4 else None)) for i in range(5))
USAGE_EVENT = event({"id": "chatcmpl-b", "object": "chat.completion.chunk", "created": 1,
                     "model": "m", "choices": [], "usage": USAGE})
DONE = event("[DONE]")


@dataclass
class BurstUpstream:
    """Answers every chat request with ``writes``, each one socket write (one HTTP chunk);
    ``end=False`` closes the connection instead of ending the body; ``hold`` keeps the body
    open until AILB closes the connection."""

    writes: list[bytes]
    end: bool = True
    hold: bool = False
    served: int = 0
    closed: trio.Event = field(default_factory=trio.Event)

    async def handle(self, stream: trio.SocketStream) -> None:
        buffer = b""
        try:
            while True:
                request, buffer = await read_request(stream, buffer)
                if request is None:
                    return
                if request.startswith(b"GET"):
                    body = b'{"object":"list","data":[{"id":"m","object":"model"}]}'
                    await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-type: application/json"
                                          b"\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
                    continue
                self.served += 1
                await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                      b"transfer-encoding: chunked\r\n\r\n")
                for data in self.writes:
                    await stream.send_all(b"%x\r\n%s\r\n" % (len(data), data))
                    await trio.sleep(0.05)  # each write is its own read for AILB
                if self.hold:
                    while await stream.receive_some(65536):
                        pass
                    return
                if not self.end:
                    return  # closing without the last chunk: a cut stream
                await stream.send_all(b"0\r\n\r\n")
        finally:
            self.closed.set()
            await stream.aclose()


async def start_upstream(nursery: trio.Nursery, upstream: BurstUpstream) -> str:
    listeners = await nursery.start(partial(trio.serve_tcp, upstream.handle, 0,
                                            host="127.0.0.1"))
    return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/v1"


def deployment(base: str) -> dict[str, Any]:
    return {"name": "up", "type": "openai", "base_url": base, "models": ["m"]}


async def post_raw(url: str, path: str, body: dict[str, Any]) -> tuple[bytes, list[bytes]]:
    """POST over a raw socket; the response head and its body's HTTP chunks, one per write."""
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    request = (f"POST {path} HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {ADMIN_KEY}\r\n"
               f"content-type: application/json\r\ncontent-length: {len(payload)}\r\n"
               f"connection: close\r\n\r\n").encode() + payload
    stream = await trio.open_tcp_stream(host, int(port))
    async with stream:
        await stream.send_all(request)
        raw = b""
        while data := await stream.receive_some(65536):
            raw += data
    head, _, rest = raw.partition(b"\r\n\r\n")
    assert b"transfer-encoding: chunked" in head.lower(), head
    chunks = []
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return head, chunks
        chunks.append(rest[:size])
        rest = rest[size + 2:]


def chat(stream_options: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "m", "stream": True,
                            "messages": [{"role": "user", "content": "hi"}]}
    if stream_options is not None:
        body["stream_options"] = stream_options
    return body


@pytest.mark.parametrize("include_usage", [False, True])
async def test_one_upstream_read_leaves_in_one_write(
        nursery: trio.Nursery, start_gateway: StartGateway, include_usage: bool) -> None:
    upstream = BurstUpstream([CONTENT + USAGE_EVENT + DONE])
    running = await start_gateway(deployments=[deployment(await start_upstream(nursery,
                                                                               upstream))])
    options = {"include_usage": True} if include_usage else None
    head, chunks = await post_raw(running.http_url, "/v1/chat/completions", chat(options))
    assert b" 200 " in head.split(b"\r\n")[0]
    # the upstream's bytes as they came, in one write; the usage chunk only when asked for;
    # with AILB's own [DONE] (the upstream's ended in the same read), once the key is charged
    assert chunks == [CONTENT + (USAGE_EVENT if include_usage else b"") + DONE]


async def test_usage_chunk_alone_in_its_read_is_dropped_or_kept(
        nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    upstream = BurstUpstream([CONTENT, USAGE_EVENT, DONE])
    running = await start_gateway(deployments=[deployment(await start_upstream(nursery,
                                                                               upstream))])
    _, chunks = await post_raw(running.http_url, "/v1/chat/completions", chat())
    assert chunks == [CONTENT, DONE]
    _, chunks = await post_raw(running.http_url, "/v1/chat/completions",
                               chat({"include_usage": True}))
    assert chunks == [CONTENT, USAGE_EVENT, DONE]


async def test_crlf_framing_and_comments_are_relayed_as_they_came(
        nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    framed = (b": keep-alive\r\n\r\n" + event(content(0), b"\r\n")
              + b"data: " + json.dumps(content(1)).encode().replace(b",", b",\r\ndata: ", 1)
              + b"\r\n\r\n")
    upstream = BurstUpstream([framed, event(content(2), b"\r") + event("[DONE]", b"\r\n")])
    running = await start_gateway(deployments=[deployment(await start_upstream(nursery,
                                                                               upstream))])
    _, chunks = await post_raw(running.http_url, "/v1/chat/completions", chat())
    assert chunks == [framed, event(content(2), b"\r") + DONE]


async def test_error_event_in_a_block(nursery: trio.Nursery,
                                      start_gateway: StartGateway) -> None:
    error = event({"error": {"message": "The server is overloaded", "type": "server_error"}})
    upstream = BurstUpstream([event(content(0)) + event(content(1)) + error
                              + event(content(2))])
    running = await start_gateway(deployments=[deployment(await start_upstream(nursery,
                                                                               upstream))])
    _, chunks = await post_raw(running.http_url, "/v1/chat/completions", chat())
    # what came before, then the error event, in one write
    assert len(chunks) == 1
    before = event(content(0)) + event(content(1))
    assert chunks[0].startswith(before) and chunks[0].endswith(b"\n\n")
    sent = json.loads(chunks[0][len(before) + 6:])["error"]
    assert "overloaded" in sent["message"]


async def test_upstream_cut_mid_block_relays_only_whole_events(
        nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    half = event(content(2))[:25]
    upstream = BurstUpstream([event(content(0)) + event(content(1)) + half], end=False)
    running = await start_gateway(deployments=[deployment(await start_upstream(nursery,
                                                                               upstream))])
    _, chunks = await post_raw(running.http_url, "/v1/chat/completions", chat())
    assert chunks[0] == event(content(0)) + event(content(1))
    assert len(chunks) == 2
    assert json.loads(chunks[1][6:])["error"]["code"] == "upstream_stream_cut"


async def test_messages_door_translates_a_block_in_one_write(
        nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    upstream = BurstUpstream([CONTENT + USAGE_EVENT + DONE])
    running = await start_gateway(deployments=[deployment(await start_upstream(nursery,
                                                                               upstream))])
    _, chunks = await post_raw(running.http_url, "/v1/messages", {
        "model": "m", "max_tokens": 50, "stream": True,
        "messages": [{"role": "user", "content": "hi"}]})
    assert len(chunks) == 1  # the block's events and the end (usage, message_stop)
    names = [line[7:] for line in chunks[0].decode().split("\n") if line.startswith("event: ")]
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names.count("content_block_delta") == 5
    assert names[-2:] == ["message_delta", "message_stop"]
    assert b'"output_tokens":5' in chunks[0]


async def test_drain_cuts_a_stream_waiting_after_a_block(nursery: trio.Nursery,
                                                        tmp_path: Path) -> None:
    upstream = BurstUpstream([CONTENT], hold=True)  # then nothing: a long pause
    base = await start_upstream(nursery, upstream)
    settings = make_settings(tmp_path, server={"grace_s": 0.3, "unready_delay_s": 0},
                             deployments=[deployment(base)])
    chunks: list[bytes] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as inner:
            running: Running = await inner.start(run, settings)

            async def consume() -> None:
                chunks.extend((await post_raw(running.http_url, "/v1/chat/completions",
                                              chat()))[1])

            inner.start_soon(consume)
            while upstream.served == 0:
                await trio.sleep(0.01)
            await trio.sleep(0.2)  # the block is relayed; AILB waits on the upstream
            running.request_shutdown()
        await upstream.closed.wait()  # the upstream call was ended, not left running
    assert chunks[0] == CONTENT
    assert len(chunks) == 2
    assert json.loads(chunks[1][6:])["error"]["code"] == "server_shutting_down"
