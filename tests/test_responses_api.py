"""The OpenAI Responses API (``/v1/responses``) driven by the official ``openai`` SDK against
fake upstreams: create (JSON and stream), retrieve, delete, input items, ``previous_response_id``
chains across providers and restarts, ownership per key, function tools, ``text.format``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import trio

from ailb.lifecycle import Running
from ailb.responses.state import StoredResponse
from ailb.supervisor import run
from tests.conftest import SDKFactory, StartGateway, auth, in_thread, make_settings
from tests.fakes import anthropic_upstream
from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.openai_upstream import FakeOpenAI, start_fake
from tests.test_keys import create_key
from tests.test_memory import UPSTREAM_KEY, chats, deployment

WEATHER = {"type": "function", "name": "get_weather", "description": "The weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                          "required": ["city"]}}


async def _gateway(nursery: trio.Nursery, start_gateway: StartGateway,
                   **raw: Any) -> tuple[Running, FakeOpenAI, FakeAnthropic]:
    oa = FakeOpenAI(api_key=UPSTREAM_KEY, reply="Hello from the fake")
    claude = FakeAnthropic(models=["claude-x"], reply="Claude says hi")
    running = await start_gateway(deployments=[
        deployment(await start_fake(nursery, oa)),
        {"name": "an", "type": "anthropic", "api_key": "k2", "models": ["claude-x"],
         "base_url": await anthropic_upstream.start_fake(nursery, claude)}], **raw)
    return running, oa, claude


def _anthropic_bodies(fake: FakeAnthropic) -> list[dict[str, Any]]:
    return [r.body for r in fake.requests if r.path == "/v1/messages"]


async def test_create_retrieve_input_items_delete(nursery: trio.Nursery,
                                                  start_gateway: StartGateway,
                                                  sdk: SDKFactory) -> None:
    running, oa, _ = await _gateway(nursery, start_gateway)
    client = sdk(running.http_url)
    made = await in_thread(lambda: client.responses.create(
        model="gpt-4o-mini", instructions="Be brief.", input="Say hi", max_output_tokens=50,
        temperature=0.5, metadata={"team": "a"}))
    assert made.id.startswith("resp_") and made.object == "response"
    assert made.status == "completed" and made.output_text == "Hello from the fake"
    assert made.model == "gpt-4o-mini" and made.metadata == {"team": "a"}
    assert made.output[0].type == "message" and made.output[0].role == "assistant"
    usage = made.usage
    assert usage is not None and usage.output_tokens > 0 and usage.input_tokens > 0
    assert usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0
    sent = chats(oa)[-1].body
    assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                {"role": "user", "content": "Say hi"}]
    assert sent["max_tokens"] == 50 and sent["temperature"] == 0.5

    got = await in_thread(lambda: client.responses.retrieve(made.id))
    assert got.id == made.id and got.output_text == made.output_text
    items = await in_thread(lambda: client.responses.input_items.list(made.id))
    assert [(i.type, i.role, i.content[0].text) for i in items.data] == [
        ("message", "user", "Say hi")]

    await in_thread(lambda: client.responses.delete(made.id))
    with pytest.raises(openai.NotFoundError):
        await in_thread(lambda: client.responses.retrieve(made.id))


async def test_stream_events_in_order_and_state_ready_at_the_end(
        nursery: trio.Nursery, start_gateway: StartGateway, sdk: SDKFactory) -> None:
    running, _, _ = await _gateway(nursery, start_gateway)
    client = sdk(running.http_url)

    def stream() -> tuple[list[str], Any, Any]:
        with client.responses.stream(model="gpt-4o-mini", input="Say hi") as events:
            kinds = [event.type for event in events]
            final = events.get_final_response()
        # the moment the stream ended: the state is there
        return kinds, final, client.responses.retrieve(final.id)

    kinds, final, stored = await in_thread(stream)
    deltas = kinds.count("response.output_text.delta")
    assert deltas >= 2
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * deltas,
                     "response.output_text.done", "response.content_part.done",
                     "response.output_item.done", "response.completed"]
    assert final.output_text == "Hello from the fake" and final.status == "completed"
    assert final.usage is not None and final.usage.output_tokens > 0
    assert stored.output_text == "Hello from the fake"


async def test_a_chain_continues_on_another_provider(nursery: trio.Nursery,
                                                     start_gateway: StartGateway,
                                                     sdk: SDKFactory) -> None:
    running, _, claude = await _gateway(nursery, start_gateway)
    client = sdk(running.http_url)
    first = await in_thread(lambda: client.responses.create(
        model="gpt-4o-mini", instructions="Only the first time.", input="My name is Ada."))
    second = await in_thread(lambda: client.responses.create(
        model="claude-x", input="What is my name?", previous_response_id=first.id))
    assert second.output_text == "Claude says hi" and second.model == "claude-x"
    assert second.previous_response_id == first.id
    sent = _anthropic_bodies(claude)[-1]
    assert "system" not in sent  # instructions are not carried over
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    texts = [m["content"] if isinstance(m["content"], str) else m["content"][0]["text"]
             for m in sent["messages"]]
    assert texts == ["My name is Ada.", "Hello from the fake", "What is my name?"]

    def third_streamed() -> Any:
        with client.responses.stream(model="gpt-4o-mini", input="And again?",
                                     previous_response_id=second.id) as events:
            return events.get_final_response()

    third = await in_thread(third_streamed)
    assert third.output_text == "Hello from the fake"
    fourth = await in_thread(lambda: client.responses.create(
        model="claude-x", input="Last one", previous_response_id=third.id))
    texts = [m["content"] if isinstance(m["content"], str) else m["content"][0]["text"]
             for m in _anthropic_bodies(claude)[-1]["messages"]]
    assert texts[-3:] == ["And again?", "Hello from the fake", "Last one"] and len(texts) == 7
    assert fourth.status == "completed"

    def claude_streamed() -> Any:  # Anthropic's stream, translated into Responses events
        with client.responses.stream(model="claude-x", input="Stream it",
                                     previous_response_id=fourth.id) as events:
            return events.get_final_response()

    fifth = await in_thread(claude_streamed)
    assert fifth.output_text == "Claude says hi" and fifth.usage is not None
    assert len(_anthropic_bodies(claude)[-1]["messages"]) == 9


async def test_owned_by_the_key_and_store_false(nursery: trio.Nursery,
                                                start_gateway: StartGateway, sdk: SDKFactory,
                                                http: httpx.AsyncClient) -> None:
    running, _, _ = await _gateway(nursery, start_gateway)
    url = running.http_url
    alice = sdk(url, (await create_key(http, url))["key"])
    bob = sdk(url, (await create_key(http, url))["key"])
    made = await in_thread(lambda: alice.responses.create(model="gpt-4o-mini", input="hi"))
    for call in (lambda: bob.responses.retrieve(made.id),
                 lambda: bob.responses.delete(made.id),
                 lambda: bob.responses.input_items.list(made.id),
                 lambda: bob.responses.create(model="gpt-4o-mini", input="x",
                                              previous_response_id=made.id)):
        with pytest.raises(openai.NotFoundError):
            await in_thread(call)
    assert (await in_thread(lambda: alice.responses.retrieve(made.id))).id == made.id
    admin = sdk(url)
    assert (await in_thread(lambda: admin.responses.retrieve(made.id))).id == made.id

    unstored = await in_thread(lambda: alice.responses.create(
        model="gpt-4o-mini", input="hi", store=False))
    assert unstored.output_text == "Hello from the fake" and unstored.store is False
    with pytest.raises(openai.NotFoundError):
        await in_thread(lambda: alice.responses.retrieve(unstored.id))
    with pytest.raises(openai.NotFoundError):
        await in_thread(lambda: alice.responses.create(
            model="gpt-4o-mini", input="x", previous_response_id=unstored.id))


async def test_state_survives_a_restart(nursery: trio.Nursery, tmp_path: Path,
                                        sdk: SDKFactory) -> None:
    oa = FakeOpenAI(api_key=UPSTREAM_KEY, reply="Remembered")
    settings = make_settings(tmp_path, deployments=[deployment(await start_fake(nursery, oa))])
    async with trio.open_nursery() as first_life:
        running: Running = await first_life.start(run, settings)
        client = sdk(running.http_url)
        made = await in_thread(lambda: client.responses.create(model="gpt-4o-mini",
                                                               input="Keep this"))
        running.request_shutdown()
    async with trio.open_nursery() as second_life:
        running = await second_life.start(run, settings)
        client = sdk(running.http_url)
        got = await in_thread(lambda: client.responses.retrieve(made.id))
        assert got.output_text == "Remembered"
        await in_thread(lambda: client.responses.create(
            model="gpt-4o-mini", input="Next", previous_response_id=made.id))
        assert [m["content"] for m in chats(oa)[-1].body["messages"]] == [
            "Keep this", "Remembered", "Next"]
        running.request_shutdown()


async def test_function_call_round_trip(nursery: trio.Nursery, start_gateway: StartGateway,
                                        sdk: SDKFactory) -> None:
    running, oa, _ = await _gateway(nursery, start_gateway)
    oa.tool_call = {"name": "get_weather", "arguments": {"city": "Paris"}}
    client = sdk(running.http_url)
    made = await in_thread(lambda: client.responses.create(
        model="gpt-4o-mini", input="Weather in Paris?", tools=[WEATHER],
        tool_choice={"type": "function", "name": "get_weather"}))
    sent = chats(oa)[-1].body
    assert sent["tools"] == [{"type": "function", "function": {
        "name": "get_weather", "parameters": WEATHER["parameters"],
        "description": "The weather in a city"}}]
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    [call] = made.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.arguments == '{"city": "Paris"}' and call.call_id.startswith("call_")

    oa.tool_call = None
    answer = await in_thread(lambda: client.responses.create(
        model="gpt-4o-mini", previous_response_id=made.id, tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"}]))
    assert answer.output_text == "Hello from the fake"
    messages = chats(oa)[-1].body["messages"]
    assert messages[1] == {"role": "assistant", "content": None, "tool_calls": [
        {"id": call.call_id, "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]}
    assert messages[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "Sunny"}

    oa.tool_call = {"name": "get_weather", "arguments": {"city": "Rome"}}

    def streamed() -> tuple[list[Any], Any]:
        with client.responses.stream(model="gpt-4o-mini", input="Rome?",
                                     tools=[WEATHER]) as events:
            return list(events), events.get_final_response()

    events, final = await in_thread(streamed)
    deltas = "".join(e.delta for e in events
                     if e.type == "response.function_call_arguments.delta")
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert deltas == '{"city": "Rome"}' and done[0].arguments == deltas
    assert final.output[0].type == "function_call" and final.output[0].arguments == deltas


async def test_text_format_json_schema_reaches_the_upstream(nursery: trio.Nursery,
                                                            start_gateway: StartGateway,
                                                            sdk: SDKFactory) -> None:
    running, oa, _ = await _gateway(nursery, start_gateway)
    client = sdk(running.http_url)
    schema = {"type": "object", "properties": {"name": {"type": "string"}},
              "required": ["name"], "additionalProperties": False}
    await in_thread(lambda: client.responses.create(
        model="gpt-4o-mini", input="A name", text={"format": {
            "type": "json_schema", "name": "person", "schema": schema, "strict": True}}))
    assert chats(oa)[-1].body["response_format"] == {"type": "json_schema", "json_schema": {
        "name": "person", "schema": schema, "strict": True}}
    # reasoning effort goes as chat's reasoning_effort; include asks for nothing AILB makes
    await in_thread(lambda: client.responses.create(
        model="gpt-4o-mini", input="Think", reasoning={"effort": "low"},
        include=["reasoning.encrypted_content"]))
    assert chats(oa)[-1].body["reasoning_effort"] == "low"


async def test_unsupported_input_is_refused_by_name(nursery: trio.Nursery,
                                                    start_gateway: StartGateway,
                                                    http: httpx.AsyncClient) -> None:
    running, oa, _ = await _gateway(nursery, start_gateway)
    url = f"{running.http_url}/v1/responses"
    cases = [({"model": "gpt-4o-mini"}, "input"),
             ({"model": "gpt-4o-mini", "input": "x", "tools": [{"type": "web_search"}]},
              "tools.0"),
             ({"model": "gpt-4o-mini", "input": [{"type": "item_reference", "id": "x"}]},
              "input.0.type"),
             ({"model": "gpt-4o-mini", "input": "x", "background": True}, "background"),
             ({"model": "gpt-4o-mini", "input": "x", "prompt": {"id": "pmpt_1"}}, "prompt"),
             ({"model": "gpt-4o-mini", "input": "x", "conversation": "conv_1"},
              "conversation")]
    for body, param in cases:
        reply = await http.post(url, headers=auth(), json=body)
        assert reply.status_code == 400 and reply.json()["error"]["param"] == param, reply.text
    assert chats(oa) == []


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
async def test_both_stores_keep_responses(kind: str, tmp_path: Path,
                                          request: pytest.FixtureRequest) -> None:
    from ailb.keys.store import SqliteStore
    from ailb.stores.postgres import PostgresStore

    store: Any
    if kind == "postgres":
        store = await PostgresStore.open(request.getfixturevalue("postgres_url"))
    else:
        store = await SqliteStore.open(tmp_path / "ailb.db")
    try:
        stored = StoredResponse("resp_1", "k1", 1700000000, {"id": "resp_1", "output": []},
                                [{"id": "msg_1", "type": "message"}],
                                [{"role": "user", "content": "é"}])
        assert await store.get_response("resp_1") is None
        await store.put_response(stored)
        assert await store.get_response("resp_1") == stored
        assert await store.delete_response("resp_1") is True
        assert await store.delete_response("resp_1") is False
        assert await store.get_response("resp_1") is None
        # kept 30 days: a write removes what is older (the table stays bounded)
        month = 30 * 86_400
        old = StoredResponse("resp_old", "k1", 1700000000 - month - 1, {}, [], [])
        edge = StoredResponse("resp_edge", "k1", 1700000000 - month, {}, [], [])
        for one in (old, edge, stored):
            await store.put_response(one)
        assert await store.get_response("resp_old") is None
        assert await store.get_response("resp_edge") == edge
    finally:
        await store.aclose()
