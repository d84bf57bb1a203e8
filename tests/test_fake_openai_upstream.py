"""The fake OpenAI upstream speaks OpenAI's wire format: checked with raw httpx and the SDK.

The official SDK's async client is asyncio-only, so the sync client runs in a worker thread.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import openai
import pytest
import trio
import trio.testing
from openai.types.chat import (
    ChatCompletionChunk,
    ChatCompletionMessageParam,
    ChatCompletionStreamOptionsParam,
    ChatCompletionToolParam,
)

from tests.fakes.openai_upstream import FakeOpenAI, start_fake

T = TypeVar("T")
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Say hello please"},
]
PROMPT_TOKENS = 2 + 3 + 3 * 2  # words + 3 per message
REPLY_PIECES = ["Hello ", "from ", "the ", "fake ", "upstream."]
USAGE = {
    "prompt_tokens": PROMPT_TOKENS,
    "completion_tokens": 5,
    "total_tokens": PROMPT_TOKENS + 5,
    "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
    "completion_tokens_details": {
        "reasoning_tokens": 0,
        "audio_tokens": 0,
        "accepted_prediction_tokens": 0,
        "rejected_prediction_tokens": 0,
    },
}
WEATHER_TOOL: ChatCompletionToolParam = {
    "type": "function",
    "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {}}},
}


@pytest.fixture
async def upstream(nursery: trio.Nursery) -> tuple[FakeOpenAI, str]:
    app = FakeOpenAI()
    return app, await start_fake(nursery, app)


async def in_thread(base_url: str, call: Callable[[openai.OpenAI], T], key: str = "sk-x") -> T:
    """Run ``call(client)`` with a fresh sync SDK client (no retries) in a worker thread."""

    def run() -> T:
        with openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=5) as client:
            return call(client)

    return await trio.to_thread.run_sync(run)


def sse_payloads(text: str) -> list[str]:
    """Split a complete SSE body into its ``data:`` payloads, checking the framing."""
    assert text.endswith("\n\n")
    events = text[:-2].split("\n\n")
    assert all(event.startswith("data: ") and "\n" not in event for event in events)
    return [event.removeprefix("data: ") for event in events]


def chat(stream: bool = False, **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": stream, **extra}


async def test_models_list_and_models_status(upstream: tuple[FakeOpenAI, str]) -> None:
    app, url = upstream
    app.models = ["alpha", "beta"]
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.get("/models")
        assert response.status_code == 200
        assert response.json() == {
            "object": "list",
            "data": [
                {"id": "alpha", "object": "model", "created": 1_700_000_000, "owned_by": "fake"},
                {"id": "beta", "object": "model", "created": 1_700_000_000, "owned_by": "fake"},
            ],
        }
        assert await in_thread(url, lambda c: [m.id for m in c.models.list()]) == ["alpha", "beta"]
        app.models_status = 503
        response = await client.get("/models")
    assert response.status_code == 503
    assert response.json()["error"]["type"] == "server_error"
    with pytest.raises(openai.InternalServerError):
        await in_thread(url, lambda c: c.models.list())


async def test_auth_and_request_recording(upstream: tuple[FakeOpenAI, str]) -> None:
    app, url = upstream
    app.api_key = "sk-right"
    async with httpx.AsyncClient(base_url=url) as client:
        denied = await client.post("/chat/completions", json=chat())
        allowed = await client.post(
            "/chat/completions", json=chat(), headers={"Authorization": "Bearer sk-right"}
        )
    assert denied.status_code == 401
    assert denied.json() == {
        "error": {
            "message": "Incorrect API key provided.",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    assert allowed.status_code == 200
    with pytest.raises(openai.AuthenticationError):
        await in_thread(url, lambda c: c.models.list(), key="sk-wrong")
    assert [(r.method, r.path) for r in app.requests] == [
        ("POST", "/v1/chat/completions"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
    ]
    assert "authorization" not in app.requests[0].headers
    assert app.requests[1].headers["authorization"] == "Bearer sk-right"
    assert app.requests[2].headers["authorization"] == "Bearer sk-wrong"
    assert app.requests[1].body == chat()


async def test_chat_non_stream_wire(upstream: tuple[FakeOpenAI, str]) -> None:
    _, url = upstream
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/chat/completions", json=chat())
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    assert body["system_fingerprint"].startswith("fp_")
    del body["id"], body["created"], body["system_fingerprint"]
    assert body == {
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "service_tier": "default",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello from the fake upstream.",
                    "refusal": None,
                    "annotations": [],
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": USAGE,
    }


async def test_chat_non_stream_sdk(upstream: tuple[FakeOpenAI, str]) -> None:
    app, url = upstream
    app.reply = "Custom answer here"
    completion = await in_thread(
        url,
        lambda c: c.chat.completions.create(model="gpt-4o", messages=MESSAGES),
    )
    assert completion.model == "gpt-4o"
    assert completion.choices[0].message.content == "Custom answer here"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (
        PROMPT_TOKENS,
        3,
    )
    assert app.requests[-1].headers["authorization"] == "Bearer sk-x"


@pytest.mark.parametrize("include_usage", [False, True])
async def test_stream_wire(upstream: tuple[FakeOpenAI, str], include_usage: bool) -> None:
    _, url = upstream
    extra = {"stream_options": {"include_usage": True}} if include_usage else {}
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/chat/completions", json=chat(stream=True, **extra))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert len(chunks) == 1 + len(REPLY_PIECES) + 1 + include_usage
    assert len({c["id"] for c in chunks}) == 1 and chunks[0]["id"].startswith("chatcmpl-")
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["model"] for c in chunks} == {"gpt-4o-mini"}
    deltas = [c["choices"][0]["delta"] for c in chunks[: 2 + len(REPLY_PIECES)]]
    assert deltas[0] == {"role": "assistant", "content": "", "refusal": None}
    assert [d["content"] for d in deltas[1:-1]] == REPLY_PIECES
    assert deltas[-1] == {}
    reasons = [c["choices"][0]["finish_reason"] for c in chunks[: 2 + len(REPLY_PIECES)]]
    assert reasons == [None] * (1 + len(REPLY_PIECES)) + ["stop"]
    if include_usage:
        assert all(c["usage"] is None for c in chunks[:-1])
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == USAGE
    else:
        assert all("usage" not in c for c in chunks)


async def test_stream_sdk_sees_usage_only_when_asked(upstream: tuple[FakeOpenAI, str]) -> None:
    _, url = upstream

    def collect(
        client: openai.OpenAI, options: ChatCompletionStreamOptionsParam | openai.Omit
    ) -> list[ChatCompletionChunk]:
        with client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options=options
        ) as stream:
            return list(stream)

    plain = await in_thread(url, lambda c: collect(c, openai.omit))
    text = "".join(c.choices[0].delta.content or "" for c in plain)
    assert text == "Hello from the fake upstream."
    assert [c.usage for c in plain] == [None] * len(plain)
    with_usage = await in_thread(url, lambda c: collect(c, {"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in with_usage[:-1]) == text
    assert [c.usage for c in with_usage[:-1]] == [None] * (len(with_usage) - 1)
    assert with_usage[-1].choices == []
    assert with_usage[-1].usage is not None
    assert with_usage[-1].usage.model_dump(exclude_unset=True) == USAGE


async def test_tool_call_non_stream_and_stream(upstream: tuple[FakeOpenAI, str]) -> None:
    app, url = upstream
    app.tool_call = {"name": "get_weather", "arguments": {"city": "Paris", "unit": "c"}}
    arguments = '{"city": "Paris", "unit": "c"}'

    def both(client: openai.OpenAI) -> tuple[Any, list[Any]]:
        kwargs: Any = {"model": "gpt-4o-mini", "messages": MESSAGES, "tools": [WEATHER_TOOL]}
        single = client.chat.completions.create(**kwargs)
        with client.chat.completions.create(**kwargs, stream=True) as stream:
            return single, list(stream)

    single, chunks = await in_thread(url, both)
    choice = single.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    assert choice.message.tool_calls is not None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.id.startswith("call_") and call.type == "function"
    assert (call.function.name, call.function.arguments) == ("get_weather", arguments)
    first = chunks[0].choices[0].delta.tool_calls[0]
    assert (first.index, first.type, first.function.name, first.function.arguments) == (
        0,
        "function",
        "get_weather",
        "",
    )
    assert first.id.startswith("call_")
    fragments = [c.choices[0].delta.tool_calls[0] for c in chunks[1:-1]]
    assert len(fragments) == 3 and all(f.id is None and f.index == 0 for f in fragments)
    assert "".join(f.function.arguments for f in fragments) == arguments
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    # Without tools in the request the knob is ignored.
    async with httpx.AsyncClient(base_url=url) as client:
        plain = (await client.post("/chat/completions", json=chat())).json()
    assert plain["choices"][0]["message"]["content"] == "Hello from the fake upstream."


async def test_error_status_with_retry_after(upstream: tuple[FakeOpenAI, str]) -> None:
    app, url = upstream
    app.status, app.retry_after, app.error_message = 429, 7, "Slow down."
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/chat/completions", json=chat(stream=True))
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"
    assert response.json() == {
        "error": {
            "message": "Slow down.",
            "type": "requests",
            "param": None,
            "code": "rate_limit_exceeded",
        }
    }
    with pytest.raises(openai.RateLimitError) as caught:
        await in_thread(
            url,
            lambda c: c.chat.completions.create(model="m", messages=MESSAGES),
        )
    assert caught.value.status_code == 429 and caught.value.code == "rate_limit_exceeded"
    assert len(app.requests) == 2  # max_retries=0: the SDK did not retry
    app.status, app.retry_after = 500, None
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/chat/completions", json=chat())
    assert response.status_code == 500 and "retry-after" not in response.headers
    assert response.json()["error"]["type"] == "server_error"


async def test_cut_stream_is_an_error_for_httpx(upstream: tuple[FakeOpenAI, str]) -> None:
    app, url = upstream
    app.cut_after_chunks = 2
    lines: list[str] = []
    async with httpx.AsyncClient(base_url=url) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("POST", "/chat/completions", json=chat(True)) as response:
                assert response.status_code == 200
                async for line in response.aiter_lines():
                    lines.append(line)
    data = [line for line in lines if line]
    assert len(data) == 2 and "[DONE]" not in "".join(lines)
    assert json.loads(data[1].removeprefix("data: "))["choices"][0]["delta"] == {
        "content": "Hello "
    }
    with trio.fail_after(2):
        await app.wait_idle()
    assert app.disconnects == 0  # the fake cut the stream; the client did not go away


async def test_client_closing_stream_early_counts_disconnect(
    upstream: tuple[FakeOpenAI, str],
) -> None:
    app, url = upstream
    app.first_token_delay_s, app.chunk_delay_s = 0.05, 1.0  # a full stream would take ~6 s

    def first_chunk_then_close(client: openai.OpenAI) -> str | None:
        with client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        ) as stream:
            return next(iter(stream)).choices[0].delta.role

    with trio.fail_after(3):
        assert await in_thread(url, first_chunk_then_close) == "assistant"
        await app.wait_disconnect()
        await app.wait_idle()
        assert app.disconnects == 1
        # httpx, leaving before the first chunk (not iterating avoids httpx issue 3686's warning)
        async with httpx.AsyncClient(base_url=url) as client:
            async with client.stream("POST", "/chat/completions", json=chat(True)) as response:
                assert response.status_code == 200
                assert app.in_flight == 1
            await app.wait_disconnect(2)
            await app.wait_idle()
    assert app.disconnects == 2


async def test_hang_until_client_disconnects(
    upstream: tuple[FakeOpenAI, str], autojump_clock: trio.testing.MockClock
) -> None:
    app, url = upstream
    app.hang = True
    outcome: list[str] = []
    async with httpx.AsyncClient(base_url=url) as client, trio.open_nursery() as nursery:

        async def call() -> None:
            with trio.CancelScope() as scope:
                cancel_scopes.append(scope)
                await client.post("/chat/completions", json=chat())
                outcome.append("answered")

        cancel_scopes: list[trio.CancelScope] = []
        nursery.start_soon(call)
        with trio.fail_after(2):
            await app.wait_requests(1)
            await trio.sleep(0.1)
            assert app.in_flight == 1 and app.disconnects == 0
            cancel_scopes[0].cancel()
            await app.wait_disconnect()
            await app.wait_idle()
    assert outcome == [] and app.disconnects == 1


async def test_delays_are_applied(
    upstream: tuple[FakeOpenAI, str], autojump_clock: trio.testing.MockClock
) -> None:
    """On the virtual clock (fake and client share the loop) the delays are exact."""
    app, url = upstream
    app.latency_s, app.first_token_delay_s, app.chunk_delay_s, app.chunks = 0.1, 0.1, 0.05, 2
    arrivals: list[float] = []
    async with httpx.AsyncClient(base_url=url) as client:
        start = trio.current_time()
        async with client.stream("POST", "/chat/completions", json=chat(True)) as response:
            headers_at = trio.current_time() - start
            async for line in response.aiter_lines():
                if line:
                    arrivals.append(trio.current_time() - start)
    assert len(arrivals) == 1 + 2 + 1 + 1  # role, two content chunks, finish, [DONE]
    assert headers_at == pytest.approx(0.1)  # latency
    # role after the first-token delay, then a chunk delay before each further event;
    # [DONE] follows the finish chunk at once
    assert arrivals == pytest.approx([0.2, 0.25, 0.3, 0.35, 0.35])


async def test_embeddings_float_and_sdk_base64(upstream: tuple[FakeOpenAI, str]) -> None:
    app, url = upstream
    request = {"model": "text-embedding-3-small", "input": ["one two", "three"]}
    async with httpx.AsyncClient(base_url=url) as client:
        body = (await client.post("/embeddings", json=request)).json()
    assert body["object"] == "list" and body["model"] == "text-embedding-3-small"
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert [(d["object"], d["index"], len(d["embedding"])) for d in body["data"]] == [
        ("embedding", 0, 8),
        ("embedding", 1, 8),
    ]
    assert body["data"][0]["embedding"] != body["data"][1]["embedding"]
    assert abs(sum(x * x for x in body["data"][0]["embedding"]) - 1.0) < 1e-5
    result = await in_thread(
        url,
        lambda c: c.embeddings.create(model="text-embedding-3-small", input=["one two", "three"]),
    )
    assert app.requests[-1].body["encoding_format"] == "base64"
    assert [d.embedding for d in result.data] == [d["embedding"] for d in body["data"]]


async def test_unknown_path_and_missing_model(upstream: tuple[FakeOpenAI, str]) -> None:
    _, url = upstream
    async with httpx.AsyncClient(base_url=url) as client:
        unknown = await client.post("/completions-v9", json={})
        no_model = await client.post("/chat/completions", json={"messages": MESSAGES})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "Invalid URL (POST /v1/completions-v9)"
    assert no_model.status_code == 400
    assert no_model.json()["error"]["type"] == "invalid_request_error"


async def test_shutdown_then_restart_on_same_port(nursery: trio.Nursery) -> None:
    app = FakeOpenAI()
    url = await start_fake(nursery, app)
    port = httpx.URL(url).port
    assert port is not None
    async with httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/models")).status_code == 200
        app.shutdown.set()
        with trio.fail_after(2):
            while True:
                try:
                    await client.get("/models")
                except httpx.ConnectError:
                    break  # the port is closed
                except httpx.RemoteProtocolError:
                    pass  # a kept-alive connection dropped while the server was stopping
                await trio.sleep(0.01)
        assert await start_fake(nursery, app, port=port) == url
        assert (await client.get("/models")).status_code == 200
