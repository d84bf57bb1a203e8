"""The lean upstream transport (ailb/providers/transport/) against real loopback servers: body
framings, keep-alive reuse that checks only the connection handed out, a reused connection's
failure retried only where that cannot send a processed request twice, bytes after a response
never reused, every timeout and failure as httpx's exception and as AILB's error, cancellation
closing the upstream socket at once, one stream item per read, and TLS."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from ailb.config.schema import DeploymentSettings, UpstreamSettings
from ailb.errors import (
    UpstreamStatusError,
    UpstreamStreamCut,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from ailb.providers import http as upstream_http
from ailb.providers.transport import LeanTransport
from ailb.providers.transport.parse import ResponseReader
from ailb.providers.transport.transport import retryable
from tests.upstream_wire import CHUNKED_HEAD, Upstream, chunked, ok, response, serve


def client(up: Upstream, pool: int = 10, **kwargs: Any) -> httpx.AsyncClient:
    transport = kwargs.pop("transport", None) or LeanTransport(pool)
    return httpx.AsyncClient(base_url=up.url, transport=transport, **kwargs)


def lean(c: httpx.AsyncClient) -> LeanTransport:
    transport = c._transport
    assert isinstance(transport, LeanTransport)
    return transport


async def test_content_length_chunked_and_close_delimited_bodies(nursery: trio.Nursery) -> None:
    async def answer(stream: trio.abc.Stream, head: bytes, conn: int, number: int) -> bool:
        method, path = head.split(b" ")[:2]
        if method == b"HEAD":
            await stream.send_all(response()[:-5])  # announces 5 bytes, sends none
        elif path == b"/said-close":
            await stream.send_all(response(b"bye", b"200 OK", b"Connection: close"))
        elif path == b"/length":
            await stream.send_all(response(b"hello", b"200 OK", b"X-B: 2", b"x-a: 1"))
        elif path == b"/chunked":
            await stream.send_all(CHUNKED_HEAD + chunked(b"he", b"llo") + b"0\r\n\r\n")
        elif path == b"/empty":
            await stream.send_all(b"HTTP/1.1 204 No Content\r\n\r\n")
        else:  # neither length nor chunks: the body ends with the connection
            await stream.send_all(b"HTTP/1.1 200 OK\r\n\r\nhel")
            await stream.send_all(b"lo")
            return False
        return True

    up = await serve(nursery, Upstream(answer))
    async with client(up) as c:
        r = await c.get("/length")
        assert (r.status_code, r.content, r.reason_phrase) == (200, b"hello", "OK")
        assert r.headers.raw[1:3] == [(b"X-B", b"2"), (b"x-a", b"1")]  # order and case kept
        assert r.extensions["http_version"] == b"HTTP/1.1"
        assert (await c.get("/chunked")).content == b"hello"
        r = await c.get("/empty")
        assert (r.status_code, r.content) == (204, b"")
        r = await c.head("/length")
        assert (r.headers["content-length"], r.content) == ("5", b"")
        assert up.connections == 1  # all four on one connection
        assert (await c.get("/said-close")).content == b"bye"
        assert (await c.get("/length")).content == b"hello"
        assert up.connections == 2  # "Connection: close" was heeded (the server kept it open)
        assert (await c.get("/close")).content == b"hello"
        assert (await c.get("/length")).content == b"hello"
        assert up.connections == 3  # a body ended by EOF leaves nothing to reuse
    sent = up.requests[0]
    assert sent.startswith(b"GET /length HTTP/1.1\r\nHost: 127.0.0.1:")


async def test_keep_alive_reuse_checks_only_the_connection_handed_out(
    nursery: trio.Nursery
) -> None:
    arrived = trio.Event()

    async def answer(stream: trio.abc.Stream, head: bytes, conn: int, number: int) -> bool:
        if len(up.requests) < 3:
            await arrived.wait()  # hold the first three so that three connections open
        else:
            arrived.set()
        await stream.send_all(response())
        return True

    up = await serve(nursery, Upstream(answer))
    async with client(up) as c:
        async with trio.open_nursery() as inner:
            for _ in range(3):
                inner.start_soon(c.post, "/")
        assert up.connections == 3 and lean(c).pool.open_connections == 3
        peeks = lean(c).pool.peeks
        for _ in range(5):
            assert (await c.post("/v1/x", json={"a": 1})).content == b"hello"
        assert lean(c).pool.peeks - peeks == 5  # one peek per request, not one per pooled conn
        assert up.connections == 3
    head, _, body = up.requests[-1].partition(b"\r\n\r\n")
    assert body == b'{"a":1}' and b"Content-Length: 7" in head


async def test_the_pool_size_bounds_open_connections_across_origins(
    nursery: trio.Nursery
) -> None:
    a, b = await serve(nursery, Upstream()), await serve(nursery, Upstream())
    async with httpx.AsyncClient(transport=LeanTransport(1)) as c:
        await c.get(f"{a.url}/")
        await c.get(f"{b.url}/")  # the idle connection to a makes room
        await a.until(lambda: a.eofs == 1)
        assert lean(c).pool.open_connections == 1


async def test_idle_expired_connection_is_dropped_without_a_check(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    up = await serve(nursery, Upstream())
    async with client(up, transport=LeanTransport(4, keepalive_s=5.0)) as c:
        await c.get("/")
        await trio.sleep(4)
        await c.get("/")
        assert (up.connections, lean(c).pool.peeks) == (1, 1)
        await trio.sleep(6)
        await c.get("/")
        assert (up.connections, lean(c).pool.peeks) == (2, 1)  # clock alone: no peek
        await up.until(lambda: up.eofs == 1)  # and the old one was closed


async def test_closed_idle_connection_is_seen_by_the_peek(nursery: trio.Nursery) -> None:
    async def answer(stream: trio.abc.Stream, head: bytes, conn: int, number: int) -> bool:
        await stream.send_all(response())
        return False  # closes after each answer, without saying so

    up = await serve(nursery, Upstream(answer))
    async with client(up) as c:
        await c.get("/")
        await trio.testing.wait_all_tasks_blocked()  # the server has closed its end
        await c.get("/")
        assert (up.connections, len(up.requests), lean(c).pool.peeks) == (2, 2, 1)


@pytest.mark.parametrize("how", ["eof", "reset"])
async def test_reused_connection_closed_after_the_request_retries_only_idempotent_ones(
    nursery: trio.Nursery, how: str
) -> None:
    """EOF or a reset after the upstream read the request, before any byte of the answer: a
    GET (a health probe) goes once more on a fresh connection; a POST is never sent twice (the
    upstream may have generated, and billed, an answer before it died): it fails, with the error
    AILB maps, and the router's retry policy decides."""
    async def answer(stream: trio.abc.Stream, head: bytes, conn: int, number: int) -> bool:
        if number == 2:  # the second request on any connection is read, then the end
            if how == "reset":
                sock = stream.socket  # type: ignore[attr-defined]
                sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_LINGER,
                                b"\x01\x00\x00\x00\x00\x00\x00\x00")
            return False
        await stream.send_all(response(b'{"conn": %d}' % conn))
        return True

    up = await serve(nursery, Upstream(answer))
    async with client(up) as c:
        assert (await c.get("/")).content == b'{"conn": 1}'
        assert (await c.get("/")).content == b'{"conn": 2}'  # retried on a fresh connection
        assert (up.connections, len(up.requests)) == (2, 3)
        expected = httpx.RemoteProtocolError if how == "eof" else httpx.ReadError
        with pytest.raises(expected) as info:
            await c.post("/", json={})  # reused connection 2: read, then closed
        assert (up.connections, len(up.requests)) == (2, 4)  # sent once, not resent
        if how == "eof":
            assert str(info.value) == "server disconnected without sending a response"
        assert (await post(c, up)) == ({"conn": 3}, b'{"conn": 3}')
        with pytest.raises(UpstreamUnavailable):
            await post(c, up)
        assert (up.connections, len(up.requests)) == (3, 6)
        assert lean(c).pool.open_connections == 0


async def test_a_send_failing_on_a_reused_connection_is_retried(nursery: trio.Nursery) -> None:
    """The send itself fails on a reused connection (here: its sending side was shut down
    while it sat idle, which the peek cannot see; the server, which does not read any more,
    keeps its end open): the upstream took no request, so even a POST goes on a fresh
    connection."""
    async def answer(stream: trio.abc.Stream, head: bytes, conn: int, number: int) -> bool:
        await stream.send_all(response())
        await trio.sleep_forever()
        return False

    up = await serve(nursery, Upstream(answer))
    async with client(up) as c:
        await c.post("/", json={})
        [idle] = [conn for conns in lean(c).pool._idle.values() for conn in conns]
        idle.raw.shutdown(trio.socket.SHUT_WR)
        assert (await c.post("/", json={})).content == b"hello"
        assert (up.connections, len(up.requests), lean(c).pool.peeks) == (2, 2, 1)


@pytest.mark.parametrize(("method", "reused", "sent", "answered", "again"), [
    ("POST", True, False, False, True),  # the send failed: nothing taken
    ("POST", True, True, False, False),  # written whole: it may have been processed
    ("GET", True, True, False, True),  # idempotent: harmless twice
    ("HEAD", True, True, False, True),
    ("OPTIONS", True, True, False, True),
    ("GET", True, True, True, False),  # the answer had started
    ("GET", False, True, False, False),  # a fresh connection that fails: the upstream fails
    ("POST", False, False, False, False),
])
def test_when_a_request_goes_again_on_a_fresh_connection(
    method: str, reused: bool, sent: bool, answered: bool, again: bool
) -> None:
    assert retryable(method, reused=reused, sent=sent, answered=answered) is again


@pytest.mark.parametrize("after", [
    b"HTTP/1.1 503 Busy\r\nContent-Length: 10\r\n\r\n",  # a second answer, whole head
    b"HTTP/1.1 503 Bu",  # a second answer, cut
    b"junk",
])
def test_bytes_after_a_complete_response_change_nothing_and_spoil_the_connection(
    after: bytes
) -> None:
    reader = ResponseReader()
    body = reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc" + after,
                       httpx.Request("GET", "http://upstream/"))
    assert (reader.status, reader.reason, body) == (200, b"OK", b"abc")
    assert reader.headers == [(b"Content-Length", b"3")]
    assert reader.complete and not reader.keep_alive  # never back to the pool


def test_bytes_after_a_head_answer_spoil_the_connection() -> None:
    reader = ResponseReader(head_only=True)
    reader.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc",
                httpx.Request("HEAD", "http://upstream/"))
    assert (reader.status, reader.complete, reader.keep_alive) == (200, True, False)


async def test_no_retry_after_a_byte_of_the_answer_nor_on_a_fresh_connection(
    nursery: trio.Nursery
) -> None:
    async def answer(stream: trio.abc.Stream, head: bytes, conn: int, number: int) -> bool:
        if number == 2 or conn == 2:
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Le")  # then the connection dies
            return False
        await stream.send_all(response())
        return True

    up = await serve(nursery, Upstream(answer))
    async with client(up) as c:
        await c.get("/")
        with pytest.raises(httpx.RemoteProtocolError) as info:
            await c.get("/")  # reused, but the answer had started: not sent again
        assert info.value.request.url.path == "/"
        assert (up.connections, len(up.requests)) == (1, 2)
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get("/")  # a fresh connection that fails is never retried
        assert (up.connections, len(up.requests)) == (2, 3)


def deployment(up: Upstream, pool: int | None = None) -> DeploymentSettings:
    return DeploymentSettings("d", "openai", up.url, pool_size=pool)


async def post(c: httpx.AsyncClient, up: Upstream) -> Any:
    return await upstream_http.post_json(c, f"{up.url}/v1/x", {"a": 1}, {}, "d", status)


def status(code: int, body: bytes, headers: Any) -> UpstreamStatusError:
    return UpstreamStatusError("status", status=code)


async def hang(stream: trio.abc.Stream, head: bytes, conn: int, number: int) -> bool:
    await trio.sleep_forever()
    return False


async def test_timeouts_map_to_httpx_and_to_upstream_timeout(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    up = await serve(nursery, Upstream(hang))
    settings = UpstreamSettings(connect_timeout_s=2, read_timeout_s=3)
    async with upstream_http.make_client(deployment(up, pool=1), settings) as c:
        assert isinstance(c._transport, LeanTransport)  # the default
        start = trio.current_time()
        with pytest.raises(httpx.ReadTimeout) as read:
            await c.get(f"{up.url}/")
        assert trio.current_time() - start == pytest.approx(3)
        assert read.value.request.url.path == "/"
        with pytest.raises(UpstreamTimeout, match=r"\(read\)"):
            await post(c, up)
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        async with listener:  # connections complete in the kernel, and nobody ever reads
            port = listener.socket.getsockname()[1]
            start = trio.current_time()
            with pytest.raises(httpx.WriteTimeout):
                await c.post(f"http://127.0.0.1:{port}/", content=b"x" * (64 << 20))
            assert trio.current_time() - start == pytest.approx(3)


async def test_connect_timeout_and_connect_error(
    nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
) -> None:
    up = await serve(nursery, Upstream(hang))  # accepts, never answers the TLS handshake
    settings = UpstreamSettings(connect_timeout_s=2, read_timeout_s=300)
    tls_up = DeploymentSettings("d", "openai", f"https://127.0.0.1:{up.port}")
    async with upstream_http.make_client(tls_up, settings) as c:
        start = trio.current_time()
        with pytest.raises(httpx.ConnectTimeout):
            await c.get(f"https://127.0.0.1:{up.port}/")
        assert trio.current_time() - start == pytest.approx(2)
        with pytest.raises(UpstreamTimeout, match=r"\(connect\)"):
            await upstream_http.post_json(c, f"https://127.0.0.1:{up.port}/", {}, {}, "d",
                                          status)
        with trio.socket.socket() as unused:
            await unused.bind(("127.0.0.1", 0))
            port = unused.getsockname()[1]  # bound, not listening: refused
            with pytest.raises(httpx.ConnectError):
                await c.get(f"http://127.0.0.1:{port}/")
            with pytest.raises(UpstreamUnavailable):
                await upstream_http.post_json(c, f"http://127.0.0.1:{port}/", {}, {}, "d",
                                              status)


async def test_pool_timeout(nursery: trio.Nursery, autojump_clock: trio.testing.MockClock
                            ) -> None:
    async def answer(stream: trio.abc.Stream, head: bytes, conn: int, number: int) -> bool:
        await stream.send_all(CHUNKED_HEAD + chunked(b"data: 1\n\n"))
        await trio.sleep_forever()
        return False

    up = await serve(nursery, Upstream(answer))
    settings = UpstreamSettings(connect_timeout_s=2, read_timeout_s=300)
    async with upstream_http.make_client(deployment(up, pool=1), settings) as c, \
            c.stream("GET", f"{up.url}/") as busy:
        assert busy.status_code == 200
        with pytest.raises(httpx.PoolTimeout):
            await c.get(f"{up.url}/")
        with pytest.raises(UpstreamTimeout, match=r"\(connect\)"):
            await post(c, up)
        assert up.connections == 1


async def test_body_cut_is_a_protocol_error_and_a_stream_cut(nursery: trio.Nursery) -> None:
    async def answer(stream: trio.abc.Stream, head: bytes, conn: int, number: int) -> bool:
        if b"/length" in head:
            await stream.send_all(response(b"0123456789")[:-4])  # 4 bytes short
        else:
            await stream.send_all(CHUNKED_HEAD + chunked(b"data: 1\n\n"))  # no last chunk
        return False

    up = await serve(nursery, Upstream(answer))
    async with upstream_http.make_client(deployment(up), UpstreamSettings()) as c:
        with pytest.raises(httpx.RemoteProtocolError):
            await c.get(f"{up.url}/length")
        with pytest.raises(UpstreamUnavailable):  # a JSON call: nothing was relayed yet
            await upstream_http.post_json(c, f"{up.url}/length", {}, {}, "d", status)
        seen: list[bytes] = []
        with pytest.raises(UpstreamStreamCut):
            async for raw in upstream_http.stream_bytes(c, f"{up.url}/chunked", {}, {}, "d",
                                                        status):
                seen.append(raw)
        assert seen == [b"data: 1\n\n"]
        assert lean(c).pool.open_connections == 0


async def test_stream_yields_one_item_per_socket_read(nursery: trio.Nursery) -> None:
    step = trio.Event()

    async def answer(stream: trio.abc.Stream, head: bytes, conn: int, number: int) -> bool:
        if number > 1:
            return await ok(stream, head, conn, number)
        await stream.send_all(CHUNKED_HEAD + chunked(b"data: 1\n\n", b"data: 2\n\n"))
        await step.wait()
        await stream.send_all(chunked(b"data: 3\n\n", b"data: [DONE]\n\n") + b"0\r\n\r\n")
        return True

    up = await serve(nursery, Upstream(answer))
    async with client(up) as c, c.stream("POST", "/", json={}) as r:
        items = []
        async for raw in r.aiter_raw():
            items.append(raw)
            step.set()
        assert items == [b"data: 1\n\ndata: 2\n\n", b"data: 3\n\ndata: [DONE]\n\n"]
        assert lean(c).pool.open_connections == 1  # body whole: back in the pool
        assert (await c.get("/")).content == b"hello"
        assert up.connections == 1


async def test_cancellation_closes_the_upstream_socket_at_once(nursery: trio.Nursery) -> None:
    async def answer(stream: trio.abc.Stream, head: bytes, conn: int, number: int) -> bool:
        if b"/stream" in head:
            await stream.send_all(CHUNKED_HEAD + chunked(b"data: 1\n\n"))
        return True  # and wait for the next request, which never comes: EOF

    up = await serve(nursery, Upstream(answer))
    async with client(up) as c:
        with trio.CancelScope() as scope:  # waiting for the head
            nursery.start_soon(_cancel_when, up, 1, scope)
            await c.get("/")
        assert scope.cancelled_caught
        await up.until(lambda: up.eofs == 1)
        with trio.CancelScope() as scope:  # reading the body
            async with c.stream("GET", "/stream") as r:
                async for _ in r.aiter_raw():
                    scope.cancel()
                    await trio.sleep_forever()
        assert scope.cancelled_caught
        await up.until(lambda: up.eofs == 2)
        async with c.stream("GET", "/stream") as r:  # left early (the client went away)
            async for _ in r.aiter_raw():
                break
        await up.until(lambda: up.eofs == 3)
        assert lean(c).pool.open_connections == 0
        assert (up.connections, len(up.requests)) == (3, 3)


async def test_abort_ends_a_waiting_read_and_spares_a_pooled_connection(
        nursery: trio.Nursery) -> None:
    """The ``ailb.abort`` extension (the drain's cut, from another task): a read waiting on the
    response fails at once and the upstream sees EOF; once the body was read whole, the
    connection is the pool's and an abort leaves it alone."""
    async def answer(stream: trio.abc.Stream, head: bytes, conn: int, number: int) -> bool:
        if b"/stream" in head:
            await stream.send_all(CHUNKED_HEAD + chunked(b"data: 1\n\n"))
            return True  # the rest never comes
        return await ok(stream, head, conn, number)

    up = await serve(nursery, Upstream(answer))
    async with client(up) as c:
        async with c.stream("GET", "/stream") as r:
            abort = r.extensions["ailb.abort"]
            items = []
            with pytest.raises(httpx.ReadError):
                async for raw in r.aiter_raw():
                    items.append(raw)
                    nursery.start_soon(_call_soon, abort)
            assert items == [b"data: 1\n\n"]
        await up.until(lambda: up.eofs == 1)
        r = await c.get("/")
        assert r.content == b"hello"
        r.extensions["ailb.abort"]()  # too late: the connection is back in the pool
        assert (await c.get("/")).content == b"hello"
        assert up.connections == 2 and lean(c).pool.open_connections == 1


async def _call_soon(what: Any) -> None:
    await trio.lowlevel.checkpoint()
    what()


async def _cancel_when(up: Upstream, requests: int, scope: trio.CancelScope) -> None:
    await up.until(lambda: len(up.requests) >= requests)
    scope.cancel()


async def test_aclose_closes_every_pooled_connection(nursery: trio.Nursery) -> None:
    up = await serve(nursery, Upstream())
    async with upstream_http.make_client(deployment(up), UpstreamSettings()) as c:
        await c.get(f"{up.url}/")
    await up.until(lambda: up.eofs == 1)


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 (openssl CLI)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1", "-subj",
                    "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1", "-keyout",
                    "key.pem", "-out", "cert.pem"], cwd=tmp_path, check=True,
                   capture_output=True)
    return tmp_path / "cert.pem", tmp_path / "key.pem"


async def test_tls(nursery: trio.Nursery, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    up = await serve(nursery, Upstream(), ssl_context=server_ctx)
    url = f"https://127.0.0.1:{up.port}/"
    trusted = ssl.create_default_context(cafile=str(cert))
    async with httpx.AsyncClient(transport=LeanTransport(4, verify=trusted)) as c:
        for _ in range(3):
            assert (await c.get(url)).content == b"hello"
        assert (up.connections, lean(c).pool.peeks) == (1, 2)  # TLS connection reused
    async with upstream_http.make_client(deployment(up), UpstreamSettings()) as c:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await c.get(url)  # certifi's bundle does not trust it


async def test_tls_bytes_after_the_response_in_the_same_record_spoil_the_connection(
    nursery: trio.Nursery, certificate: tuple[Path, Path]
) -> None:
    """A second answer that came in the TLS record completing the response is in trio's
    buffers, where the kernel peek cannot see it: the parser saw it, and the connection is
    not reused (it would have answered the next request with that second answer)."""
    async def answer(stream: trio.abc.Stream, head: bytes, conn: int, number: int) -> bool:
        await stream.send_all(response(b"conn %d" % conn) + response(b"late", b"503 Busy"))
        return True

    cert, key = certificate
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    up = await serve(nursery, Upstream(answer), ssl_context=server_ctx)
    trusted = ssl.create_default_context(cafile=str(cert))
    async with httpx.AsyncClient(transport=LeanTransport(4, verify=trusted)) as c:
        for conn in (1, 2):
            r = await c.get(f"https://127.0.0.1:{up.port}/")
            assert (r.status_code, r.content) == (200, b"conn %d" % conn)
        assert (up.connections, lean(c).pool.peeks) == (2, 0)
