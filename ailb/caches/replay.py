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
from typing import Any

from ailb.memory.turns import AnswerAccumulator
from ailb.model import StreamChunk, Usage


def _chunk(base: Mapping[str, Any], choices: list[dict[str, Any]],
           usage: Mapping[str, Any] | None = None) -> str:
    payload: dict[str, Any] = {**base, "choices": choices}
    if usage is not None:
        payload["usage"] = usage
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def replay_chunks(completion: Mapping[str, Any]) -> list[StreamChunk]:
    """The ``chat.completion.chunk`` stream of a cached ``chat.completion`` (one choice).
    Cached answers cost nothing, and their usage chunk says what the original call used."""
    base = {"id": completion.get("id", ""), "object": "chat.completion.chunk",
            "created": completion.get("created", 0), "model": completion.get("model", "")}
    choices = completion.get("choices") or [{}]
    choice: Mapping[str, Any] = choices[0] if isinstance(choices[0], Mapping) else {}
    message: Mapping[str, Any] = choice.get("message") or {}
    if not isinstance(message, Mapping):
        message = {}
    delta: dict[str, Any] = {"role": "assistant", "content": message.get("content")}
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
    """Rebuilds the ``chat.completion`` of a stream from its chunks (first choice)."""

    __slots__ = ("_answer", "_base", "_finish", "_usage")

    def __init__(self) -> None:
        self._answer = AnswerAccumulator()
        self._base: dict[str, Any] | None = None
        self._finish: str | None = None
        self._usage: Usage | None = None

    def add(self, chunk: StreamChunk, parsed: Mapping[str, Any]) -> None:
        """One chunk, with its JSON already parsed."""
        if self._base is None:
            self._base = {"id": parsed.get("id", ""), "created": parsed.get("created", 0),
                          "model": parsed.get("model", "")}
        if chunk.usage is not None:
            self._usage = chunk.usage
        for choice in parsed.get("choices") or []:
            if isinstance(choice, Mapping) and choice.get("index", 0) == 0 and \
                    choice.get("finish_reason"):
                self._finish = str(choice["finish_reason"])
        self._answer.add(parsed)

    def message(self) -> dict[str, Any]:
        """The assistant message so far (for memory: a stream that ended without a finish
        reason is still a turn)."""
        return self._answer.message()

    def completion(self) -> dict[str, Any] | None:
        """The answer, or None when the stream did not finish (no finish reason seen)."""
        if self._base is None or self._finish is None:
            return None
        body: dict[str, Any] = {
            **self._base, "object": "chat.completion",
            "choices": [{"index": 0, "message": self._answer.message(),
                         "finish_reason": self._finish}]}
        if self._usage is not None:
            body["usage"] = self._usage.to_openai()
        return body
