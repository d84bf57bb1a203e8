"""AILB in front of a fake OpenAI upstream that speaks the exact wire format, driven by the
official ``openai`` SDK and by raw HTTP where the bytes matter."""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import openai
import pytest
import trio

from tests.conftest import ADMIN_KEY, SDKFactory, StartGateway, auth, in_thread
from tests.fakes.openai_upstream import FakeOpenAI, start_fake

UPSTREAM_KEY = "sk-upstream-secret-key-4242"
MSGS = [{"role": "user", "content": "Say hello"}]


async def gateway_for(
    nursery: trio.Nursery, start_gateway: StartGateway, fake: FakeOpenAI, **raw: Any
) -> str:
    base = await start_fake(nursery, fake)
    deployment = {
        "name": "up",
        "type": "openai",
        "base_url": base,
        "api_key": UPSTREAM_KEY,
        "models": ["gpt-4o-mini"],
    }
    running = await start_gateway(
        deployments=[deployment], aliases={"fast": ["up/gpt-4o-mini"]}, **raw
    )
    return running.http_url


async def test_every_field_passes_through(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    fake = FakeOpenAI(api_key=UPSTREAM_KEY)
    url = await gateway_for(nursery, start_gateway, fake)
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    extra = {
        "tools": tools,
        "tool_choice": "auto",
        "seed": 42,
        "logprobs": True,
        "response_format": {"type": "json_object"},
        "x_vendor_knob": {"deep": [1, 2]},
        "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
    }
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{url}/v1/chat/completions",
            headers={**auth(), "x-request-id": "trace-77"},
            json={"model": "fast", **extra},
        )
    assert response.status_code == 200, response.text
    seen = fake.requests[-1]
    assert seen.body == {"model": "gpt-4o-mini", **extra}  # only the model name changed
    assert seen.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"  # never the client's key
    assert seen.headers["x-request-id"] == "trace-77"
    assert response.headers["x-ailb-model"] == "up/gpt-4o-mini"
    assert response.headers["x-ailb-provider"] == "openai"
    assert response.json()["choices"][0]["message"]["content"] == fake.reply


async def test_sdk_chat_and_streams(
    sdk: SDKFactory, nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    fake = FakeOpenAI()
    url = await gateway_for(nursery, start_gateway, fake)
    client = sdk(url)
    completion = await in_thread(
        lambda: client.chat.completions.create(model="gpt-4o-mini", messages=MSGS)
    )
    assert completion.choices[0].message.content == fake.reply
    assert completion.usage is not None and completion.usage.completion_tokens > 0

    chunks = await in_thread(
        lambda: list(
            client.chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True)
        )
    )
    assert fake.requests[-1].body["stream_options"] == {"include_usage": True}
    assert all(c.choices for c in chunks)  # the usage chunk AILB asked for is not shown
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == fake.reply

    chunks = await in_thread(
        lambda: list(
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MSGS,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].usage.completion_tokens == completion.usage.completion_tokens


async def test_stream_bytes_end_with_done(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    fake = FakeOpenAI()
    url = await gateway_for(nursery, start_gateway, fake)
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{url}/v1/chat/completions",
            headers=auth(),
            json={"model": "gpt-4o-mini", "messages": MSGS, "stream": True},
        )
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [e for e in response.text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events)
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][6:])["object"] == "chat.completion.chunk"


@pytest.mark.parametrize(
    ("status", "sdk_error"),
    [
        (400, openai.BadRequestError),
        (404, openai.NotFoundError),
        (422, openai.UnprocessableEntityError),
        (429, openai.RateLimitError),
    ],
)
async def test_upstream_4xx_keeps_status_and_message(
    sdk: SDKFactory,
    nursery: trio.Nursery,
    start_gateway: StartGateway,
    status: int,
    sdk_error: type[openai.APIStatusError],
) -> None:
    fake = FakeOpenAI()
    fake.status, fake.error_message, fake.retry_after = status, f"upstream says {status}", 7
    url = await gateway_for(nursery, start_gateway, fake)
    with pytest.raises(sdk_error) as info:
        await in_thread(
            lambda: sdk(url).chat.completions.create(model="gpt-4o-mini", messages=MSGS)
        )
    assert info.value.status_code == status
    assert info.value.message.endswith(f"upstream says {status}")
    if status == 429:
        assert info.value.response.headers["retry-after"] == "7"


@pytest.mark.parametrize("status", [401, 403])
async def test_upstream_refusing_our_credential_is_502_without_details(
    sdk: SDKFactory, nursery: trio.Nursery, start_gateway: StartGateway, status: int
) -> None:
    fake = FakeOpenAI()
    fake.status = status
    fake.error_message = "Incorrect API key provided: sk-proj-****abcd"
    url = await gateway_for(nursery, start_gateway, fake)
    with pytest.raises(openai.InternalServerError) as info:
        await in_thread(
            lambda: sdk(url).chat.completions.create(model="gpt-4o-mini", messages=MSGS)
        )
    assert info.value.status_code == 502
    assert info.value.code == "upstream_auth_error"
    assert "abcd" not in info.value.message


async def test_upstream_5xx_is_502(
    sdk: SDKFactory, nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    fake = FakeOpenAI()
    fake.status = 500
    url = await gateway_for(nursery, start_gateway, fake)
    with pytest.raises(openai.InternalServerError) as info:
        await in_thread(
            lambda: sdk(url).chat.completions.create(model="gpt-4o-mini", messages=MSGS)
        )
    assert info.value.status_code == 502


async def test_upstream_down_is_502(
    sdk: SDKFactory, nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    fake = FakeOpenAI()
    base = await start_fake(nursery, fake)
    running = await start_gateway(
        deployments=[{"name": "up", "type": "openai", "base_url": base, "models": ["m"]}]
    )
    fake.shutdown.set()  # the upstream goes away after the gateway probed it healthy
    with trio.fail_after(5):
        while True:
            try:
                async with httpx.AsyncClient() as http:
                    await http.get(f"{base}/models")
            except httpx.ConnectError:
                break
            await trio.sleep(0.05)
    assert running.services.board.routable("up")
    with pytest.raises(openai.APIStatusError) as info:
        await in_thread(
            lambda: sdk(running.http_url).chat.completions.create(model="m", messages=MSGS)
        )
    assert info.value.status_code == 502
    assert info.value.code == "upstream_unavailable"


async def test_upstream_timeouts_are_504(
    sdk: SDKFactory, nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    fake = FakeOpenAI()
    url = await gateway_for(
        nursery, start_gateway, fake, upstream={"read_timeout_s": 0.3, "first_token_timeout_s": 0.3}
    )
    fake.hang = True
    with pytest.raises(openai.APIStatusError) as info:
        await in_thread(
            lambda: sdk(url).chat.completions.create(model="gpt-4o-mini", messages=MSGS)
        )
    assert info.value.status_code == 504
    fake.hang = False
    fake.first_token_delay_s = 2
    with pytest.raises(openai.APIStatusError) as info:
        await in_thread(
            lambda: list(
                sdk(url).chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True)
            )
        )
    assert info.value.status_code == 504
    assert info.value.code == "upstream_timeout"


async def test_cut_stream_never_ends_like_a_completion(
    sdk: SDKFactory, nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    fake = FakeOpenAI()
    fake.cut_after_chunks = 2
    url = await gateway_for(nursery, start_gateway, fake)
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{url}/v1/chat/completions",
            headers=auth(),
            json={"model": "gpt-4o-mini", "messages": MSGS, "stream": True},
        )
    events = [e for e in response.text.split("\n\n") if e]
    assert "data: [DONE]" not in events
    error = json.loads(events[-1][6:])["error"]
    assert error["code"] == "upstream_stream_cut"
    with pytest.raises(openai.APIError):  # the SDK turns the error event into an exception
        await in_thread(
            lambda: list(
                sdk(url).chat.completions.create(model="gpt-4o-mini", messages=MSGS, stream=True)
            )
        )
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{url}/metrics")).text
    assert 'ailb_upstream_errors_total{deployment="up",kind="stream_cut"} 2.0' in metrics


async def test_client_disconnect_cancels_the_upstream_stream(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    fake = FakeOpenAI(reply="word " * 50)
    fake.chunk_delay_s = 0.2
    url = await gateway_for(nursery, start_gateway, fake)
    async with httpx.AsyncClient() as http:
        async with http.stream(
            "POST",
            f"{url}/v1/chat/completions",
            headers=auth(),
            json={"model": "gpt-4o-mini", "messages": MSGS, "stream": True},
        ) as response:
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    break  # one chunk, then hang up
    with trio.fail_after(2):  # 50 chunks x 0.2 s would take 10 s: this is the disconnect
        await fake.wait_disconnect()
        await fake.wait_idle()


async def test_client_disconnect_cancels_a_pending_call(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    fake = FakeOpenAI()
    fake.hang = True
    url = await gateway_for(nursery, start_gateway, fake)
    async with httpx.AsyncClient() as http, trio.open_nursery() as client:

        async def call() -> None:
            await http.post(
                f"{url}/v1/chat/completions",
                headers=auth(),
                json={"model": "gpt-4o-mini", "messages": MSGS},
            )

        client.start_soon(call)
        with trio.fail_after(5):  # the call is pending upstream...
            while not any(r.path.endswith("/chat/completions") for r in fake.requests):
                await trio.sleep(0.01)
        client.cancel_scope.cancel()  # ...when the client hangs up
    with trio.fail_after(2):
        await fake.wait_disconnect()


async def test_probes_drive_health_readiness_and_routing(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    fake = FakeOpenAI()
    fake.models_status = 500
    url = await gateway_for(
        nursery, start_gateway, fake, health={"interval_s": 0.05, "timeout_s": 1, "jitter": 0}
    )
    async with httpx.AsyncClient() as http:
        with trio.fail_after(3):
            while (await http.get(f"{url}/healthz")).json()["providers"]["up"]["state"] != \
                    "down":
                await trio.sleep(0.02)
        assert (await http.get(f"{url}/readyz")).status_code == 503
        health = (await http.get(f"{url}/healthz")).json()
        assert health["status"] == "degraded"
        assert health["providers"]["up"]["state"] == "down"
        # every candidate is down: the least-bad one is tried anyway, and the answer says so
        degraded = await http.post(
            f"{url}/v1/chat/completions",
            headers=auth(),
            json={"model": "gpt-4o-mini", "messages": MSGS},
        )
        assert degraded.status_code == 200
        assert degraded.headers["x-ailb-degraded"] == "no-healthy-deployment"
        fake.models_status = None
        with trio.fail_after(3):
            while (await http.get(f"{url}/readyz")).status_code != 200:
                await trio.sleep(0.02)
        assert (await http.get(f"{url}/healthz")).json()["status"] == "healthy"
        metrics = (await http.get(f"{url}/metrics")).text
        assert 'ailb_provider_up{deployment="up",provider="openai"} 1.0' in metrics


async def test_access_log_has_the_facts_and_no_secret(
    nursery: trio.Nursery, start_gateway: StartGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    fake = FakeOpenAI()
    url = await gateway_for(nursery, start_gateway, fake)
    async with httpx.AsyncClient() as http:
        await http.post(
            f"{url}/v1/chat/completions",
            headers={**auth(), "x-request-id": "r-1"},
            json={"model": "gpt-4o-mini", "messages": MSGS},
        )
    from ailb.logs import JSONFormatter

    lines = [JSONFormatter().format(r) for r in caplog.records]
    access = [json.loads(line) for line in lines if '"ailb.access"' in line]
    assert len(access) == 1
    entry = access[0]
    assert (entry["request_id"], entry["model"], entry["deployment"], entry["status"]) == (
        "r-1",
        "gpt-4o-mini",
        "up",
        200,
    )
    assert entry["prompt_tokens"] > 0 and entry["completion_tokens"] > 0
    assert entry["duration_ms"] >= entry["upstream_ms"] >= 0
    everything = "\n".join(lines)
    assert UPSTREAM_KEY not in everything and ADMIN_KEY not in everything
    assert "Say hello" not in everything  # no prompt text below debug... of AILB's own logs


async def test_counters_return_to_zero_after_disconnects(
    nursery: trio.Nursery, start_gateway: StartGateway
) -> None:
    """Clients that hang up at every moment of a stream's life leave nothing behind."""
    fake = FakeOpenAI(reply="word " * 10)
    fake.first_token_delay_s, fake.chunk_delay_s = 0.02, 0.01
    base = await start_fake(nursery, fake)
    running = await start_gateway(deployments=[
        {"name": "up", "type": "openai", "base_url": base, "models": ["m"]}])
    host, port = running.http_url.removeprefix("http://").split(":")
    body = json.dumps({"model": "m", "stream": True, "messages": MSGS}).encode()
    head = (f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\n"
            f"authorization: Bearer {ADMIN_KEY}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\n\r\n").encode()

    async def hang_up_after(delay: float) -> None:
        stream = await trio.open_tcp_stream(host, int(port))
        try:
            await stream.send_all(head + body)
            with trio.move_on_after(delay):
                while await stream.receive_some():
                    pass
        finally:
            await stream.aclose()

    async with trio.open_nursery() as clients:
        for i in range(60):
            clients.start_soon(hang_up_after, (i % 20) * 0.005)
    services = running.services
    with trio.fail_after(5):
        while services.drain.in_flight or any(services.router.in_flight().values()):
            await trio.sleep(0.01)
        await fake.wait_idle()
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{running.http_url}/metrics")).text
    assert "ailb_in_flight_requests 0.0" in metrics
    assert 'status="499"' in metrics  # the hang-ups were logged as such


@pytest.mark.parametrize("leave_at", ["http.response.start", "http.response.body"])
async def test_stream_released_when_client_leaves_mid_send(
    nursery: trio.Nursery, start_gateway: StartGateway, leave_at: str
) -> None:
    """Driven at the ASGI level, the client leaves while the status line or the first chunk is
    being written: the stream body must still be closed and everything released."""
    from ailb.http_api.app import create_app

    fake = FakeOpenAI()
    fake.chunks, fake.chunk_delay_s = 5, 0.05
    base = await start_fake(nursery, fake)
    running = await start_gateway(deployments=[
        {"name": "up", "type": "openai", "base_url": base, "models": ["m"]}])
    app = create_app(running.services)
    body = json.dumps({"model": "m", "stream": True, "messages": MSGS}).encode()
    gone = trio.Event()
    delivered: list[bool] = []

    async def receive() -> dict[str, Any]:
        if not delivered:
            delivered.append(True)
            return {"type": "http.request", "body": body, "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == leave_at:
            gone.set()
        await trio.sleep(0.01)  # writing to a socket is a checkpoint

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions",
             "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "",
             "headers": [(b"authorization", f"Bearer {ADMIN_KEY}".encode()),
                         (b"content-type", b"application/json"), (b"host", b"x")],
             "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2), "extensions": {}}
    with trio.fail_after(5):
        await app(scope, receive, send)
        await fake.wait_disconnect()
    services = running.services
    assert services.drain.in_flight == 0
    assert services.router.in_flight() == {"up": 0}


async def test_streams_reuse_upstream_connections(nursery: trio.Nursery,
                                                  start_gateway: StartGateway) -> None:
    """After [DONE] the rest of the body is read, so the connection goes back to the pool."""
    fake = FakeOpenAI()
    base = await start_fake(nursery, fake)
    running = await start_gateway(deployments=[
        {"name": "up", "type": "openai", "base_url": base, "models": ["m"]}])
    async with httpx.AsyncClient() as http:
        for _ in range(5):
            answer = await http.post(f"{running.http_url}/v1/chat/completions", headers=auth(),
                                     json={"model": "m", "messages": MSGS, "stream": True})
            assert answer.text.rstrip().endswith("data: [DONE]")
    chats = [r for r in fake.requests if r.path.endswith("/chat/completions")]
    assert len(chats) == 5
    assert len(fake.client_ports) <= 2  # the probe's connection, and one reused by every stream
