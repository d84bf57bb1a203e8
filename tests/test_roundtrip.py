"""Every ingress against every provider: the official ``openai`` SDK on /v1/chat/completions and
the official ``anthropic`` SDK on /v1/messages, each against fake OpenAI, Anthropic and Ollama
upstreams that speak their exact wire formats. A conversation with tools must survive each pair
unchanged in meaning, streamed or not."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import openai
import pytest
import trio

from tests.conftest import ADMIN_KEY, SDKFactory, StartGateway, auth, in_thread
from tests.fakes import anthropic_upstream, ollama_upstream
from tests.fakes.openai_upstream import FakeOpenAI, start_fake

ARGS = '{"city": "Paris",  "units":"metric"}'  # odd spacing: streamed arguments stay byte-exact
TOOLS = [{"type": "function", "function": {
    "name": "weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]
ANTHROPIC_TOOLS = [{"name": "weather", "description": "Weather for a city",
                    "input_schema": {"type": "object",
                                     "properties": {"city": {"type": "string"}}}}]
PROVIDERS = ["openai", "anthropic", "ollama"]
MODEL = {"openai": "gpt-4o-mini", "anthropic": "claude-x", "ollama": "llama3:8b"}


@dataclass
class World:
    url: str
    openai: FakeOpenAI
    anthropic: anthropic_upstream.FakeAnthropic
    ollama: ollama_upstream.FakeOllama

    def fake(self, provider: str) -> Any:
        return getattr(self, provider)

    def want_tools(self, provider: str, parallel: bool) -> list[dict[str, Any]]:
        """Make ``provider`` answer with tool calls; return the calls it will make."""
        calls = [{"name": "weather", "arguments": ARGS}]
        if parallel and provider != "openai":  # the OpenAI fake makes one call
            calls.append({"name": "weather", "arguments": '{"city":"Rome"}'})
        if provider == "openai":
            self.openai.tool_call = calls[0]
        elif provider == "anthropic":
            self.anthropic.tool_uses = [
                {"id": f"toolu_{i}", "name": c["name"], "input": json.loads(c["arguments"]),
                 "input_json": c["arguments"]} for i, c in enumerate(calls)]
        else:
            self.ollama.tool_calls = [{"name": c["name"], "arguments": json.loads(c["arguments"])}
                                      for c in calls]
        return calls


@pytest.fixture
async def world(nursery: trio.Nursery, start_gateway: StartGateway) -> World:
    fakes = World("", FakeOpenAI(models=[MODEL["openai"]]),
                  anthropic_upstream.FakeAnthropic(models=[MODEL["anthropic"]]),
                  ollama_upstream.FakeOllama(models=[MODEL["ollama"]]))
    oa = await start_fake(nursery, fakes.openai)
    an = await anthropic_upstream.start_fake(nursery, fakes.anthropic)
    ol = await ollama_upstream.start_fake(nursery, fakes.ollama)
    running = await start_gateway(deployments=[
        {"name": "oa", "type": "openai", "base_url": oa, "api_key": "k1",
         "models": [MODEL["openai"]]},
        {"name": "an", "type": "anthropic", "base_url": an, "api_key": "k2",
         "models": [MODEL["anthropic"]]},
        {"name": "ol", "type": "ollama", "base_url": ol},  # models discovered from /api/tags
    ])
    fakes.url = running.http_url
    with trio.fail_after(30):  # wait for discovery (a bound, not a speed)
        while not running.services.board.discovered().get("ol"):
            await trio.sleep(0.01)
    return fakes


@pytest.fixture
def claude() -> Any:
    clients: list[anthropic.Anthropic] = []

    def make(url: str) -> anthropic.Anthropic:
        client = anthropic.Anthropic(base_url=url, api_key=ADMIN_KEY, max_retries=0, timeout=15)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


# --------------------------------------------------------------------------- OpenAI ingress


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("stream", [False, True])
async def test_openai_sdk_plain_text(world: World, sdk: SDKFactory, provider: str,
                                     stream: bool) -> None:
    client = sdk(world.url)
    messages = [{"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Say hello"}]
    if stream:
        chunks = await in_thread(lambda: list(client.chat.completions.create(
            model=MODEL[provider], messages=messages, stream=True,
            stream_options={"include_usage": True})))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        usage = chunks[-1].usage
        assert chunks[-1].choices == []
    else:
        completion = await in_thread(lambda: client.chat.completions.create(
            model=MODEL[provider], messages=messages))
        text = completion.choices[0].message.content or ""
        finish = completion.choices[0].finish_reason
        usage = completion.usage
    assert text.split() == world.fake(provider).reply.split()
    assert finish == "stop"
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0
    seen = world.fake(provider).requests[-1]
    if provider == "anthropic":
        assert seen.body["system"] == "Be brief."
        assert seen.body["max_tokens"] > 0
    if provider == "ollama":
        assert seen.body["messages"][0] == {"role": "system", "content": "Be brief."}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("stream", [False, True])
async def test_openai_sdk_tool_conversation(world: World, sdk: SDKFactory, provider: str,
                                            stream: bool) -> None:
    client = sdk(world.url)
    expected = world.want_tools(provider, parallel=True)
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris and Rome?"}]
    if stream:
        def run() -> Any:
            with client.chat.completions.stream(model=MODEL[provider], messages=messages,
                                                tools=TOOLS) as s:
                for _ in s:
                    pass
                return s.get_final_completion()
        completion = await in_thread(run)
    else:
        completion = await in_thread(lambda: client.chat.completions.create(
            model=MODEL[provider], messages=messages, tools=TOOLS))
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [c.function.name for c in calls] == [c["name"] for c in expected]
    for call, want in zip(calls, expected, strict=True):
        assert json.loads(call.function.arguments) == json.loads(want["arguments"])
        if stream and provider != "ollama":  # streamed fragments are relayed byte for byte
            assert call.function.arguments == want["arguments"]
    assert len({c.id for c in calls}) == len(calls)

    # second turn: the tool results go back, in each provider's own shape
    messages.append(choice.message.model_dump(exclude_none=True))
    for call in calls:
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "18C"})
    setattr(world.fake(provider), {"openai": "tool_call", "anthropic": "tool_uses",
                                   "ollama": "tool_calls"}[provider], None)
    final = await in_thread(lambda: client.chat.completions.create(
        model=MODEL[provider], messages=messages, tools=TOOLS))
    assert final.choices[0].finish_reason == "stop"
    sent = world.fake(provider).requests[-1].body
    if provider == "anthropic":
        assistant, results = sent["messages"][1], sent["messages"][2]
        assert [b["type"] for b in assistant["content"]] == ["tool_use"] * len(calls)
        assert [b["input"] for b in assistant["content"]] == \
            [json.loads(c["arguments"]) for c in expected]
        assert [(b["type"], b["tool_use_id"]) for b in results["content"]] == \
            [("tool_result", c.id) for c in calls]
    elif provider == "ollama":
        roles = [m["role"] for m in sent["messages"]]
        assert roles == ["user", "assistant"] + ["tool"] * len(calls)
        assert sent["messages"][1]["tool_calls"][0]["function"]["arguments"] == \
            json.loads(ARGS)
    else:
        assert sent["messages"][1]["tool_calls"][0]["function"]["arguments"] == \
            calls[0].function.arguments


async def test_images_reach_anthropic_and_ollama(world: World, sdk: SDKFactory) -> None:
    client = sdk(world.url)
    png = base64.b64encode(b"\x89PNG fake").decode()
    content = [{"type": "text", "text": "What is this?"},
               {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}]
    for provider in ("anthropic", "ollama"):
        await in_thread(lambda p=provider: client.chat.completions.create(  # type: ignore[misc]
            model=MODEL[p], messages=[{"role": "user", "content": content}]))
    an = world.anthropic.requests[-1].body["messages"][0]["content"]
    assert an[1] == {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                 "data": png}}
    assert world.ollama.requests[-1].body["messages"][0]["images"] == [png]


@pytest.mark.parametrize("provider", ["anthropic", "ollama"])
async def test_length_stop_reason(world: World, sdk: SDKFactory, provider: str) -> None:
    completion = await in_thread(lambda: sdk(world.url).chat.completions.create(
        model=MODEL[provider], max_tokens=2, messages=[{"role": "user", "content": "Talk"}]))
    assert completion.choices[0].finish_reason == "length"
    sent = world.fake(provider).requests[-1].body
    assert (sent["max_tokens"] if provider == "anthropic" else sent["options"]["num_predict"]) \
        == 2


async def test_anthropic_cache_tokens_and_errors(world: World, sdk: SDKFactory) -> None:
    client = sdk(world.url)
    world.anthropic.cache_read_input_tokens = 100
    completion = await in_thread(lambda: client.chat.completions.create(
        model=MODEL["anthropic"], messages=[{"role": "user", "content": "hi"}]))
    assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 100
    world.anthropic.status, world.anthropic.retry_after = 529, 3
    with pytest.raises(openai.InternalServerError) as info:
        await in_thread(lambda: client.chat.completions.create(
            model=MODEL["anthropic"], messages=[{"role": "user", "content": "hi"}]))
    assert info.value.status_code == 503
    assert info.value.response.headers["retry-after"] == "3"
    world.anthropic.status, world.anthropic.error_type = 400, "invalid_request_error"
    world.anthropic.error_message = "messages: roles must alternate"
    with pytest.raises(openai.BadRequestError) as bad:
        await in_thread(lambda: client.chat.completions.create(
            model=MODEL["anthropic"], messages=[{"role": "user", "content": "hi"}]))
    assert "roles must alternate" in bad.value.message


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_cut_streams_are_errors(world: World, provider: str) -> None:
    fake = world.fake(provider)
    knob = {"openai": "cut_after_chunks", "anthropic": "cut_after_events",
            "ollama": "cut_after_lines"}[provider]
    setattr(fake, knob, 3)
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{world.url}/v1/chat/completions", headers=auth(), json={
            "model": MODEL[provider], "stream": True,
            "messages": [{"role": "user", "content": "hi"}]})
    events = [e for e in response.text.split("\n\n") if e]
    assert "data: [DONE]" not in events
    assert json.loads(events[-1][6:])["error"]["code"] == "upstream_stream_cut"


async def test_mid_stream_provider_errors(world: World) -> None:
    world.anthropic.stream_error = 1
    world.ollama.stream_error = 1
    async with httpx.AsyncClient() as http:
        for provider in ("anthropic", "ollama"):
            response = await http.post(f"{world.url}/v1/chat/completions", headers=auth(),
                                       json={"model": MODEL[provider], "stream": True,
                                             "messages": [{"role": "user", "content": "hi"}]})
            events = [e for e in response.text.split("\n\n") if e]
            assert "data: [DONE]" not in events
            assert "error" in json.loads(events[-1][6:])


# --------------------------------------------------------------------------- Anthropic ingress


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_sdk_tool_conversation(world: World, claude: Any, provider: str,
                                               stream: bool) -> None:
    client = claude(world.url)
    expected = world.want_tools(provider, parallel=True)
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris and Rome?"}]
    kwargs = {"model": MODEL[provider], "max_tokens": 200, "system": "Be brief.",
              "messages": messages, "tools": ANTHROPIC_TOOLS}
    if stream:
        def run() -> Any:
            with client.messages.stream(**kwargs) as s:
                return s.get_final_message()
        message = await in_thread(run)
    else:
        message = await in_thread(lambda: client.messages.create(**kwargs))
    assert message.stop_reason == "tool_use"
    uses = [b for b in message.content if b.type == "tool_use"]
    assert [(u.name, u.input) for u in uses] == \
        [(c["name"], json.loads(c["arguments"])) for c in expected]
    assert message.usage.output_tokens > 0

    messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True)
                                                      for b in message.content]})
    messages.append({"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": u.id, "content": "18C"} for u in uses]})
    setattr(world.fake(provider), {"openai": "tool_call", "anthropic": "tool_uses",
                                   "ollama": "tool_calls"}[provider], None)
    final = await in_thread(lambda: client.messages.create(**kwargs))
    assert final.stop_reason == "end_turn"
    assert "".join(b.text for b in final.content if b.type == "text").split() == \
        world.fake(provider).reply.split()
    sent = world.fake(provider).requests[-1].body
    if provider == "openai":
        roles = [m["role"] for m in sent["messages"]]
        assert roles == ["system", "user", "assistant"] + ["tool"] * len(uses)
        assert [m["tool_call_id"] for m in sent["messages"][3:]] == [u.id for u in uses]
    elif provider == "anthropic":
        assert sent["system"] == "Be brief."
        assert [b["tool_use_id"] for b in sent["messages"][2]["content"]] == [u.id for u in uses]


async def test_anthropic_sdk_text_stream_events(world: World, claude: Any) -> None:
    client = claude(world.url)

    def run() -> tuple[list[str], Any]:
        with client.messages.stream(model=MODEL["openai"], max_tokens=50,
                                    messages=[{"role": "user", "content": "hi"}]) as s:
            kinds = [event.type for event in s]
            return kinds, s.get_final_message()

    kinds, message = await in_thread(run)
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "message_delta" in kinds
    assert message.content[0].text.split() == world.openai.reply.split()
    assert message.usage.input_tokens > 0


async def test_anthropic_errors_in_anthropic_shape(world: World, claude: Any) -> None:
    client = claude(world.url)
    with pytest.raises(anthropic.NotFoundError) as missing:
        await in_thread(lambda: client.messages.create(
            model="nope", max_tokens=5, messages=[{"role": "user", "content": "hi"}]))
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.AuthenticationError):
        bad = anthropic.Anthropic(base_url=world.url, api_key="wrong", max_retries=0)
        try:
            await in_thread(lambda: bad.messages.create(
                model=MODEL["openai"], max_tokens=5, messages=[{"role": "user", "content": "x"}]))
        finally:
            bad.close()
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{world.url}/v1/messages",
                                   headers={"x-api-key": ADMIN_KEY},
                                   json={"model": MODEL["openai"],
                                         "messages": [{"role": "user", "content": "hi"}]})
    assert response.status_code == 400
    assert response.json() == {"type": "error", "error": {
        "type": "invalid_request_error",
        "message": "max_tokens: Field required"}}  # Anthropic's own words


# --------------------------------------------------------------------------- embeddings


@pytest.mark.parametrize("provider", ["openai", "ollama"])
async def test_embeddings(world: World, sdk: SDKFactory, provider: str) -> None:
    model = MODEL[provider]
    result = await in_thread(lambda: sdk(world.url).embeddings.create(
        model=model, input=["alpha", "beta"]))  # the SDK asks for base64 and decodes it
    assert [d.index for d in result.data] == [0, 1]
    assert all(len(d.embedding) > 0 for d in result.data)
    assert result.usage.prompt_tokens >= 0
    if provider == "ollama":
        assert world.ollama.requests[-1].path == "/api/embed"
        assert world.ollama.requests[-1].body["input"] == ["alpha", "beta"]


async def test_embeddings_errors(world: World, sdk: SDKFactory) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await in_thread(lambda: sdk(world.url).embeddings.create(model=MODEL["anthropic"],
                                                                 input="x"))
    assert info.value.param == "model"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_anthropic_ingress_cut_stream_ends_with_error_event(world: World,
                                                                  provider: str) -> None:
    knob = {"openai": "cut_after_chunks", "anthropic": "cut_after_events",
            "ollama": "cut_after_lines"}[provider]
    setattr(world.fake(provider), knob, 3)
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{world.url}/v1/messages",
                                   headers={"x-api-key": ADMIN_KEY},
                                   json={"model": MODEL[provider], "max_tokens": 50,
                                         "stream": True,
                                         "messages": [{"role": "user", "content": "hi"}]})
    names = [line[7:] for line in response.text.splitlines() if line.startswith("event: ")]
    assert names[0] == "message_start"
    assert names[-1] == "error" and "message_stop" not in names


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_to_anthropic_is_native(world: World, stream: bool) -> None:
    """Through /v1/messages to an Anthropic deployment, the request and the answer pass as they
    are: prompt caching, top_k and other Anthropic-only fields survive."""
    body = {"model": MODEL["anthropic"], "max_tokens": 64, "top_k": 5, "stream": stream,
            "system": [{"type": "text", "text": "Long shared context",
                        "cache_control": {"type": "ephemeral"}}],
            "messages": [{"role": "user", "content": "hi"}]}
    world.anthropic.cache_read_input_tokens = 42
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{world.url}/v1/messages", json=body,
                                   headers={"x-api-key": ADMIN_KEY, "x-request-id": "native-1"})
    assert response.status_code == 200, response.text
    sent = world.anthropic.requests[-1].body
    assert sent == body  # byte-for-byte the client's request (the model name is the same here)
    if stream:
        names = [line[7:] for line in response.text.splitlines() if line.startswith("event: ")]
        assert names[0] == "message_start" and names[-1] == "message_stop"
        assert "ping" in names  # the upstream's own events, relayed
        assert names.count("message_start") == 1
    else:
        message = response.json()
        assert message["id"].startswith("msg_") and message["id"] != "msg_native-1"
        assert message["usage"]["cache_read_input_tokens"] == 42
    async with httpx.AsyncClient() as http:
        metrics = (await http.get(f"{world.url}/metrics")).text
    assert 'ailb_tokens_total{direction="prompt",model="claude-x",provider="anthropic"}' in metrics
