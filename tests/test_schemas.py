"""The declared shapes, unit by unit: what the official SDKs and common servers send passes;
what no API accepts is refused with the field named. Pure (no I/O)."""

from __future__ import annotations

from typing import Any

import pytest

from ailb.errors import InvalidRequest
from ailb.http_api.anthropic_ingress import to_openai_chat
from ailb.keys.fields import parse_fields
from ailb.pipeline.chat_parse import decode_json, parse_chat
from ailb.pipeline.embeddings_parse import parse_embeddings

HI = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("extra", [
    {"response_format": {"type": "structural_tag", "structures": []}},  # vLLM's own
    {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}}},
    {"metadata": {"a": 1, "b": "x"}},
    {"n": None, "seed": None, "stop": ["a", "b"], "user": "u"},
    {"messages": [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": {"a": 1}}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "ok"}]},
    {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "see"}, {"type": "image_url", "image_url": {"url": "x"}},
        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}]}]},
    {"a_field_of_tomorrow": {"any": ["thing"]}},
])
def test_what_clients_send_passes(extra: dict[str, Any]) -> None:
    body = {"model": "m", "messages": HI, **extra}
    assert parse_chat(body, "r").body is body  # kept as sent


@pytest.mark.parametrize(("extra", "param"), [
    ({"messages": [{"role": "assistant", "tool_calls": 3}]}, "messages[0].tool_calls"),
    ({"max_tokens": 10**400}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"stream": "x"}, "stream"),
    ({"temperature": 2.5}, "temperature"),
    ({"tools": 3}, "tools"),
    ({"messages": [{"role": "robot", "content": "x"}]}, "messages[0].role"),
    ({"session_id": "ticket\n"}, "session_id"),  # "$" must not match before a newline
    ({"rag": {"collection": "docs", "extra": 1}}, "rag.extra"),
])
def test_what_no_api_accepts_is_refused_naming_the_field(extra: dict[str, Any],
                                                         param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_chat({"model": "m", "messages": HI, **extra}, "r")
    assert refused.value.param == param, refused.value.message


@pytest.mark.parametrize("content", [
    [{"type": "tool_result", "tool_use_id": "t", "content": [
        {"type": "search_result", "source": "https://x", "title": "t",
         "content": [{"type": "text", "text": "x"}]}]}],
    [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}],
])
def test_anthropic_blocks_the_sdk_sends_pass(content: list[dict[str, Any]]) -> None:
    body = {"model": "m", "max_tokens": 5, "system": [
        {"type": "text", "text": "s", "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": content}]}
    assert to_openai_chat(body)["model"] == "m"


def test_a_server_tool_error_object_in_an_assistant_turn_passes() -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [*HI, {"role": "assistant", "content": [
        {"type": "web_search_tool_result", "tool_use_id": "s",
         "content": {"type": "web_search_tool_result_error", "error_code": "unavailable"}}]},
        {"role": "user", "content": "and?"}]}
    assert to_openai_chat(body)["messages"][-1]["content"] == "and?"


def test_anthropic_paths_use_dots() -> None:
    with pytest.raises(InvalidRequest) as refused:
        to_openai_chat({"model": "m", "max_tokens": 5, "messages": [
            {"role": "user", "content": 3}]})
    assert refused.value.param == "messages.0.content"


def test_bodies_that_are_not_json_objects() -> None:
    for data, words in ((b"", "empty"), (b"[1]", "JSON object"), (b"{", "parse"),
                        (b'{"a": 1e400}', "Number out of range")):
        with pytest.raises(InvalidRequest) as refused:
            decode_json(data)
        assert words in refused.value.message
    with pytest.raises(InvalidRequest) as refused:
        decode_json(b'{"messages": [{"content": "\\ud800"}]}')
    assert refused.value.param == "messages[0].content"


def test_embeddings_input() -> None:
    assert parse_embeddings({"model": "m", "input": ["a", "b"]}, "r").inputs == ("a", "b")
    for bad, param in (("", "input"), ([], "input"), (["a", 1], "input[1]")):
        with pytest.raises(InvalidRequest) as refused:
            parse_embeddings({"model": "m", "input": bad}, "r")
        assert refused.value.param == param


@pytest.mark.parametrize(("fields", "param"), [
    ({"name": "x", "expires_at": "9999-12-31T23:59:59-14:00"}, "expires_at"),
    ({"name": "x", "expires_at": "0001-01-01T00:00:00+01:00"}, "expires_at"),
    ({"name": "x", "rag_collections": ["docs\n"]}, "rag_collections[0]"),
    ({"name": "x", "rpm_limit": 2**63}, "rpm_limit"),
    ({"name": "x", "unknown": 1}, "unknown"),
])
def test_admin_key_fields_refused(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_fields(fields, creating=True)
    assert refused.value.param == param
