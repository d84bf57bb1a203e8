"""A whole answer as a stream, and a stream as a whole answer. Pure.

The response cache keeps ``chat.completion`` objects. A streamed request that hits it is
answered with :func:`replay_chunks` (the content in one chunk, the finish reason, then the
usage chunk); a streamed request that misses it is recorded by :class:`StreamRecorder`, which
rebuilds the ``chat.completion`` once the stream ended cleanly, so streamed and non-streamed
requests share one entry.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from ailb.memory.turns import AnswerAccumulator
from ailb.model import StreamChunk, Usage


def _chunk(base: Mapping[str, Any], choices: list[dict[str, Any]],
           usage: Mapping[str, Any] | None = None) -> str:
    payload: dict[str, Any] = {**base, "choices": choices}
    if usage is not None:
        payload["usage"] = usage
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


# What the recorder and the replay carry whole; an answer with anything else that is not empty
# (logprobs, audio, reasoning fields of some providers...) is neither recorded nor replayed.
_MESSAGE: Final = frozenset({"role", "content", "tool_calls", "refusal"})
_CHOICE: Final = frozenset({"index", "message", "delta", "finish_reason", "logprobs"})
_ENVELOPE: Final = frozenset({"id", "object", "created", "model", "choices", "usage",
                              "system_fingerprint", "service_tier",
                              "obfuscation"})  # OpenAI's random padding of stream chunks


def _only(value: Mapping[str, Any], carried: frozenset[str]) -> bool:
    """Whether every field of ``value`` is carried, or empty (``"annotations": []``)."""
    return all(name in carried or not field for name, field in value.items())


def _plain(envelope: Mapping[str, Any], part: str) -> bool:
    """Whether a completion or chunk holds only what the cache carries whole."""
    if not _only(envelope, _ENVELOPE):
        return False
    for choice in envelope.get("choices") or []:
        if not isinstance(choice, Mapping) or not _only(choice, _CHOICE) or \
                choice.get("logprobs"):
            return False
        message = choice.get(part)
        if message is not None and (not isinstance(message, Mapping)
                                    or not _only(message, _MESSAGE)):
            return False
    return True


def replayable(completion: Mapping[str, Any]) -> bool:
    """Whether :func:`replay_chunks` says all of ``completion`` (one choice, nothing but
    content, tool calls and refusal)."""
    choices = completion.get("choices")
    return isinstance(choices, list) and len(choices) == 1 and _plain(completion, "message")


def replay_chunks(completion: Mapping[str, Any]) -> list[StreamChunk]:
    """The ``chat.completion.chunk`` stream of a cached ``chat.completion`` (one choice).
    Cached answers cost nothing, and their usage chunk says what the original call used."""
    base = {"id": completion.get("id", ""), "object": "chat.completion.chunk",
            "created": completion.get("created", 0), "model": completion.get("model", "")}
    if completion.get("system_fingerprint"):
        base["system_fingerprint"] = completion["system_fingerprint"]
    choices = completion.get("choices") or [{}]
    choice: Mapping[str, Any] = choices[0] if isinstance(choices[0], Mapping) else {}
    message: Mapping[str, Any] = choice.get("message") or {}
    if not isinstance(message, Mapping):
        message = {}
    delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
    if message.get("refusal"):
        delta["refusal"] = message["refusal"]
    calls = message.get("tool_calls")
    if isinstance(calls, list) and calls:
        delta["tool_calls"] = [{**call, "index": i} for i, call in enumerate(calls)
                               if isinstance(call, Mapping)]
    chunks = [
        StreamChunk(_chunk(base, [{"index": 0, "delta": delta, "finish_reason": None}])),
        StreamChunk(_chunk(base, [{"index": 0, "delta": {},
                                   "finish_reason": choice.get("finish_reason") or "stop"}])),
    ]
    usage = Usage.from_openai(completion.get("usage"))
    if usage is not None:
        chunks.append(StreamChunk(_chunk(base, [], usage.to_openai()), usage=usage,
                                  usage_only=True))
    return chunks


class StreamRecorder:
    """Rebuilds the ``chat.completion`` of a stream from its chunks (first choice). A stream
    with anything the cache does not carry whole (another choice, logprobs, fields of a
    provider's own) gives no completion."""

    __slots__ = ("_answer", "_base", "_finish", "_plain", "_refusal", "_usage")

    def __init__(self) -> None:
        self._answer = AnswerAccumulator()
        self._base: dict[str, Any] | None = None
        self._finish: str | None = None
        self._usage: Usage | None = None
        self._refusal: list[str] = []
        self._plain = True

    def add(self, chunk: StreamChunk, parsed: Mapping[str, Any]) -> None:
        """One chunk, with its JSON already parsed."""
        if self._base is None:
            self._base = {"id": parsed.get("id", ""), "created": parsed.get("created", 0),
                          "model": parsed.get("model", "")}
        if parsed.get("system_fingerprint"):
            self._base["system_fingerprint"] = parsed["system_fingerprint"]
        if chunk.usage is not None:
            self._usage = chunk.usage
        self._plain = self._plain and _plain(parsed, "delta")
        for choice in parsed.get("choices") or []:
            if not isinstance(choice, Mapping):
                continue
            if choice.get("index", 0) != 0:
                self._plain = False
            if choice.get("finish_reason"):
                self._finish = str(choice["finish_reason"])
            delta = choice.get("delta")
            if isinstance(delta, Mapping) and isinstance(delta.get("refusal"), str):
                self._refusal.append(delta["refusal"])
        self._answer.add(parsed)

    def message(self) -> dict[str, Any]:
        """The assistant message so far (for memory: a stream that ended without a finish
        reason is still a turn)."""
        return self._answer.message()

    def completion(self) -> dict[str, Any] | None:
        """The answer, or None when the stream did not finish (no finish reason seen)."""
        if self._base is None or self._finish is None or not self._plain:
            return None
        message = self._answer.message()
        if self._refusal:
            message["refusal"] = "".join(self._refusal)
        body: dict[str, Any] = {
            **self._base, "object": "chat.completion",
            "choices": [{"index": 0, "message": message, "finish_reason": self._finish}]}
        if self._usage is not None:
            body["usage"] = self._usage.to_openai()
        return body
