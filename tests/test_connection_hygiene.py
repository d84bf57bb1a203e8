"""Connection hygiene at the HTTP edge (part 4 of the hardening issue).

* A response given before the request's body arrived (401, 404, 405, 408, 413, on any route)
  drains a small remainder or closes the connection: the next request on the socket is answered
  or finds it closed, never hangs; a connection left idle after it is closed.
* The keep-alive idle timeout holds after every kind of response.
* A body that trickles in is answered 408 once ``SERVER.body_read_timeout_s`` has passed.
* Requests Hypercorn refuses itself (a header section too large, garbage) get the API's shape.
* The official SDKs make several calls on one client after such errors.

Driven on raw sockets where the timing must be ours. ``fail_after`` bounds only detect a hang;
nothing here asserts a speed.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import anthropic
import httpx
import openai
import pytest
import trio

from ailb.config.settings import load_settings
from ailb.http_api.connection import DRAIN_MAX_BYTES, expected_length, worth_draining
from ailb.lifecycle import Running
from tests.conftest import ADMIN_KEY, StartGateway, in_thread

ROOT = Path(__file__).resolve().parents[1]
HANG_S = 10  # far longer than anything here takes: reaching it means a hang
MAX_BODY = 4096
BIG = 1024 * 1024  # more than the socket buffers hold: still on its way when the answer comes


class Closed(Exception):
    """The server closed the connection (EOF or reset) before a whole response."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> dict[str, object]:
        assert self.headers.get("content-type") == "application/json", self.headers
        document = json.loads(self.body)
        assert set(document) == {"error"}
        error: dict[str, object] = document["error"]
        assert set(error) == {"message", "type", "param", "code"}, error
        return error


class Conn:
    """One keep-alive connection, read by hand."""

    def __init__(self, stream: trio.SocketStream, host: str) -> None:
        self.stream, self.host, self.buffer = stream, host, b""

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _more(self) -> None:
        try:
            chunk = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            chunk = b""
        if not chunk:
            raise Closed(self.buffer[:200])
        self.buffer += chunk

    async def _take(self, n: int) -> bytes:
        while len(self.buffer) < n:
            await self._more()
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    async def _line(self) -> bytes:
        while b"\r\n" not in self.buffer:
            await self._more()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    async def response(self) -> Answer:
        """The next whole response. Raises Closed if the server closes first."""
        with trio.fail_after(HANG_S):
            status = int((await self._line()).split()[1])
            headers: dict[str, str] = {}
            while line := await self._line():
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            if "content-length" in headers:
                return Answer(status, headers, await self._take(int(headers["content-length"])))
            body = b""
            while size := int(await self._line(), 16):  # chunked
                body += await self._take(size)
                await self._take(2)
            await self._line()
            return Answer(status, headers, body)

    async def closed_by_server(self) -> None:
        """Returns once the server has closed the connection, sending nothing more."""
        with trio.fail_after(HANG_S):
            while True:
                try:
                    await self._more()
                except Closed:
                    break
        assert self.buffer == b"", self.buffer[:200]

    async def next_request_answered_or_closed(self) -> str:
        """A second request on this connection: "answered" (200) or "closed", never a hang."""
        try:
            await self.send(f"GET /healthz HTTP/1.1\r\nHost: {self.host}\r\n\r\n".encode())
            answer = await self.response()
        except (Closed, trio.BrokenResourceError, trio.ClosedResourceError):
            return "closed"
        assert answer.status == 200, answer
        return "answered"


Connect = Callable[[], Awaitable[Conn]]


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Running:
    return await start_gateway(server={"unready_delay_s": 0, "max_body_bytes": MAX_BODY,
                                       "keep_alive_s": 60})


def connector(running: Running, nursery: trio.Nursery) -> Connect:
    where = urlsplit(running.http_url)

    async def connect() -> Conn:
        stream = await trio.open_tcp_stream(where.hostname or "127.0.0.1", where.port or 80)
        nursery.start_soon(_close_at_end, stream)
        return Conn(stream, where.netloc)

    return connect


async def _close_at_end(stream: trio.SocketStream) -> None:
    try:
        await trio.sleep_forever()
    finally:
        await trio.aclose_forcefully(stream)


def head(method: str, path: str, key: str | None, length: int | None, host: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json"]
    if key:
        lines.append(f"Authorization: Bearer {key}")
    lines.append("Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


WRONG = "sk-ailb-000000000000-wrong"
# (method, path, key, status) of answers given without reading the body, over every kind of route
EARLY = [
    ("POST", "/v1/chat/completions", WRONG, 401),
    ("POST", "/v1/embeddings", WRONG, 401),
    ("POST", "/admin/keys", WRONG, 401),
    ("POST", "/v1/rag/collections/docs/query", WRONG, 401),
    ("DELETE", "/v1/memory/session-1", WRONG, 401),
    ("POST", "/v1/messages/batches", ADMIN_KEY, 404),
    ("POST", "/no/such/route", None, 404),
    ("PUT", "/v1/chat/completions", ADMIN_KEY, 405),
    ("POST", "/healthz", None, 405),
    ("GET", "/v1/models", ADMIN_KEY, 200),  # a GET route that never reads its body
    ("GET", "/admin/keys", ADMIN_KEY, 200),
]
IDS = [f"{m} {p} {s}" for m, p, _, s in EARLY]


@pytest.mark.parametrize(("method", "path", "key", "status"), EARLY, ids=IDS)
async def test_an_answer_before_the_body_closes_the_connection(
        gateway: Running, nursery: trio.Nursery, method: str, path: str, key: str | None,
        status: int) -> None:
    """The body is sent only after the answer arrived, then a second request: the server has
    closed the connection (it did not wait for a body that might never come), and the late
    body is never taken for a request."""
    conn = await connector(gateway, nursery)()
    body = b'{"model": "echo-1", "messages": []}'
    await conn.send(head(method, path, key, len(body), conn.host))
    answer = await conn.response()
    assert answer.status == status
    assert answer.headers.get("connection") == "close"
    if status >= 400:
        answer.error()
    try:
        await conn.send(body)
    except trio.BrokenResourceError:
        pass
    assert await conn.next_request_answered_or_closed() == "closed"


@pytest.mark.parametrize(("method", "path", "key", "status"), EARLY, ids=IDS)
async def test_a_connection_left_idle_after_an_early_answer_is_closed(
        gateway: Running, nursery: trio.Nursery, method: str, path: str, key: str | None,
        status: int) -> None:
    conn = await connector(gateway, nursery)()
    await conn.send(head(method, path, key, BIG, conn.host))  # the body never comes
    assert (await conn.response()).status == status
    await conn.closed_by_server()  # well before the keep-alive timeout (60 s here)


@pytest.mark.parametrize(("method", "path", "key", "status"), [
    *EARLY,
    ("POST", "/v1/embeddings", ADMIN_KEY, 413),  # Content-Length over SERVER.max_body_bytes
    ("POST", "/admin/keys", ADMIN_KEY, 413),
    ("POST", "/v1/chat/completions", ADMIN_KEY, 413),
], ids=[*IDS, "embeddings 413", "admin 413", "chat 413"])
async def test_a_body_still_arriving_when_the_answer_comes(
        gateway: Running, nursery: trio.Nursery, method: str, path: str, key: str | None,
        status: int) -> None:
    conn = await connector(gateway, nursery)()
    await conn.send(head(method, path, key, BIG, conn.host))
    async with trio.open_nursery() as sending:
        sending.start_soon(_send_quietly, conn, b"x" * BIG)
        answer = await conn.response()
    assert answer.status == status
    assert await conn.next_request_answered_or_closed() in ("answered", "closed")


async def test_a_chunked_body_over_the_limit_is_refused_and_the_connection_closed(
        gateway: Running, nursery: trio.Nursery) -> None:
    conn = await connector(gateway, nursery)()
    await conn.send(head("POST", "/v1/chat/completions", ADMIN_KEY, None, conn.host))
    chunk = b"x" * 1000
    async with trio.open_nursery() as sending:
        sending.start_soon(_send_quietly, conn,
                           b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(1000)))
        answer = await conn.response()
    assert answer.status == 413 and answer.error()["code"] == "request_too_large"
    assert answer.headers.get("connection") == "close"
    assert await conn.next_request_answered_or_closed() == "closed"


async def _send_quietly(conn: Conn, data: bytes) -> None:
    """Send ``data``; returns once it is sent or the server closed the connection."""
    try:
        with trio.fail_after(HANG_S):  # the server neither reads nor closes: a hang
            await conn.send(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass  # the server closed the connection: expected


@pytest.mark.parametrize(("method", "path", "key", "status"), [
    *EARLY,
    ("POST", "/v1/embeddings", ADMIN_KEY, 413),  # 4100 bytes: over the limit, all sent at once
], ids=[*IDS, "embeddings 413"])
async def test_a_whole_request_answered_early_keeps_its_connection(
        gateway: Running, nursery: trio.Nursery, method: str, path: str, key: str | None,
        status: int) -> None:
    """Head and body sent together: the early answer drains the small body, the connection is
    kept, and the next request on it is answered."""
    conn = await connector(gateway, nursery)()
    body = b" " * (MAX_BODY + 4 if status == 413 else 100)
    await conn.send(head(method, path, key, len(body), conn.host) + body)
    answer = await conn.response()
    assert answer.status == status
    assert "connection" not in answer.headers
    assert await conn.next_request_answered_or_closed() == "answered"


def test_the_drain_policy() -> None:
    assert expected_length([(b"Content-Length", b"10")]) == 10
    assert expected_length([(b"transfer-encoding", b"chunked")]) is None
    assert expected_length([(b"host", b"x")]) == 0
    assert worth_draining(100, 0, 401)
    assert worth_draining(DRAIN_MAX_BYTES + 10, 10, 404)  # what is still to come counts
    assert not worth_draining(DRAIN_MAX_BYTES + 1, 0, 401)
    assert not worth_draining(None, 0, 413)  # chunked: its length is unknown
    assert not worth_draining(100, 0, 408)  # the body's time is up already


# -- the keep-alive idle timeout ---------------------------------------------------------------

def _chat(stream: bool) -> bytes:
    return json.dumps({"model": "echo-1", "stream": stream,
                       "messages": [{"role": "user", "content": "hello there"}]}).encode()


@pytest.mark.parametrize(("method", "path", "key", "body", "status"), [
    ("GET", "/healthz", None, b"", 200),
    ("POST", "/v1/chat/completions", ADMIN_KEY, _chat(False), 200),
    ("POST", "/v1/chat/completions", ADMIN_KEY, _chat(True), 200),  # an SSE stream
    ("POST", "/v1/chat/completions", WRONG, _chat(False), 401),
    ("POST", "/v1/chat/completions", ADMIN_KEY, b"{", 400),
    ("GET", "/no/such/route", None, b"", 404),
    ("POST", "/v1/chat/completions", ADMIN_KEY, b" " * (MAX_BODY + 4), 413),
    ("POST", "/admin/keys", ADMIN_KEY, b'{"name": "a"}', 201),
], ids=["healthz", "chat", "chat stream", "401", "400", "404", "413", "admin 201"])
async def test_the_keep_alive_timeout_holds_after_every_kind_of_response(
        start_gateway: StartGateway, nursery: trio.Nursery, method: str, path: str,
        key: str | None, body: bytes, status: int) -> None:
    running = await start_gateway(server={"unready_delay_s": 0, "max_body_bytes": MAX_BODY,
                                          "keep_alive_s": 1})
    conn = await connector(running, nursery)()
    for _ in range(2):  # the connection is kept between requests...
        await conn.send(head(method, path, key, len(body), conn.host) + body)
        answer = await conn.response()
        assert answer.status == status, answer
        assert "connection" not in answer.headers
    await conn.closed_by_server()  # ...and closed once idle for SERVER.keep_alive_s


# -- the body read timeout ---------------------------------------------------------------------

async def test_a_trickled_body_is_answered_408_and_others_are_served_meanwhile(
        start_gateway: StartGateway, nursery: trio.Nursery) -> None:
    running = await start_gateway(server={"unready_delay_s": 0, "body_read_timeout_s": 0.5})
    conn = await connector(running, nursery)()
    await conn.send(head("POST", "/v1/chat/completions", ADMIN_KEY, 1000, conn.host))

    async def trickle() -> None:
        for _ in range(1000):
            await _send_quietly(conn, b" ")
            await trio.sleep(0.1)

    async with trio.open_nursery() as trickling, httpx.AsyncClient(timeout=HANG_S) as other:
        trickling.start_soon(trickle)
        assert (await other.get(f"{running.http_url}/healthz")).status_code == 200
        answer = await conn.response()
        assert answer.status == 408
        assert answer.error()["code"] == "request_timeout"
        assert answer.headers.get("connection") == "close"
        await conn.closed_by_server()
        assert (await other.get(f"{running.http_url}/healthz")).status_code == 200
        trickling.cancel_scope.cancel()


def test_the_timeouts_are_configurable_by_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("AILB_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("SERVER__BODY_READ_TIMEOUT_S", "2.5")
    monkeypatch.setenv("SERVER__KEEP_ALIVE_S", "9")  # dynaconf reads the process environment
    settings = load_settings(str(ROOT / "config" / "ailb.yaml"), os.environ)
    assert settings.server.body_read_timeout_s == 2.5
    assert settings.server.keep_alive_s == 9


# -- what Hypercorn answers by itself ----------------------------------------------------------

async def test_an_oversized_header_section_gets_431_in_the_api_shape(
        gateway: Running, nursery: trio.Nursery) -> None:
    conn = await connector(gateway, nursery)()
    await conn.send(f"GET /healthz HTTP/1.1\r\nHost: {conn.host}\r\nX-Big: {'a' * 200_000}"
                    f"\r\n\r\n".encode())
    answer = await conn.response()
    assert answer.status == 431
    error = answer.error()
    assert error["code"] == "request_header_fields_too_large"
    assert error["type"] == "invalid_request_error"
    assert answer.headers.get("connection") == "close"
    await conn.closed_by_server()


async def test_a_request_that_is_not_http_gets_400_in_the_api_shape(
        gateway: Running, nursery: trio.Nursery) -> None:
    conn = await connector(gateway, nursery)()
    await conn.send(b"NOT HTTP AT ALL\r\n\r\n")
    answer = await conn.response()
    assert answer.status == 400
    assert answer.error()["code"] == "bad_http_request"
    await conn.closed_by_server()


# -- the official SDKs, several calls on one client --------------------------------------------

async def test_anthropic_sdk_calls_on_after_an_oversized_count_tokens(gateway: Running) -> None:
    client = anthropic.Anthropic(base_url=gateway.http_url, api_key=ADMIN_KEY, max_retries=0,
                                 timeout=HANG_S)
    long_message = [{"role": "user", "content": "word " * (BIG // 5)}]

    def calls() -> list[str]:
        seen = []
        for _ in range(3):
            with pytest.raises(anthropic.APIStatusError) as refused:
                client.messages.count_tokens(model="echo-1", messages=long_message)
            assert refused.value.status_code == 413
            assert client.messages.count_tokens(
                model="echo-1", messages=[{"role": "user", "content": "hi"}]).input_tokens > 0
            seen.append(",".join(model.id for model in client.models.list()))
        return seen

    try:
        assert await in_thread(calls) == ["echo-1"] * 3
    finally:
        client.close()


async def test_openai_sdk_calls_on_after_oversized_requests(gateway: Running) -> None:
    client = openai.OpenAI(base_url=f"{gateway.http_url}/v1", api_key=ADMIN_KEY, max_retries=0,
                           timeout=HANG_S)
    huge = [{"role": "user", "content": "x" * BIG}]

    def calls() -> str | None:
        for _ in range(3):
            with pytest.raises(openai.APIStatusError) as refused:
                client.chat.completions.create(model="echo-1", messages=huge)
            assert refused.value.status_code == 413
        for _ in range(3):  # a route the gateway does not have, with a big body
            with pytest.raises(openai.NotFoundError):
                client.post("/no/such/route", cast_to=httpx.Response, body={"input": "x" * BIG})
        assert [m.id for m in client.models.list()] == ["echo-1"]
        reply = client.chat.completions.create(
            model="echo-1", messages=[{"role": "user", "content": "hello"}])
        return reply.choices[0].message.content

    try:
        assert await in_thread(calls) == "hello"
    finally:
        client.close()
