"""Pure translation between OpenAI's chat format and Anthropic's and Ollama's wire formats."""

from __future__ import annotations

import json
from typing import Any

import pytest

from ailb.errors import InvalidRequest, UpstreamStatusError
from ailb.pipeline.chat_parse import parse_chat
from ailb.providers.anthropic_answer import from_anthropic
from ailb.providers.anthropic_stream import AnthropicStreamTranslator
from ailb.providers.anthropic_wire import to_anthropic
from ailb.providers.ollama import NDJSONLines, OllamaStreamTranslator
from ailb.providers.ollama_wire import from_ollama, to_ollama

ARGS = '{"city": "Paris",  "units":"metric"}'  # odd spacing must survive streams byte for byte
TOOLS = [{"type": "function", "function": {"name": "weather", "description": "Look it up",
                                           "parameters": {"type": "object"}}}]
CONVERSATION: list[dict[str, Any]] = [
    {"role": "system", "content": "Be brief."},
    {"role": "developer", "content": [{"type": "text", "text": "Use metric."}]},
    {"role": "user", "content": "Weather in Paris and Rome?"},
    {"role": "user", "content": [
        {"type": "text", "text": "Here is a map."},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "image_url", "image_url": {"url": "https://example.com/map.jpg"}}]},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": ARGS}},
        {"id": "call_2", "type": "function",
         "function": {"name": "weather", "arguments": '{"city":"Rome"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
    {"role": "tool", "tool_call_id": "call_2", "content": "24C"},
    {"role": "user", "content": "Thanks"},
]


def chat(**body: Any) -> Any:
    return parse_chat({"model": "public", "messages": CONVERSATION, **body}, "rid")


def test_openai_to_anthropic_request() -> None:
    out = to_anthropic(chat(tools=TOOLS, tool_choice="required", stop="END", user="u-9",
                            temperature=1.5, top_p=0.9, parallel_tool_calls=False),
                       "claude-sonnet-4-5")
    assert out["system"] == "Be brief.\n\nUse metric."
    assert out["max_tokens"] == 8192  # defaulted per model
    assert out["stop_sequences"] == ["END"]
    assert out["metadata"] == {"user_id": "u-9"}
    assert out["temperature"] == 1.0 and out["top_p"] == 0.9
    assert out["tools"] == [{"name": "weather", "description": "Look it up",
                             "input_schema": {"type": "object"}}]
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    roles = [t["role"] for t in out["messages"]]
    assert roles == ["user", "assistant", "user"]  # same-role turns merged
    first, assistant, results = out["messages"]
    assert [b["type"] for b in first["content"]] == ["text", "text", "image", "image"]
    assert first["content"][2]["source"] == {"type": "base64", "media_type": "image/png",
                                             "data": "iVBORw0KGgo="}
    assert first["content"][3]["source"] == {"type": "url", "url": "https://example.com/map.jpg"}
    assert assistant["content"] == [
        {"type": "tool_use", "id": "call_1", "name": "weather",
         "input": {"city": "Paris", "units": "metric"}},
        {"type": "tool_use", "id": "call_2", "name": "weather", "input": {"city": "Rome"}}]
    assert results["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "24C"},
        {"type": "text", "text": "Thanks"}]


@pytest.mark.parametrize(("choice", "expected"), [
    ("auto", {"type": "auto"}), ("none", {"type": "none"}),
    ({"type": "function", "function": {"name": "weather"}}, {"type": "tool", "name": "weather"}),
])
def test_tool_choice_mapping(choice: Any, expected: dict[str, Any]) -> None:
    assert to_anthropic(chat(tools=TOOLS, tool_choice=choice), "m")["tool_choice"] == expected


def test_bad_tool_arguments_are_a_400() -> None:
    messages = [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{oops"}}]}]
    with pytest.raises(InvalidRequest) as info:
        to_anthropic(parse_chat({"model": "m", "messages": messages}, "r"), "m")
    assert info.value.param == "messages[0].tool_calls[0].function.arguments"


def test_anthropic_message_to_openai() -> None:
    message = {
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
        "content": [{"type": "text", "text": "Checking."},
                    {"type": "tool_use", "id": "toolu_1", "name": "weather",
                     "input": {"city": "Paris"}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100,
                  "cache_creation_input_tokens": 20},
    }
    out = from_anthropic(message, 123)
    choice = out["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Checking."
    assert choice["message"]["tool_calls"] == [{"id": "toolu_1", "type": "function",
                                                "function": {"name": "weather",
                                                             "arguments": '{"city":"Paris"}'}}]
    assert out["usage"] == {"prompt_tokens": 130, "completion_tokens": 5, "total_tokens": 135,
                            "prompt_tokens_details": {"cached_tokens": 100},
                            "cache_creation_input_tokens": 20}
    for stop, finish in [("end_turn", "stop"), ("stop_sequence", "stop"),
                         ("max_tokens", "length")]:
        assert from_anthropic({**message, "stop_reason": stop}, 1)["choices"][0][
            "finish_reason"] == finish


def _anthropic_events() -> list[tuple[str, dict[str, Any]]]:
    pieces = [ARGS[:7], ARGS[7:20], ARGS[20:]]
    return [
        ("message_start", {"type": "message_start", "message": {
            "id": "msg_9", "model": "claude-x", "usage": {"input_tokens": 12, "output_tokens": 1,
                                                          "cache_read_input_tokens": 4}}}),
        ("ping", {"type": "ping"}),
        ("content_block_start", {"type": "content_block_start", "index": 0,
                                 "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 0,
                                 "delta": {"type": "text_delta", "text": "Let me check."}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 0}),
        ("content_block_start", {"type": "content_block_start", "index": 1, "content_block": {
            "type": "tool_use", "id": "toolu_1", "name": "weather", "input": {}}}),
        *[("content_block_delta", {"type": "content_block_delta", "index": 1,
                                   "delta": {"type": "input_json_delta", "partial_json": p}})
          for p in pieces],
        ("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ("content_block_start", {"type": "content_block_start", "index": 2, "content_block": {
            "type": "tool_use", "id": "toolu_2", "name": "weather", "input": {}}}),
        ("content_block_delta", {"type": "content_block_delta", "index": 2, "delta": {
            "type": "input_json_delta", "partial_json": '{"city":"Rome"}'}}),
        ("content_block_stop", {"type": "content_block_stop", "index": 2}),
        ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "tool_use"},
                           "usage": {"output_tokens": 40}}),
        ("message_stop", {"type": "message_stop"}),
    ]


def test_anthropic_stream_to_openai_chunks() -> None:
    translator = AnthropicStreamTranslator("fallback", "claude-x", 1)
    chunks = [c for name, event in _anthropic_events()
              for c in translator.feed(name, json.dumps(event))]
    assert translator.done
    payloads = [json.loads(c.data) for c in chunks]
    assert payloads[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(p["id"] == "msg_9" for p in payloads)
    text = "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads
                   if p["choices"])
    assert text == "Let me check."
    calls: dict[int, dict[str, str]] = {}
    argument_deltas = 0
    for p in payloads:
        for call in (p["choices"][0]["delta"].get("tool_calls") or []) if p["choices"] else []:
            slot = calls.setdefault(call["index"], {"id": "", "name": "", "arguments": ""})
            slot["id"] += call.get("id") or ""
            slot["name"] += call.get("function", {}).get("name") or ""
            slot["arguments"] += call.get("function", {}).get("arguments") or ""
            argument_deltas += bool(call.get("function", {}).get("arguments"))
    assert calls == {0: {"id": "toolu_1", "name": "weather", "arguments": ARGS},
                     1: {"id": "toolu_2", "name": "weather", "arguments": '{"city":"Rome"}'}}
    assert argument_deltas == 4  # streamed as they arrived, not collapsed at the end
    assert payloads[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1].usage_only and payloads[-1]["choices"] == []
    assert payloads[-1]["usage"]["prompt_tokens"] == 16
    assert payloads[-1]["usage"]["completion_tokens"] == 40
    assert payloads[-1]["usage"]["prompt_tokens_details"]["cached_tokens"] == 4


def test_anthropic_stream_error_event() -> None:
    translator = AnthropicStreamTranslator("f", "m", 1)
    with pytest.raises(UpstreamStatusError) as info:
        translator.feed("error", json.dumps({"type": "error", "error": {
            "type": "overloaded_error", "message": "Overloaded"}}))
    assert (info.value.status, info.value.message) == (503, "Overloaded")


def test_openai_to_ollama_request() -> None:
    messages = [m for m in CONVERSATION if not (m["role"] == "user" and
                                                isinstance(m["content"], list))]
    messages.insert(3, {"role": "user", "content": [
        {"type": "text", "text": "A map"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}]})
    out = to_ollama(parse_chat({"model": "p", "messages": messages, "stream": True,
                                "temperature": 0.2, "seed": 3, "stop": ["x"], "max_tokens": 9,
                                "tools": TOOLS, "response_format": {"type": "json_object"}},
                               "r"), "llama3")
    assert out["model"] == "llama3" and out["stream"] is True
    assert out["options"] == {"temperature": 0.2, "seed": 3, "stop": ["x"], "num_predict": 9}
    assert out["format"] == "json" and out["tools"] == TOOLS
    assert out["messages"][1]["role"] == "system"  # developer
    assert out["messages"][3] == {"role": "user", "content": "A map", "images": ["AAAA"]}
    assistant = next(m for m in out["messages"] if m["role"] == "assistant")
    assert assistant["tool_calls"][0] == {"function": {"name": "weather", "arguments": {
        "city": "Paris", "units": "metric"}}}
    with pytest.raises(InvalidRequest):
        to_ollama(chat(), "llama3")  # an http image URL: Ollama cannot fetch it


def test_ollama_answer_and_stream() -> None:
    answer = {"model": "llama3", "message": {"role": "assistant", "content": "", "tool_calls": [
        {"function": {"name": "weather", "arguments": {"city": "Paris"}}}]},
        "done": True, "done_reason": "stop", "prompt_eval_count": 7, "eval_count": 3}
    out = from_ollama(answer, "rid", "llama3", 1)
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert out["choices"][0]["message"]["tool_calls"][0]["function"] == {
        "name": "weather", "arguments": '{"city":"Paris"}'}
    assert out["usage"]["prompt_tokens"] == 7 and out["usage"]["completion_tokens"] == 3
    lines = NDJSONLines()
    raw = b"".join(json.dumps(x).encode() + b"\n" for x in [
        {"message": {"role": "assistant", "content": "Hel"}, "done": False},
        {"message": {"role": "assistant", "content": "lo"}, "done": False},
        {"message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "length",
         "prompt_eval_count": 5, "eval_count": 2}])
    translator = OllamaStreamTranslator("rid", "llama3", 1)
    chunks = [c for piece in (raw[:10], raw[10:77], raw[77:]) for line in lines.feed(piece)
              for c in translator.feed(line)]
    assert translator.done
    payloads = [json.loads(c.data) for c in chunks]
    assert "".join(p["choices"][0]["delta"].get("content") or "" for p in payloads
                   if p["choices"]) == "Hello"
    assert payloads[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 7
    with pytest.raises(UpstreamStatusError):
        OllamaStreamTranslator("r", "m", 1).feed(b'{"error": "model vanished"}')
