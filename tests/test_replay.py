"""The response cache's stream recorder and replay. Pure: chunks in, completions out."""

from __future__ import annotations

import json
from typing import Any

from ailb.caches.replay import StreamRecorder, replay_chunks, replayable
from ailb.model import StreamChunk, Usage

BASE = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 7, "model": "m"}


def chunk(choices: list[dict[str, Any]], **extra: Any) -> StreamChunk:
    payload = {**BASE, "choices": choices, **extra}
    usage = Usage.from_openai(extra.get("usage"))
    return StreamChunk(json.dumps(payload), usage=usage, usage_only=not choices)


def record(chunks: list[StreamChunk]) -> dict[str, Any] | None:
    recorder = StreamRecorder()
    for c in chunks:
        recorder.add(c, json.loads(c.data))
    return recorder.completion()


STREAM = [
    chunk([{"index": 0, "delta": {"role": "assistant", "content": "Hel"},
            "finish_reason": None, "logprobs": None}]),
    chunk([{"index": 0, "delta": {"content": "lo"}, "finish_reason": None}],
          system_fingerprint="fp_1"),
    chunk([{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                                  "function": {"name": "f", "arguments": "{}"}}]},
            "finish_reason": "tool_calls"}]),
    chunk([], usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}),
]


def test_a_stream_is_recorded_and_replayed_whole() -> None:
    completion = record(STREAM)
    assert completion is not None and replayable(completion)
    message = completion["choices"][0]["message"]
    assert message["content"] == "Hello" and message["tool_calls"][0]["id"] == "call_1"
    assert completion["choices"][0]["finish_reason"] == "tool_calls"
    assert completion["system_fingerprint"] == "fp_1"
    assert completion["usage"]["total_tokens"] == 5
    again = record(replay_chunks(completion))  # replaying it records the same answer
    assert again == completion


def test_a_refusal_survives_both_ways() -> None:
    refused = [chunk([{"index": 0, "delta": {"role": "assistant", "refusal": "No"}}]),
               chunk([{"index": 0, "delta": {"refusal": "pe."}, "finish_reason": "stop"}])]
    completion = record(refused)
    assert completion is not None and completion["choices"][0]["message"]["refusal"] == "Nope."
    assert record(replay_chunks(completion)) == completion


def test_what_the_cache_cannot_carry_whole_is_not_recorded() -> None:
    with_logprobs = [chunk([{"index": 0, "delta": {"content": "x"}, "finish_reason": "stop",
                             "logprobs": {"content": []}}])]
    two_choices = [chunk([{"index": 1, "delta": {"content": "x"}, "finish_reason": "stop"}])]
    own_field = [chunk([{"index": 0, "delta": {"content": "x", "reasoning_content": "hm"},
                         "finish_reason": "stop"}])]
    unfinished = STREAM[:2]
    for stream in (with_logprobs, two_choices, own_field, unfinished):
        assert record(stream) is None


def test_only_plain_answers_are_replayed_as_streams() -> None:
    plain = {**BASE, "object": "chat.completion", "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop",
         "logprobs": None}]}
    assert replayable(plain)
    with_logprobs = {**plain, "choices": [{**plain["choices"][0], "logprobs": {"content": []}}]}
    with_audio = {**plain, "choices": [{**plain["choices"][0], "message": {
        "role": "assistant", "content": None, "audio": {"id": "a"}}}]}
    assert not replayable(with_logprobs) and not replayable(with_audio)
    assert not replayable({**plain, "choices": plain["choices"] * 2})
