"""Structured output (``response_format``) on Anthropic and Ollama deployments: translated
faithfully (a forced tool / Ollama's ``format``), refused with 400 where it cannot be, never
dropped. Units on the pure translation, then the official openai SDK through the gateway."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
import trio

from ailb.errors import InvalidRequest
from ailb.model import ChatRequest
from ailb.providers.anthropic_answer import from_anthropic
from ailb.providers.anthropic_stream import AnthropicStreamTranslator
from ailb.providers.anthropic_wire import to_anthropic
from ailb.providers.ollama_wire import to_ollama
from tests.conftest import SDKFactory, StartGateway, in_thread
from tests.fakes import anthropic_upstream, ollama_upstream

SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
          "required": ["name", "age"], "additionalProperties": False}
JSON_SCHEMA = {"type": "json_schema",
               "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}}
HI = [{"role": "user", "content": "Who?"}]


def _request(stream: bool = False, **body: Any) -> ChatRequest:
    return ChatRequest(body={"model": "c", "messages": HI, **body}, model="c", stream=stream,
                       include_usage=False, max_tokens=None, request_id="r1")


def test_json_schema_becomes_a_forced_tool() -> None:
    out = to_anthropic(_request(response_format=JSON_SCHEMA), "claude-x")
    assert out["tools"] == [{"name": "person", "input_schema": SCHEMA,
                             "description": out["tools"][0]["description"]}]
    assert out["tool_choice"] == {"type": "tool", "name": "person"}
    obj = to_anthropic(_request(response_format={"type": "json_object"}), "claude-x")
    assert obj["tools"][0]["input_schema"] == {"type": "object"}
    assert obj["tool_choice"] == {"type": "tool", "name": "json_object"}
    assert "tools" not in to_anthropic(_request(response_format={"type": "text"}), "claude-x")


@pytest.mark.parametrize(("body", "param"), [
    ({"response_format": JSON_SCHEMA,
      "tools": [{"type": "function", "function": {"name": "f"}}]}, "response_format"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "n", "schema": {"type": "array"}}}}, "response_format.json_schema.schema"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
    ({"response_format": {"type": "structural_tag"}}, "response_format.type"),
])
def test_what_anthropic_cannot_do_is_a_400(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        to_anthropic(_request(**body), "claude-x")
    assert info.value.param == param


def test_the_answer_tool_input_is_the_content() -> None:
    message = {"id": "msg_1", "type": "message", "model": "claude-x", "stop_reason": "tool_use",
               "content": [{"type": "tool_use", "id": "t1", "name": "person",
                            "input": {"name": "Ada", "age": 36}}],
               "usage": {"input_tokens": 3, "output_tokens": 4}}
    choice = from_anthropic(message, 1, "person")["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == '{"name":"Ada","age":36}'
    assert "tool_calls" not in choice["message"]
    # without the request's format it stays a tool call
    assert from_anthropic(message, 1)["choices"][0]["finish_reason"] == "tool_calls"


def test_a_streamed_answer_tool_is_content_deltas() -> None:
    translator = AnthropicStreamTranslator("id", "claude-x", 1, answer_tool="person")
    events = [
        ("message_start", {"type": "message_start", "message": {"id": "m", "usage": {
            "input_tokens": 3, "output_tokens": 1}}}),
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": "t1", "name": "person", "input": {}}}),
        *[("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {
            "type": "input_json_delta", "partial_json": piece}})
          for piece in ["", '{"name": "Ada",', ' "age": 36}']],
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                           "usage": {"output_tokens": 9}}),
        ("message_stop", {"type": "message_stop"}),
    ]
    chunks = [json.loads(c.data) for name, data in events
              for c in translator.feed(name, json.dumps(data))]
    deltas = [c["choices"][0] for c in chunks if c["choices"]]
    assert "".join(d["delta"].get("content") or "" for d in deltas) == '{"name": "Ada", "age": 36}'
    assert not any("tool_calls" in d["delta"] for d in deltas)
    assert deltas[-1]["finish_reason"] == "stop"


def test_ollama_format() -> None:
    assert to_ollama(_request(response_format=JSON_SCHEMA), "llama")["format"] == SCHEMA
    assert to_ollama(_request(response_format={"type": "json_object"}), "llama")["format"] \
        == "json"
    assert "format" not in to_ollama(_request(response_format={"type": "text"}), "llama")
    for bad in ({"type": "structural_tag"}, {"type": "json_schema"}):
        with pytest.raises(InvalidRequest):
            to_ollama(_request(response_format=bad), "llama")


async def test_the_openai_sdk_gets_structured_output_from_claude_and_ollama(
        nursery: trio.Nursery, start_gateway: StartGateway, sdk: SDKFactory) -> None:
    claude = anthropic_upstream.FakeAnthropic(models=["claude-sonnet-4-5"])
    claude.tool_uses = [{"name": "person", "input_json": '{"name": "Ada", "age": 36}'}]
    llama = ollama_upstream.FakeOllama(models=["llama3"], reply='{"name":"Ada","age":36}')
    running = await start_gateway(deployments=[
        {"name": "an", "type": "anthropic", "api_key": "k",
         "base_url": await anthropic_upstream.start_fake(nursery, claude),
         "models": ["claude-sonnet-4-5"]},
        {"name": "ol", "type": "ollama", "base_url": await ollama_upstream.start_fake(
            nursery, llama), "models": ["llama3"]}])
    client = sdk(running.http_url)

    answer = await in_thread(lambda: client.chat.completions.create(
        model="claude-sonnet-4-5", messages=HI, response_format=JSON_SCHEMA))  # type: ignore
    assert json.loads(answer.choices[0].message.content) == {"name": "Ada", "age": 36}
    assert answer.choices[0].finish_reason == "stop"
    assert not answer.choices[0].message.tool_calls
    sent = claude.requests[-1].body
    assert sent["tool_choice"] == {"type": "tool", "name": "person"}
    assert sent["tools"][0]["input_schema"] == SCHEMA

    def stream() -> tuple[str, list[Any]]:
        chunks = list(client.chat.completions.create(
            model="claude-sonnet-4-5", messages=HI, response_format=JSON_SCHEMA,  # type: ignore
            stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return text, [c.choices[0] for c in chunks if c.choices]

    text, choices = await in_thread(stream)
    assert text == '{"name": "Ada", "age": 36}'  # the input's bytes, relayed as they came
    assert choices[-1].finish_reason == "stop"
    assert not any(c.delta.tool_calls for c in choices)

    answer = await in_thread(lambda: client.chat.completions.create(
        model="llama3", messages=HI, response_format=JSON_SCHEMA))  # type: ignore
    assert json.loads(answer.choices[0].message.content) == {"name": "Ada", "age": 36}
    assert llama.requests[-1].body["format"] == SCHEMA

    with pytest.raises(openai.BadRequestError) as refused:
        await in_thread(lambda: client.chat.completions.create(
            model="claude-sonnet-4-5", messages=HI, response_format=JSON_SCHEMA,  # type: ignore
            tools=[{"type": "function", "function": {"name": "f"}}]))
    assert "response_format" in str(refused.value)
