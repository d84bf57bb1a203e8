"""ailb.providers.http's upstream calls on the wire (raw loopback server): the JSON body sent
(UTF-8, keys in order, Content-Type unless the deployment sets its own), answers parsed as
before (a number msgspec refuses included), a stream's items one per socket read, a gzip'd
stream still decoded, and cookies an upstream sets still kept by the client."""

from __future__ import annotations

import gzip
import json
from typing import Any

import trio

from ailb.config.schema import DeploymentSettings, UpstreamSettings
from ailb.errors import UpstreamStatusError
from ailb.providers import http as upstream_http
from tests.upstream_wire import CHUNKED_HEAD, Upstream, chunked, ok, response, serve


def status(code: int, body: bytes, headers: Any) -> UpstreamStatusError:
    return UpstreamStatusError("status", status=code)


def make(up: Upstream) -> Any:
    return upstream_http.make_client(DeploymentSettings("d", "openai", up.url),
                                     UpstreamSettings())


async def test_json_body_sent_and_answer_parsed(nursery: trio.Nursery) -> None:
    async def answer(stream: trio.abc.Stream, head: bytes, conn: int, number: int) -> bool:
        await stream.send_all(response(b'{"big": 1e400, "n": 12345678901234567890123}'))
        return True

    up = await serve(nursery, Upstream(answer))
    body = {"z": 1, "a": "\u00e9", "m": [1.5, None, True]}
    async with make(up) as c:
        url = upstream_http.url(f"{up.url}/v1/x")
        parsed, raw = await upstream_http.post_json(c, url, body, {}, "d", status)
        assert parsed == {"big": float("inf"), "n": 12345678901234567890123}
        assert raw.startswith(b'{"big"')
        await upstream_http.post_json(c, url, body, {"content-type": "application/x-own"}, "d",
                                      status)
    first, second = (r.partition(b"\r\n\r\n") for r in up.requests)
    assert b"content-type: application/json" in first[0].lower()
    sent = json.loads(first[2])
    assert sent == body and list(sent) == ["z", "a", "m"]
    assert second[0].lower().count(b"content-type") == 1
    assert b"content-type: application/x-own" in second[0].lower()


async def test_stream_items_per_read_and_gzip_decoded(nursery: trio.Nursery) -> None:
    step = trio.Event()
    packed = gzip.compress(b"data: 1\n\ndata: [DONE]\n\n")

    async def answer(stream: trio.abc.Stream, head: bytes, conn: int, number: int) -> bool:
        if b"/gzip" in head.partition(b"\r\n")[0]:
            await stream.send_all(CHUNKED_HEAD.replace(b"\r\n\r\n", b"\r\nContent-Encoding: "
                                                       b"gzip\r\n\r\n")
                                  + chunked(packed[:10], packed[10:]) + b"0\r\n\r\n")
            return True
        await stream.send_all(CHUNKED_HEAD + chunked(b"data: 1\n\n", b"data: 2\n\n"))
        await step.wait()
        await stream.send_all(chunked(b"data: [DONE]\n\n") + b"0\r\n\r\n")
        return True

    up = await serve(nursery, Upstream(answer))
    async with make(up) as c:
        items = []
        async for raw in upstream_http.stream_bytes(c, upstream_http.url(f"{up.url}/plain"), {},
                                                    {}, "d", status):
            items.append(raw)
            step.set()
        assert items == [b"data: 1\n\ndata: 2\n\n", b"data: [DONE]\n\n"]
        got = b"".join([raw async for raw in upstream_http.stream_bytes(
            c, f"{up.url}/gzip", {}, {}, "d", status)])
        assert got == b"data: 1\n\ndata: [DONE]\n\n"


async def test_cookies_an_upstream_sets_are_kept(nursery: trio.Nursery) -> None:
    async def answer(stream: trio.abc.Stream, head: bytes, conn: int, number: int) -> bool:
        if number == 1:
            await stream.send_all(response(b"{}", b"200 OK", b"Set-Cookie: s=1; Path=/"))
            return True
        return await ok(stream, head, conn, number)

    up = await serve(nursery, Upstream(answer))
    async with make(up) as c:
        await upstream_http.post_json(c, f"{up.url}/v1/x", {}, {}, "d", status)
        assert c.cookies.get("s") == "1"
        await c.get(f"{up.url}/next")
    assert b"cookie: s=1" in up.requests[1].lower()
