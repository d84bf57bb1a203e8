"""The Anthropic and Ollama fakes speak their providers' wire formats.

Anthropic is checked with raw httpx and the official SDK (sync client in a worker thread: its
async client is asyncio-only); Ollama with raw httpx (NDJSON lines, done flags, counts).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any, TypeVar

import anthropic
import httpx
import pytest
import trio
import trio.testing

from tests.fakes import anthropic_upstream, ollama_upstream
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.ollama_upstream import FakeOllama

T = TypeVar("T")
KEY = "sk-ant-test"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
MODEL = "claude-sonnet-4-20250514"
SYSTEM = "Be brief."
MESSAGES: list[anthropic.types.MessageParam] = [
    {"role": "user", "content": "Say hello please"},
    {"role": "assistant", "content": [{"type": "text", "text": "Hi."}]},
    {"role": "user", "content": "Again"},
]
INPUT_TOKENS = 2 + 3 + 1 + 1  # words of system + every message text
REPLY_PIECES = ["Hello ", "from ", "the ", "fake ", "Anthropic."]
TOOLS: list[anthropic.types.ToolParam] = [
    {"name": "get_weather", "input_schema": {"type": "object", "properties": {}}}
]
ODD_JSON = '{"a": 1,  "b":"x y" ,"c" :[1,2]}'


@pytest.fixture
async def claude(nursery: trio.Nursery) -> tuple[FakeAnthropic, str]:
    app = FakeAnthropic()
    return app, await anthropic_upstream.start_fake(nursery, app)


@pytest.fixture
async def ollama(nursery: trio.Nursery) -> tuple[FakeOllama, str]:
    app = FakeOllama()
    return app, await ollama_upstream.start_fake(nursery, app)


async def sdk(base_url: str, call: Callable[[anthropic.Anthropic], T], key: str = KEY) -> T:
    """Run ``call(client)`` with a fresh sync SDK client (no retries) in a worker thread."""

    def run() -> T:
        client = anthropic.Anthropic(base_url=base_url, api_key=key, max_retries=0, timeout=5)
        try:
            return call(client)
        finally:
            client.close()

    return await trio.to_thread.run_sync(run)


def request(stream: bool | None = None, **extra: Any) -> dict[str, Any]:
    """A Messages request body; also the SDK's keyword arguments when ``stream`` is None."""
    body = {"model": MODEL, "max_tokens": 100, "system": SYSTEM, "messages": MESSAGES, **extra}
    return body if stream is None else {**body, "stream": stream}


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """Parse a complete SSE body into (event name, data), checking name == data["type"]."""
    assert text.endswith("\n\n")
    events = []
    for frame in text[:-2].split("\n\n"):
        name, data = frame.split("\n")
        assert name.startswith("event: ") and data.startswith("data: ")
        payload = json.loads(data.removeprefix("data: "))
        assert payload["type"] == name.removeprefix("event: ")
        events.append((payload["type"], payload))
    return events


# --- Anthropic -------------------------------------------------------------------------------
async def test_anthropic_auth_version_and_request_ids(claude: tuple[FakeAnthropic, str]) -> None:
    app, url = claude
    app.api_key = KEY
    async with httpx.AsyncClient(base_url=url) as client:
        no_key = await client.post("/v1/messages", json=request())
        wrong = await client.post(
            "/v1/messages", json=request(), headers={**HEADERS, "x-api-key": "x"}
        )
        no_version = await client.post("/v1/messages", json=request(), headers={"x-api-key": KEY})
        ok = await client.post("/v1/messages", json=request(), headers=HEADERS)
    assert [r.status_code for r in (no_key, wrong, no_version, ok)] == [401, 401, 400, 200]
    for response, type_, message in [
        (no_key, "authentication_error", "x-api-key header is required"),
        (wrong, "authentication_error", "invalid x-api-key"),
        (no_version, "invalid_request_error", "anthropic-version: header is required"),
    ]:
        request_id = response.headers["request-id"]
        assert re.fullmatch(r"req_fake\d{6}", request_id)
        assert response.json() == {
            "type": "error",
            "error": {"type": type_, "message": message},
            "request_id": request_id,
        }
    assert len({r.headers["request-id"] for r in (no_key, wrong, no_version, ok)}) == 4
    with pytest.raises(anthropic.AuthenticationError):
        await sdk(url, lambda c: c.models.list(), key="sk-wrong")
    created = await sdk(url, lambda c: c.messages.create(**request()))
    assert created._request_id is not None and created._request_id.startswith("req_fake")
    sent = app.requests[-1].headers
    assert sent["anthropic-version"]  # the SDK pins its own version
    assert sent.get("x-api-key") == KEY or sent["authorization"] == f"Bearer {KEY}"


async def test_anthropic_non_stream_wire(claude: tuple[FakeAnthropic, str]) -> None:
    app, url = claude
    app.cache_read_input_tokens, app.cache_creation_input_tokens = 11, 3
    async with httpx.AsyncClient(base_url=url, headers=HEADERS) as client:
        response = await client.post("/v1/messages", json=request())
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert re.fullmatch(r"msg_fake\d{6}", body.pop("id"))
    assert body == {
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "text", "text": "Hello from the fake Anthropic."}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": INPUT_TOKENS,
            "cache_creation_input_tokens": 3,
            "cache_read_input_tokens": 11,
            "output_tokens": 5,
        },
    }
    assert app.requests[-1].body == request()


async def test_anthropic_sdk_create(claude: tuple[FakeAnthropic, str]) -> None:
    app, url = claude
    app.reply = "Custom answer here"
    message = await sdk(url, lambda c: c.messages.create(**request(model="claude-x")))
    assert message.model == "claude-x" and message.role == "assistant"
    assert [(b.type, getattr(b, "text", None)) for b in message.content] == [
        ("text", "Custom answer here")
    ]
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)
    assert (message.usage.input_tokens, message.usage.output_tokens) == (INPUT_TOKENS, 3)
    assert message._request_id is not None and message._request_id.startswith("req_fake")


async def test_anthropic_stream_wire(claude: tuple[FakeAnthropic, str]) -> None:
    app, url = claude
    app.cache_read_input_tokens = 4
    async with httpx.AsyncClient(base_url=url, headers=HEADERS) as client:
        response = await client.post("/v1/messages", json=request(stream=True))
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["request-id"].startswith("req_fake")
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * len(REPLY_PIECES),
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    start = events[0][1]["message"]
    assert start["id"].startswith("msg_fake") and start["content"] == []
    assert (start["model"], start["stop_reason"], start["stop_sequence"]) == (MODEL, None, None)
    assert start["usage"] == {
        "input_tokens": INPUT_TOKENS,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 4,
        "output_tokens": 1,
    }
    assert events[1][1] == {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    deltas = [data for name, data in events if name == "content_block_delta"]
    assert deltas[0] == {
        "type": "content_block_delta",
        "index": 0,
        "delta": {"type": "text_delta", "text": "Hello "},
    }
    assert [d["delta"]["text"] for d in deltas] == REPLY_PIECES
    assert events[-3][1] == {"type": "content_block_stop", "index": 0}
    assert events[-2][1] == {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn", "stop_sequence": None},
        "usage": {"output_tokens": 5},
    }
    assert events[-1][1] == {"type": "message_stop"}


async def test_anthropic_parallel_tool_use_stream_and_sdk(
    claude: tuple[FakeAnthropic, str],
) -> None:
    app, url = claude
    app.tool_text = "Let me check."
    app.tool_uses = [
        {"id": "toolu_A", "name": "get_weather", "input": {"city": "Paris", "unit": "c"}},
        {"name": "get_time", "input": {"ignored": True}, "input_json": ODD_JSON},
    ]
    async with httpx.AsyncClient(base_url=url, headers=HEADERS) as client:
        raw = await client.post("/v1/messages", json=request(stream=True, tools=TOOLS))
    events = sse_events(raw.text)
    starts = [d["content_block"] for n, d in events if n == "content_block_start"]
    assert starts[0] == {"type": "text", "text": ""}
    assert starts[1] == {"type": "tool_use", "id": "toolu_A", "name": "get_weather", "input": {}}
    assert starts[2]["type"] == "tool_use" and starts[2]["id"].startswith("toolu_fake")
    fragments: dict[int, list[str]] = {1: [], 2: []}
    for name, data in events:
        if name == "content_block_delta" and data["index"] > 0:
            assert data["delta"]["type"] == "input_json_delta"
            fragments[data["index"]].append(data["delta"]["partial_json"])
    assert fragments[1][0] == "" and len(fragments[1]) == 4  # "" then three fragments
    assert "".join(fragments[1]) == '{"city": "Paris", "unit": "c"}'
    assert "".join(fragments[2]) == ODD_JSON  # byte-exact
    assert events[-2][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[-2][1]["usage"] == {"output_tokens": 3 + 2}

    def stream_final(client: anthropic.Anthropic) -> Any:
        with client.messages.stream(**request(tools=TOOLS)) as stream:
            return stream.get_final_message()

    final = await sdk(url, stream_final)
    single = await sdk(url, lambda c: c.messages.create(**request(tools=TOOLS)))
    for message in (final, single):
        assert message.stop_reason == "tool_use"
        text, weather, clock = message.content
        assert text.type == "text" and text.text == "Let me check."
        assert weather.type == "tool_use" and clock.type == "tool_use"
        assert (weather.id, weather.name, weather.input) == (
            "toolu_A",
            "get_weather",
            {"city": "Paris", "unit": "c"},
        )
        assert (clock.name, clock.input) == ("get_time", {"a": 1, "b": "x y", "c": [1, 2]})
    # Without tools in the request, or with tool_choice none, the knob is ignored.
    plain = await sdk(url, lambda c: c.messages.create(**request()))
    refused = await sdk(
        url, lambda c: c.messages.create(**request(tools=TOOLS, tool_choice={"type": "none"}))
    )
    for message in (plain, refused):
        assert message.stop_reason == "end_turn" and len(message.content) == 1


async def test_anthropic_stop_reasons(claude: tuple[FakeAnthropic, str]) -> None:
    app, url = claude
    app.tool_input_json = ODD_JSON
    app.tool_uses = [{"name": "get_weather", "input": {}}]
    async with httpx.AsyncClient(base_url=url, headers=HEADERS) as client:

        async def post(**extra: Any) -> dict[str, Any]:
            body: dict[str, Any] = (await client.post("/v1/messages", json=request(**extra))).json()
            return body

        short = await post(max_tokens=2)
        stopped = await post(stop_sequences=["zzz", "fake"])
        tool = await post(tools=TOOLS)
        app.stop_reason, app.stop_sequence = "stop_sequence", "###"
        forced = await post()
        raw = await client.post("/v1/messages", json=request(stream=True))
    assert (short["stop_reason"], short["content"][0]["text"]) == ("max_tokens", "Hello from ")
    assert short["usage"]["output_tokens"] == 2
    assert (stopped["stop_reason"], stopped["stop_sequence"]) == ("stop_sequence", "fake")
    assert stopped["content"][0]["text"] == "Hello from the "
    assert tool["content"][0]["input"] == json.loads(ODD_JSON)
    assert (forced["stop_reason"], forced["stop_sequence"]) == ("stop_sequence", "###")
    delta = sse_events(raw.text)[-2][1]["delta"]
    assert delta == {"stop_reason": "stop_sequence", "stop_sequence": "###"}


@pytest.mark.parametrize(
    ("status", "type_", "exception"),
    [
        (429, "rate_limit_error", anthropic.RateLimitError),
        (529, "overloaded_error", anthropic.OverloadedError),
        (500, "api_error", anthropic.InternalServerError),
    ],
)
async def test_anthropic_error_status(
    claude: tuple[FakeAnthropic, str], status: int, type_: str, exception: type[Exception]
) -> None:
    app, url = claude
    app.status, app.retry_after = status, 3
    async with httpx.AsyncClient(base_url=url, headers=HEADERS) as client:
        response = await client.post("/v1/messages", json=request(stream=True))
    assert response.status_code == status and response.headers["retry-after"] == "3"
    assert response.json()["error"]["type"] == type_
    with pytest.raises(exception) as caught:
        await sdk(url, lambda c: c.messages.create(**request()))
    assert isinstance(caught.value, anthropic.APIStatusError)
    assert caught.value.status_code == status
    assert isinstance(caught.value, anthropic.InternalServerError) == (status >= 500)
    assert len(app.requests) == 2  # max_retries=0: the SDK did not retry
    app.error_type, app.error_message = "custom_error", "Custom."
    async with httpx.AsyncClient(base_url=url, headers=HEADERS) as client:
        body = (await client.post("/v1/messages", json=request())).json()
    assert body["error"] == {"type": "custom_error", "message": "Custom."}


async def test_anthropic_stream_error_event(claude: tuple[FakeAnthropic, str]) -> None:
    app, url = claude
    app.stream_error = 2
    async with httpx.AsyncClient(base_url=url, headers=HEADERS) as client:
        response = await client.post("/v1/messages", json=request(stream=True))
    events = sse_events(response.text)  # the body ends cleanly, after the error event
    assert [n for n, _ in events][-4:] == [
        "ping",
        "content_block_delta",
        "content_block_delta",
        "error",
    ]
    assert events[-1][1] == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }

    def consume(client: anthropic.Anthropic) -> None:
        with client.messages.stream(**request()) as stream:
            stream.until_done()

    with pytest.raises(anthropic.APIStatusError) as caught:
        await sdk(url, consume)
    assert caught.value.status_code == 200  # the HTTP status of a stream that failed midway
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["error"]["type"] == "overloaded_error"


async def test_anthropic_cut_stream(claude: tuple[FakeAnthropic, str]) -> None:
    app, url = claude
    app.cut_after_events = 4
    lines: list[str] = []
    async with httpx.AsyncClient(base_url=url, headers=HEADERS) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("POST", "/v1/messages", json=request(True)) as response:
                async for line in response.aiter_lines():
                    lines.append(line)
    names = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    assert names == ["message_start", "content_block_start", "ping", "content_block_delta"]
    with trio.fail_after(2):
        await app.wait_idle()
    assert app.disconnects == 0


async def test_anthropic_models_count_tokens_and_validation(
    claude: tuple[FakeAnthropic, str],
) -> None:
    app, url = claude
    app.models = ["claude-opus-4-20250514", "claude-3-5-haiku-latest"]
    async with httpx.AsyncClient(base_url=url, headers=HEADERS) as client:
        models = (await client.get("/v1/models")).json()
        count = await client.post(
            "/v1/messages/count_tokens",
            json={"model": MODEL, "system": SYSTEM, "messages": MESSAGES},
        )
        no_max = await client.post("/v1/messages", json={"model": MODEL, "messages": MESSAGES})
        unknown = await client.get("/v1/nothing")
        app.strict_models = True
        strict = await client.post("/v1/messages", json=request(model="claude-nope"))
    assert models == {
        "data": [
            {
                "type": "model",
                "id": "claude-opus-4-20250514",
                "display_name": "Claude Opus 4",
                "created_at": "2025-02-19T00:00:00Z",
            },
            {
                "type": "model",
                "id": "claude-3-5-haiku-latest",
                "display_name": "Claude 3 5 Haiku Latest",
                "created_at": "2025-02-19T00:00:00Z",
            },
        ],
        "has_more": False,
        "first_id": "claude-opus-4-20250514",
        "last_id": "claude-3-5-haiku-latest",
    }
    assert count.json() == {"input_tokens": INPUT_TOKENS}
    assert no_max.status_code == 400
    assert no_max.json()["error"] == {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required",
    }
    assert unknown.status_code == 404 and unknown.json()["error"]["type"] == "not_found_error"
    assert strict.status_code == 404
    assert strict.json()["error"] == {"type": "not_found_error", "message": "model: claude-nope"}
    ids = await sdk(url, lambda c: [m.id for m in c.models.list()])
    assert ids == app.models
    app.models_status = 529
    with pytest.raises(anthropic.OverloadedError):
        await sdk(url, lambda c: c.models.list())


async def test_anthropic_client_leaving_and_hang(claude: tuple[FakeAnthropic, str]) -> None:
    app, url = claude
    app.first_token_delay_s, app.chunk_delay_s = 0.05, 1.0  # a full stream would take ~10 s

    def first_event_then_close(client: anthropic.Anthropic) -> str:
        with client.messages.stream(**request()) as stream:
            return next(iter(stream)).type

    with trio.fail_after(3):
        assert await sdk(url, first_event_then_close) == "message_start"
        await app.wait_disconnect()
        await app.wait_idle()
        assert app.disconnects == 1
        app.hang = True
        async with httpx.AsyncClient(base_url=url, headers=HEADERS) as client, \
                trio.open_nursery() as caller:
            answered: list[httpx.Response] = []

            async def call() -> None:
                answered.append(await client.post("/v1/messages", json=request()))

            caller.start_soon(call)
            await app.wait_requests(2)  # the fake holds the call...
            caller.cancel_scope.cancel()  # ...until the client leaves
        assert not answered
        await app.wait_disconnect(2)
        await app.wait_idle()
    assert app.disconnects == 2


async def test_anthropic_delays(
    claude: tuple[FakeAnthropic, str], autojump_clock: trio.testing.MockClock
) -> None:
    """On the virtual clock (fake and client share the loop) the delays are exact."""
    app, url = claude
    app.latency_s, app.first_token_delay_s, app.chunk_delay_s = 0.1, 0.1, 0.02
    arrivals: list[float] = []
    async with httpx.AsyncClient(base_url=url, headers=HEADERS) as client:
        start = trio.current_time()
        async with client.stream("POST", "/v1/messages", json=request(True)) as response:
            headers_at = trio.current_time() - start
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    arrivals.append(trio.current_time() - start)
    assert len(arrivals) == 11  # start, block start, ping, 5 deltas, block stop, delta, stop
    assert headers_at == pytest.approx(0.1)  # latency
    # the first event after the first-token delay, then a chunk delay before each other one
    assert arrivals == pytest.approx([0.2 + 0.02 * n for n in range(11)])


# --- Ollama ----------------------------------------------------------------------------------
OLLAMA_MESSAGES = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Describe this image", "images": ["aGVsbG8="]},
]
OLLAMA_PROMPT = 2 + 3
OLLAMA_PIECES = ["Hello ", "from ", "the ", "fake ", "Ollama."]


def chat_body(stream: bool | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "llama3:8b", "messages": OLLAMA_MESSAGES, **extra}
    return body if stream is None else {**body, "stream": stream}


def timings(prompt: int, evals: int) -> dict[str, int]:
    return {
        "total_duration": 1_500_000 + prompt * 100_000 + evals * 250_000,
        "load_duration": 1_500_000,
        "prompt_eval_count": prompt,
        "prompt_eval_duration": prompt * 100_000,
        "eval_count": evals,
        "eval_duration": evals * 250_000,
    }


def ndjson(text: str) -> list[dict[str, Any]]:
    assert text.endswith("\n") and "\n\n" not in text
    return [json.loads(line) for line in text.splitlines()]


CREATED_AT = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z")


async def test_ollama_tags_root_version(ollama: tuple[FakeOllama, str]) -> None:
    app, url = ollama
    app.models = ["llama3:8b"]
    async with httpx.AsyncClient(base_url=url) as client:
        root = await client.get("/")
        version = await client.get("/api/version")
        tags = await client.get("/api/tags")
        app.tags_status, app.error_message = 500, "boom"
        failing = await client.get("/api/tags")
        unknown = await client.post("/v1/whatever", json={})
    assert (root.status_code, root.text) == (200, "Ollama is running")
    assert version.json() == {"version": "0.6.2"}
    assert tags.headers["content-type"] == "application/json; charset=utf-8"
    entry = tags.json()["models"][0]
    assert set(tags.json()) == {"models"} and len(tags.json()["models"]) == 1
    assert (entry["name"], entry["model"]) == ("llama3:8b", "llama3:8b")
    assert re.fullmatch(r"[0-9a-f]{64}", entry["digest"]) and entry["size"] > 0
    assert entry["modified_at"].endswith("Z")
    assert entry["details"] == {
        "parent_model": "",
        "format": "gguf",
        "family": "llama",
        "families": ["llama"],
        "parameter_size": "8.0B",
        "quantization_level": "Q4_K_M",
    }
    assert (failing.status_code, failing.json()) == (500, {"error": "boom"})
    assert (unknown.status_code, unknown.text) == (404, "404 page not found")


async def test_ollama_chat_non_stream(ollama: tuple[FakeOllama, str]) -> None:
    app, url = ollama
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/api/chat", json=chat_body(stream=False))
    assert response.headers["content-type"] == "application/json; charset=utf-8"
    body = response.json()
    assert CREATED_AT.fullmatch(body.pop("created_at"))
    assert body == {
        "model": "llama3:8b",
        "message": {"role": "assistant", "content": "Hello from the fake Ollama."},
        "done_reason": "stop",
        "done": True,
        **timings(OLLAMA_PROMPT, 5),
    }
    assert app.requests[-1].body["messages"][1]["images"] == ["aGVsbG8="]


async def test_ollama_chat_streams_by_default(ollama: tuple[FakeOllama, str]) -> None:
    _, url = ollama
    async with httpx.AsyncClient(base_url=url) as client:
        response = await client.post("/api/chat", json=chat_body())  # no "stream": Ollama streams
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = ndjson(response.text)
    assert [line["done"] for line in lines] == [False] * 5 + [True]
    assert all(CREATED_AT.fullmatch(line.pop("created_at")) for line in lines)
    assert lines[0] == {
        "model": "llama3:8b",
        "message": {"role": "assistant", "content": "Hello "},
        "done": False,
    }
    assert [line["message"]["content"] for line in lines[:-1]] == OLLAMA_PIECES
    assert lines[-1] == {
        "model": "llama3:8b",
        "message": {"role": "assistant", "content": ""},
        "done_reason": "stop",
        "done": True,
        **timings(OLLAMA_PROMPT, 5),
    }


async def test_ollama_num_predict_and_done_reason(ollama: tuple[FakeOllama, str]) -> None:
    app, url = ollama
    async with httpx.AsyncClient(base_url=url) as client:
        short = (
            await client.post("/api/chat", json=chat_body(False, options={"num_predict": 2}))
        ).json()
        app.done_reason = "load"
        forced = ndjson((await client.post("/api/chat", json=chat_body(True))).text)[-1]
    assert (short["message"]["content"], short["done_reason"]) == ("Hello from ", "length")
    assert short["eval_count"] == 2
    assert forced["done_reason"] == "load"


async def test_ollama_tool_calls(ollama: tuple[FakeOllama, str]) -> None:
    app, url = ollama
    app.tool_calls = [
        {"name": "get_weather", "arguments": {"city": "Paris"}},
        {"name": "get_time", "arguments": {}},
    ]
    calls = [
        {"function": {"name": "get_weather", "arguments": {"city": "Paris"}}},
        {"function": {"name": "get_time", "arguments": {}}},
    ]
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {}}}]
    async with httpx.AsyncClient(base_url=url) as client:
        single = (await client.post("/api/chat", json=chat_body(False, tools=tools))).json()
        streamed = ndjson((await client.post("/api/chat", json=chat_body(tools=tools))).text)
        plain = (await client.post("/api/chat", json=chat_body(False))).json()
    assert single["message"] == {"role": "assistant", "content": "", "tool_calls": calls}
    assert (single["done_reason"], single["eval_count"]) == ("stop", 2)
    assert len(streamed) == 2  # tool calls arrive whole, in one chunk, then the done line
    assert streamed[0]["done"] is False
    assert streamed[0]["message"] == {"role": "assistant", "content": "", "tool_calls": calls}
    assert streamed[1]["done"] is True and "tool_calls" not in streamed[1]["message"]
    assert plain["message"] == {"role": "assistant", "content": "Hello from the fake Ollama."}


async def test_ollama_embed_and_model_errors(ollama: tuple[FakeOllama, str]) -> None:
    app, url = ollama
    async with httpx.AsyncClient(base_url=url) as client:
        one = (
            await client.post("/api/embed", json={"model": "nomic-embed-text", "input": "a b c"})
        ).json()
        many = (
            await client.post(
                "/api/embed", json={"model": "llama3:8b", "input": ["a b", "c"], "dimensions": 4}
            )
        ).json()
        missing = await client.post("/api/chat", json={"model": "llama9", "messages": []})
        no_model = await client.post("/api/embed", json={"input": "x"})
        app.status, app.error_message = 503, "server busy"
        busy = await client.post("/api/chat", json=chat_body(False))
    assert (one["model"], len(one["embeddings"]), len(one["embeddings"][0])) == (
        "nomic-embed-text",
        1,
        8,
    )
    assert abs(sum(x * x for x in one["embeddings"][0]) - 1.0) < 1e-5
    assert one["prompt_eval_count"] == 3 and one["load_duration"] == 1_500_000
    assert one["total_duration"] == 1_500_000 + 3 * 100_000
    assert [len(v) for v in many["embeddings"]] == [4, 4] and many["prompt_eval_count"] == 3
    assert many["embeddings"][0] != many["embeddings"][1]
    assert (missing.status_code, missing.json()) == (404, {"error": "model 'llama9' not found"})
    assert (no_model.status_code, no_model.json()) == (400, {"error": "model is required"})
    assert (busy.status_code, busy.json()) == (503, {"error": "server busy"})


async def test_ollama_stream_error_cut_and_disconnect(ollama: tuple[FakeOllama, str]) -> None:
    app, url = ollama
    app.stream_error = 2
    async with httpx.AsyncClient(base_url=url) as client:
        errored = ndjson((await client.post("/api/chat", json=chat_body())).text)
        app.stream_error, app.cut_after_lines = None, 3
        lines: list[str] = []
        with pytest.raises(httpx.RemoteProtocolError):
            async with client.stream("POST", "/api/chat", json=chat_body()) as response:
                async for line in response.aiter_lines():
                    lines.append(line)
        assert app.disconnects == 0
        app.cut_after_lines, app.chunk_delay_s = None, 1.0
        with trio.fail_after(2):
            async with client.stream("POST", "/api/chat", json=chat_body()) as response:
                assert response.status_code == 200  # leave before reading: the client goes away
            await app.wait_disconnect()
            await app.wait_idle()
    assert len(errored) == 3 and errored[-1] == {"error": app.stream_error_message}
    assert [json.loads(line)["message"]["content"] for line in lines] == OLLAMA_PIECES[:3]
    assert app.disconnects == 1


async def test_ollama_shutdown_then_restart(nursery: trio.Nursery) -> None:
    app = FakeOllama()
    url = await ollama_upstream.start_fake(nursery, app)
    port = httpx.URL(url).port
    assert port is not None
    async with httpx.AsyncClient(base_url=url) as client:
        assert (await client.get("/api/tags")).status_code == 200
        app.shutdown.set()
        with trio.fail_after(2):
            while True:
                try:
                    await client.get("/api/tags")
                except httpx.ConnectError:
                    break
                except httpx.RemoteProtocolError:
                    pass  # a kept-alive connection dropped while the server was stopping
                await trio.sleep(0.01)
        assert await ollama_upstream.start_fake(nursery, app, port=port) == url
        assert (await client.get("/api/tags")).status_code == 200
