"""Request validation: what is rejected (400, with the field in ``param``) and what passes."""

from __future__ import annotations

from typing import Any

import pytest

from ailb.errors import InvalidRequest
from ailb.pipeline.chat_parse import decode_json, parse_chat

MSG = [{"role": "user", "content": "hi"}]


def test_unknown_fields_pass_through_untouched() -> None:
    body = {"model": "m", "messages": MSG, "tools": [{"type": "function"}], "seed": 7,
            "response_format": {"type": "json_object"}, "brand_new_param": {"x": 1}}
    req = parse_chat(body, "rid")
    assert req.body is body
    assert (req.model, req.stream, req.include_usage, req.max_tokens) == ("m", False, False, None)


def test_stream_options_and_token_limits() -> None:
    req = parse_chat({"model": "m", "messages": MSG, "stream": True,
                      "stream_options": {"include_usage": True}, "max_tokens": 50,
                      "max_completion_tokens": 20}, "rid")
    assert req.stream and req.include_usage
    assert req.max_tokens == 20


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": MSG}, "model"),
        ({"model": 3, "messages": MSG}, "model"),
        ({"model": "m"}, "messages"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": "hi"}, "messages"),
        ({"model": "m", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "m", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
        ({"model": "m", "messages": MSG, "stream": "yes"}, "stream"),
        ({"model": "m", "messages": MSG, "stream_options": {"include_usage": True}},
         "stream_options"),
        ({"model": "m", "messages": MSG, "stream": True,
          "stream_options": {"include_usage": 1}}, "stream_options.include_usage"),
        ({"model": "m", "messages": MSG, "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "messages": MSG, "max_tokens": True}, "max_tokens"),
        ({"model": "m", "messages": MSG, "temperature": 3}, "temperature"),
        ({"model": "m", "messages": MSG, "top_p": "0.5"}, "top_p"),
        ({"model": "m", "messages": MSG, "n": 0}, "n"),
    ],
)
def test_bad_fields_are_named(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_chat(body, "rid")
    assert info.value.param == param
    assert info.value.status == 400


@pytest.mark.parametrize("data", [b"{not json", b"[1, 2]", b"\xff\xfe", b""])
def test_body_must_be_a_json_object(data: bytes) -> None:
    with pytest.raises(InvalidRequest):
        decode_json(data)


@pytest.mark.parametrize("data", [
    b'{"model": "m", "messages": [{"role": ["user"], "content": "x"}]}',
    b'{"model": "m", "messages": [{"role": {"a": 1}, "content": "x"}]}',
])
def test_unhashable_roles_are_a_400(data: bytes) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_chat(decode_json(data), "rid")
    assert info.value.param == "messages[0].role"


@pytest.mark.parametrize("data", [
    b"[" * 200_000 + b"]" * 200_000,  # deeper than the parser's recursion limit
    b'{"model": "m", "messages": [], "logit_bias": {"1": NaN}}',
    b'{"model": "m", "temperature": Infinity}',
])
def test_hostile_json_is_a_400(data: bytes) -> None:
    with pytest.raises(InvalidRequest):
        decode_json(data)
