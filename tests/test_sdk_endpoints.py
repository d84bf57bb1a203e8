"""The smaller endpoints current SDKs call, driven with the official SDKs over HTTP against
fake upstreams: the Anthropic SDK's ``messages.count_tokens`` (counted by an Anthropic
deployment, estimated for others), ``models.retrieve`` (OpenAI) and ``models.list`` /
``models.retrieve`` (Anthropic's shapes), and the OpenAI SDK's legacy
``completions.create`` (JSON and streamed, held to a key's limits like chat)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import openai
import pytest
import trio

from ailb.supervisor import Running
from tests.conftest import ADMIN_KEY, StartGateway, auth, in_thread
from tests.fakes import anthropic_upstream, openai_upstream
from tests.fakes.anthropic_wire import count_input_tokens

GPT, CLAUDE = "gpt-4o-mini", "claude-sonnet-4-20250514"
ALIAS = "claude-alias"  # an alias: the upstream is asked for CLAUDE


@dataclass
class World:
    running: Running
    openai: openai_upstream.FakeOpenAI
    anthropic: anthropic_upstream.FakeAnthropic

    def paths(self, fake: Any, path: str) -> list[Any]:
        return [r for r in fake.requests if r.path == path]


@pytest.fixture
async def world(nursery: trio.Nursery, start_gateway: StartGateway) -> World:
    oa = openai_upstream.FakeOpenAI(reply="Once upon a time")
    an = anthropic_upstream.FakeAnthropic(models=[CLAUDE])
    running = await start_gateway(
        deployments=[
            {"name": "oa", "type": "openai", "api_key": "k1", "models": [GPT],
             "base_url": await openai_upstream.start_fake(nursery, oa)},
            {"name": "an", "type": "anthropic", "api_key": "k2", "models": [CLAUDE],
             "base_url": await anthropic_upstream.start_fake(nursery, an)},
        ],
        aliases={ALIAS: [f"an/{CLAUDE}"]},
        ACCOUNTING={"ledger_flush_s": 0.01})
    return World(running, oa, an)


@pytest.fixture
def clients() -> Iterator[dict[str, Any]]:
    made: list[Any] = []

    def make(kind: str, url: str, key: str = ADMIN_KEY) -> Any:
        if kind == "openai":
            client: Any = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0,
                                        timeout=15)
        else:
            client = anthropic.Anthropic(base_url=url, api_key=key, max_retries=0, timeout=15)
        made.append(client)
        return client

    yield {"make": make}
    for client in made:
        client.close()


async def new_key(running: Running, **fields: Any) -> str:
    async with httpx.AsyncClient() as http:
        created = await http.post(f"{running.http_url}/admin/keys", headers=auth(),
                                  json={"name": "sdk", **fields})
    assert created.status_code == 201, created.text
    key: str = created.json()["key"]
    return key


MESSAGES = [{"role": "user", "content": "How many tokens are in this sentence here?"}]


async def test_count_tokens_is_anthropics_for_an_anthropic_deployment(
        world: World, clients: dict[str, Any]) -> None:
    client = clients["make"]("anthropic", world.running.http_url)
    raw = await in_thread(lambda: client.messages.with_raw_response.count_tokens(
        model=ALIAS, system="Be brief.", messages=MESSAGES))
    counted = raw.parse()
    sent = world.paths(world.anthropic, "/v1/messages/count_tokens")
    assert len(sent) == 1
    assert sent[0].body == {"model": CLAUDE, "system": "Be brief.",
                            "messages": MESSAGES}
    assert counted.input_tokens == count_input_tokens(sent[0].body) == 10
    assert raw.headers["x-ailb-token-count"] == "upstream"
    assert raw.headers["x-ailb-deployment"] == "an"
    assert world.paths(world.anthropic, "/v1/messages") == []  # nothing was generated


async def test_count_tokens_is_an_estimate_for_other_deployments(
        world: World, clients: dict[str, Any]) -> None:
    client = clients["make"]("anthropic", world.running.http_url)
    raw = await in_thread(lambda: client.messages.with_raw_response.count_tokens(
        model=GPT, messages=MESSAGES))
    assert raw.headers["x-ailb-token-count"] == "estimate"
    assert raw.parse().input_tokens >= 10
    assert world.paths(world.openai, "/v1/chat/completions") == []
    assert world.paths(world.anthropic, "/v1/messages/count_tokens") == []


async def test_count_tokens_errors_in_anthropics_shape_and_the_key_permission_holds(
        world: World, clients: dict[str, Any]) -> None:
    url = world.running.http_url
    key = await new_key(world.running, allowed_models=[GPT], rpm_limit=1)
    client = clients["make"]("anthropic", url, key)
    with pytest.raises(anthropic.PermissionDeniedError):
        await in_thread(lambda: client.messages.count_tokens(model=CLAUDE, messages=MESSAGES))
    assert world.paths(world.anthropic, "/v1/messages/count_tokens") == []
    # counting generates nothing: a key's request rate does not apply to it
    for _ in range(3):
        await in_thread(lambda: client.messages.count_tokens(model=GPT, messages=MESSAGES))
    admin = clients["make"]("anthropic", url)
    with pytest.raises(anthropic.NotFoundError) as missing:
        await in_thread(lambda: admin.messages.count_tokens(model="nope", messages=MESSAGES))
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as bad:
        await in_thread(lambda: admin.messages.count_tokens(model=GPT, messages=[]))
    assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


async def test_openai_models_retrieve_finds_a_model_or_404(
        world: World, clients: dict[str, Any]) -> None:
    client = clients["make"]("openai", world.running.http_url)
    model = await in_thread(lambda: client.models.retrieve(CLAUDE))
    assert (model.id, model.object, model.owned_by) == (CLAUDE, "model", "anthropic")
    with pytest.raises(openai.NotFoundError) as missing:
        await in_thread(lambda: client.models.retrieve("no-such-model"))
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.AuthenticationError):
        await in_thread(lambda: clients["make"]("openai", world.running.http_url,
                                                "sk-wrong").models.retrieve(GPT))


async def test_anthropic_models_list_and_retrieve_in_anthropics_shapes(
        world: World, clients: dict[str, Any]) -> None:
    client = clients["make"]("anthropic", world.running.http_url)
    page = await in_thread(lambda: client.models.list())
    assert {m.id for m in page.data} == {GPT, CLAUDE, ALIAS}
    assert all(m.type == "model" and m.display_name == m.id and m.created_at.year == 1970
               for m in page.data)
    assert page.has_more is False and page.first_id == page.data[0].id
    assert page.last_id == page.data[-1].id
    first = await in_thread(lambda: client.models.list(limit=1))
    assert len(first.data) == 1 and first.has_more is True
    rest = await in_thread(lambda: client.models.list(limit=1, after_id=first.last_id))
    assert rest.data[0].id != first.data[0].id and rest.has_more is True
    everything = await in_thread(lambda: [m.id for m in client.models.list(limit=2)])
    assert sorted(everything) == sorted([GPT, CLAUDE, ALIAS])  # the pager follows last_id
    info = await in_thread(lambda: client.models.retrieve(CLAUDE))
    assert (info.id, info.type) == (CLAUDE, "model")
    with pytest.raises(anthropic.NotFoundError) as missing:
        await in_thread(lambda: client.models.retrieve("no-such-model"))
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


async def test_completions_create_json_and_streamed_under_a_keys_rpm_limit(
        world: World, clients: dict[str, Any]) -> None:
    key = await new_key(world.running, rpm_limit=2)
    client = clients["make"]("openai", world.running.http_url, key)
    done = await in_thread(lambda: client.completions.create(
        model=GPT, prompt="Tell me a story.", max_tokens=10, temperature=0, stop=["END"]))
    assert done.object == "text_completion"
    assert done.choices[0].text == "Once upon a time"
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None and done.usage.completion_tokens > 0
    sent = world.paths(world.openai, "/v1/chat/completions")[-1].body
    assert sent["messages"] == [{"role": "user", "content": "Tell me a story."}]
    assert (sent["max_tokens"], sent["temperature"], sent["stop"]) == (10, 0, ["END"])

    def streamed() -> list[Any]:
        return list(client.completions.create(
            model=CLAUDE, prompt="Go on.", max_tokens=50, stream=True,
            stream_options={"include_usage": True}))

    chunks = await in_thread(streamed)
    assert all(c.object == "text_completion" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == \
        anthropic_upstream.DEFAULT_REPLY
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    with pytest.raises(openai.RateLimitError):  # the third request in the minute
        await in_thread(lambda: client.completions.create(model=GPT, prompt="again"))


async def test_completions_raw_stream_ends_with_done_and_unsupported_fields_are_refused(
        world: World, clients: dict[str, Any]) -> None:
    url = world.running.http_url
    async with httpx.AsyncClient(timeout=15) as http:
        answer = await http.post(f"{url}/v1/completions", headers=auth(), json={
            "model": GPT, "prompt": "Say: ", "stream": True, "echo": True})
        events = [line for line in answer.text.split("\n") if line.startswith("data: ")]
        assert events[-1] == "data: [DONE]"
        assert '"text":"Say: ' in events[0]  # echo: the prompt comes first
        plain = await http.post(f"{url}/v1/completions", headers=auth(), json={
            "model": GPT, "prompt": ["One prompt."]})
        assert plain.json()["choices"][0]["text"] == "Once upon a time"
        assert world.paths(world.openai, "/v1/chat/completions")[-1].body["max_tokens"] == 16
        for field, value in (("suffix", "x"), ("logprobs", 2), ("best_of", 3),
                             ("prompt", ["a", "b"]), ("prompt", [1, 2, 3])):
            refused = await http.post(f"{url}/v1/completions", headers=auth(), json={
                "model": GPT, "prompt": "p", field: value})
            assert refused.status_code == 400, (field, refused.text)
            assert refused.json()["error"]["param"] == field
