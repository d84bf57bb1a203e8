"""The fast door (``ailb.http_api.fast_door``): POST /v1/chat/completions and /v1/messages on raw
ASGI, answered like the Quart routes were, over a real socket with the official SDKs and httpx.

The edge cases of the body (413 by Content-Length and while a chunked body arrives, 408, bad
JSON) in both APIs' error shapes; other methods still answered by Quart (405); a client that
leaves mid-stream cancels the upstream call; ``x-request-id`` echoed or assigned; a body with no
length (HTTP/2) read whole; and the doors skip Quart's per-request machinery."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import httpx
import openai
import pytest
import trio

from ailb.http_api.app import create_app
from ailb.http_api.asgi_wire import ScopeHeaders
from ailb.lifecycle import Running
from ailb.metrics import Metrics
from tests.conftest import ADMIN_KEY, StartGateway, auth, in_thread
from tests.fakes.openai_upstream import FakeOpenAI, start_fake
from tests.test_connection_hygiene import HANG_S, connector, head

MAX_BODY = 4096
CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"
MSGS = [{"role": "user", "content": "hello there"}]


def _body(path: str, stream: bool = False, model: str = "echo-1") -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": MSGS, "stream": stream}
    if path == MESSAGES:
        body["max_tokens"] = 16
    return body


def _shape(path: str, answer: httpx.Response | Any, status: int) -> dict[str, Any]:
    """The error of ``answer`` in its API's shape (OpenAI for chat, Anthropic for messages)."""
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["x-request-id"]
    document: dict[str, Any] = json.loads(answer.content)
    if path == MESSAGES:
        assert document["type"] == "error" and set(document["error"]) == {"type", "message"}
        return document["error"]  # type: ignore[no-any-return]
    assert set(document["error"]) == {"message", "type", "param", "code"}
    return document["error"]  # type: ignore[no-any-return]


@pytest.fixture
async def gateway(start_gateway: StartGateway) -> Running:
    return await start_gateway(server={"unready_delay_s": 0, "max_body_bytes": MAX_BODY,
                                       "body_read_timeout_s": 0.5, "keep_alive_s": 60})


@pytest.mark.parametrize("path", [CHAT, MESSAGES])
async def test_a_content_length_over_the_limit_is_413_in_the_door_shape(
        gateway: Running, http: httpx.AsyncClient, path: str) -> None:
    body = {**_body(path), "messages": [{"role": "user", "content": "x" * MAX_BODY}]}
    answer = await http.post(f"{gateway.http_url}{path}", headers=auth(), json=body)
    error = _shape(path, answer, 413)
    assert error["type"] == ("request_too_large" if path == MESSAGES else
                             "invalid_request_error")


@pytest.mark.parametrize("path", [CHAT, MESSAGES])
async def test_a_chunked_body_over_the_limit_is_413_and_closes(
        gateway: Running, nursery: trio.Nursery, path: str) -> None:
    conn = await connector(gateway, nursery)()
    chunk = b"x" * 1000
    await conn.send(head("POST", path, ADMIN_KEY, None, conn.host)
                    + b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(5)))
    answer = await conn.response()
    assert answer.status == 413
    assert answer.headers.get("connection") == "close"
    assert answer.headers["x-request-id"]
    await conn.closed_by_server()


@pytest.mark.parametrize("path", [CHAT, MESSAGES])
async def test_a_chunked_body_within_the_limit_is_served(gateway: Running,
                                                         nursery: trio.Nursery,
                                                         path: str) -> None:
    conn = await connector(gateway, nursery)()
    data = json.dumps(_body(path)).encode()
    pieces = [data[:10], data[10:]]
    await conn.send(head("POST", path, ADMIN_KEY, None, conn.host)
                    + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n")
    answer = await conn.response()
    assert answer.status == 200, answer
    assert "hello there" in answer.body.decode()
    assert "connection" not in answer.headers  # the connection is kept
    assert await conn.next_request_answered_or_closed() == "answered"


@pytest.mark.parametrize("path", [CHAT, MESSAGES])
async def test_a_body_that_does_not_arrive_in_time_is_408(gateway: Running,
                                                          nursery: trio.Nursery,
                                                          path: str) -> None:
    conn = await connector(gateway, nursery)()
    await conn.send(head("POST", path, ADMIN_KEY, 100, conn.host) + b"{")  # and no more
    answer = await conn.response()
    assert answer.status == 408
    document = json.loads(answer.body)
    if path == MESSAGES:
        assert document["error"]["type"] == "api_error"  # Anthropic has no 408 type
    else:
        assert document["error"]["code"] == "request_timeout"
    assert answer.headers.get("connection") == "close"
    await conn.closed_by_server()


@pytest.mark.parametrize("path", [CHAT, MESSAGES])
@pytest.mark.parametrize("data", [b"{", b"[]", b""], ids=["malformed", "array", "empty"])
async def test_a_body_that_is_not_a_json_object_is_400(gateway: Running, http: httpx.AsyncClient,
                                                       path: str, data: bytes) -> None:
    answer = await http.post(f"{gateway.http_url}{path}",
                             headers={**auth(), "content-type": "application/json"},
                             content=data)
    error = _shape(path, answer, 400)
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize("path", [CHAT, MESSAGES])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "OPTIONS"])
async def test_other_methods_are_answered_by_quart(gateway: Running, http: httpx.AsyncClient,
                                                   path: str, method: str) -> None:
    answer = await http.request(method, f"{gateway.http_url}{path}", headers=auth())
    assert answer.status_code == 405
    assert answer.json()["error"]["code"] == "method_not_allowed"  # OpenAI's shape, as before
    assert answer.headers["x-request-id"]  # stamped by Quart's after_request


@pytest.mark.parametrize("path", [CHAT, MESSAGES])
@pytest.mark.parametrize("stream", [False, True])
async def test_the_request_id_is_echoed_or_assigned(gateway: Running, http: httpx.AsyncClient,
                                                    path: str, stream: bool) -> None:
    url = f"{gateway.http_url}{path}"
    given = await http.post(url, headers={**auth(), "X-Request-ID": "client-id.7"},
                            json=_body(path, stream))
    assert given.status_code == 200, given.text
    assert given.headers["x-request-id"] == "client-id.7"
    assert "client-id.7" in given.text  # the answer's id is made from it
    assigned = await http.post(url, headers={**auth(), "x-request-id": "not ok!"},
                               json=_body(path, stream))
    assert len(assigned.headers["x-request-id"]) == 32
    assert assigned.headers["x-ailb-deployment"] == "echo"
    if stream:
        assert assigned.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert assigned.headers["cache-control"] == "no-cache"
    refused = await http.post(url, headers={"x-request-id": "mine-1"}, json=_body(path))
    assert _shape(path, refused, 401) and refused.headers["x-request-id"] == "mine-1"


async def test_the_official_sdks_see_their_own_error_shapes(gateway: Running) -> None:
    chat = openai.OpenAI(base_url=f"{gateway.http_url}/v1", api_key=ADMIN_KEY, max_retries=0,
                         timeout=HANG_S)
    messages = anthropic.Anthropic(base_url=gateway.http_url, api_key=ADMIN_KEY, max_retries=0,
                                   timeout=HANG_S)

    def calls() -> list[str]:
        seen = []
        with pytest.raises(openai.NotFoundError) as missing:
            chat.chat.completions.create(model="no-such-model", messages=MSGS)  # type: ignore[arg-type]
        seen.append(str(missing.value.code))
        with pytest.raises(anthropic.BadRequestError) as bad:
            messages.messages.create(model="echo-1", max_tokens=16, messages=[
                {"role": "system", "content": "x"}])  # type: ignore[list-item]
        seen.append(bad.value.body["error"]["type"])  # type: ignore[index]
        reply = messages.messages.create(model="echo-1", max_tokens=16, messages=[
            {"role": "user", "content": "hi"}])
        seen.append(reply.content[0].text)  # type: ignore[union-attr]
        return seen

    try:
        assert await in_thread(calls) == ["model_not_found", "invalid_request_error", "hi"]
    finally:
        chat.close()
        messages.close()


async def test_a_client_leaving_a_messages_stream_cancels_the_upstream(
        nursery: trio.Nursery, start_gateway: StartGateway) -> None:
    fake = FakeOpenAI(reply="word " * 50)
    fake.chunk_delay_s = 0.2
    base = await start_fake(nursery, fake)
    running = await start_gateway(deployments=[
        {"name": "up", "type": "openai", "base_url": base, "models": ["m"]}])
    async with httpx.AsyncClient() as http, http.stream(
            "POST", f"{running.http_url}{MESSAGES}", headers=auth(),
            json={**_body(MESSAGES, True, "m")}) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("event: content_block_delta"):
                break  # one chunk, then hang up
    with trio.fail_after(2):  # 50 chunks x 0.2 s would take 10 s: this is the disconnect
        await fake.wait_disconnect()
        await fake.wait_idle()
    with trio.fail_after(HANG_S):
        while running.services.drain.in_flight:
            await trio.sleep(0.01)


def _scope(path: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {"type": "http", "asgi": {"version": "3.0"}, "http_version": "2",
            "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
            "query_string": b"", "root_path": "", "headers": headers,
            "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "extensions": {}}


async def _call(app: Any, scope: dict[str, Any], pieces: list[bytes]) -> list[dict[str, Any]]:
    """Drive ``app`` at the ASGI level: the body in ``pieces``; the messages it sent."""
    sent: list[dict[str, Any]] = []
    incoming = [{"type": "http.request", "body": p, "more_body": i < len(pieces) - 1}
                for i, p in enumerate(pieces)]

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await trio.sleep_forever()
        raise AssertionError

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    with trio.fail_after(HANG_S):
        await app(scope, receive, send)
    return sent


async def test_a_body_without_a_length_is_read_whole(start_gateway: StartGateway) -> None:
    """HTTP/2 may send a body with no Content-Length: it is read to its end all the same."""
    running = await start_gateway()
    app = create_app(running.services)
    data = json.dumps(_body(CHAT)).encode()
    sent = await _call(app, _scope(CHAT, [(b"Authorization", f"Bearer {ADMIN_KEY}".encode())]),
                       [data[:7], data[7:]])
    assert sent[0]["status"] == 200
    assert b"hello there" in sent[1]["body"]


async def test_the_doors_skip_quarts_request_machinery(start_gateway: StartGateway) -> None:
    running = await start_gateway()
    app = create_app(running.services)
    seen: list[str] = []

    async def note() -> None:
        from quart import request
        seen.append(request.path)

    app.before_request(note)
    key = [(b"authorization", f"Bearer {ADMIN_KEY}".encode())]
    for path in (CHAT, MESSAGES):
        sent = await _call(app, _scope(path, key), [json.dumps(_body(path)).encode()])
        assert sent[0]["status"] == 200
    models = await _call(app, {**_scope("/v1/models", key), "method": "GET"}, [b""])
    assert models[0]["status"] == 200
    assert seen == ["/v1/models"]


def test_scope_headers_are_case_insensitive_first_value_wins() -> None:
    headers = ScopeHeaders([(b"X-Request-ID", b"a"), (b"x-request-id", b"b"),
                            (b"x-note", "caf\u00e9".encode("latin-1"))])
    assert headers.get("x-request-id") == "a"
    assert headers.get("X-REQUEST-ID") == "a"
    assert headers.get("x-note") == "caf\u00e9"
    assert headers.get("authorization") is None


def test_request_series_are_labelled_once() -> None:
    metrics = Metrics()
    series = metrics.request_series("m", "openai")
    assert metrics.request_series("m", "openai") is series
    assert series.requests(200) is series.requests(200)
    assert series.requests(200) is not series.requests(500)
    series.requests(200).inc()
    body, _ = metrics.render(None)
    assert b'ailb_requests_total{model="m",provider="openai",status="200"} 1.0' in body
    assert b"ailb_time_to_first_token_seconds_count{" not in body  # made on first use only
    assert b"ailb_tokens_total{" not in body
