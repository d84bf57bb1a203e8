"""Anthropic's stream events -> OpenAI ``chat.completion.chunk`` payloads. Pure, stateful.

Event by event:

* ``message_start``: remember id, model and input usage; emit the role chunk.
* ``content_block_start``: a ``tool_use`` block opens a tool call (its index counts tool blocks
  only, as OpenAI's does) and emits its id and name with empty arguments.
* ``content_block_delta``: ``text_delta`` -> content; ``input_json_delta`` -> that tool call's
  argument fragment, relayed as it arrives so the arguments stay byte-exact.
* ``message_delta``: emit the finish chunk; remember the output usage.
* ``message_stop``: emit the usage chunk (``choices: []``); the stream is complete.
* ``ping`` and unknown events (thinking deltas, ...) emit nothing; ``error`` raises.

With ``answer_tool`` (a ``response_format`` request, see ``anthropic_structured``) that tool's
block is the answer: its ``input_json_delta`` fragments are content deltas, it opens no tool
call, text blocks are left out, and its ``tool_use`` stop reason finishes with ``stop``.
"""

from __future__ import annotations

import json
from typing import Any

from ailb.errors import UpstreamStatusError
from ailb.model import StreamChunk, Usage
from ailb.providers.anthropic_answer import STOP_REASONS, usage_of
from ailb.providers.sse import event_object

ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "overloaded_error": 503,
    "api_error": 502,
}


def _dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class AnthropicStreamTranslator:
    """Feed ``(event name, data JSON)`` pairs; get the OpenAI chunks they make."""

    def __init__(self, fallback_id: str, model: str, created: int,
                 answer_tool: str | None = None) -> None:
        self._id = fallback_id
        self._model = model
        self._created = created
        self._input = Usage()
        self._output_tokens = 0
        self._tool_index: dict[int, int] = {}  # Anthropic block index -> OpenAI tool index
        self._answer_tool = answer_tool
        self._answer_block: int | None = None  # the answer tool's block index, once open
        self.done = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> StreamChunk:
        data = _dump({"id": self._id, "object": "chat.completion.chunk",
                      "created": self._created, "model": self._model,
                      "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                   "finish_reason": finish}],
                      "usage": None})
        return StreamChunk(data)

    def usage(self) -> Usage:
        return Usage(self._input.prompt_tokens, self._output_tokens, self._input.cached_tokens,
                     self._input.cache_write_tokens)

    def feed(self, name: str, data: str) -> list[StreamChunk]:
        """Translate one event. Raises UpstreamStatusError for ``error`` events and
        UpstreamStreamCut for events that are not JSON."""
        event = event_object(data, "Anthropic")
        kind = event.get("type", name)
        if kind == "message_start":
            message = event.get("message") or {}
            self._id = str(message.get("id") or self._id)
            self._model = str(message.get("model") or self._model)
            self._input = usage_of(message.get("usage"))
            self._output_tokens = self._input.completion_tokens
            return [self._chunk({"role": "assistant", "content": "", "refusal": None})]
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            structured = self._answer_tool is not None
            if structured and block.get("type") == "tool_use" and self._answer_block is None \
                    and block.get("name") == self._answer_tool:
                self._answer_block = int(event.get("index", 0))
                return []
            if block.get("type") == "tool_use":
                index = len(self._tool_index)
                self._tool_index[int(event.get("index", 0))] = index
                return [self._chunk({"tool_calls": [{
                    "index": index, "id": block.get("id"), "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""}}]})]
            if block.get("type") == "text" and block.get("text") and not structured:
                return [self._chunk({"content": block["text"]})]
            return []
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            if delta.get("type") == "text_delta" and self._answer_tool is None:
                return [self._chunk({"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta" and self._answer_block is not None \
                    and int(event.get("index", 0)) == self._answer_block:
                fragment = delta.get("partial_json")
                return [self._chunk({"content": fragment})] if fragment else []
            if delta.get("type") == "input_json_delta":
                tool = self._tool_index.get(int(event.get("index", 0)))
                if tool is None or not delta.get("partial_json"):
                    return []
                return [self._chunk({"tool_calls": [{
                    "index": tool, "function": {"arguments": delta["partial_json"]}}]})]
            return []
        if kind == "message_delta":
            usage = event.get("usage") or {}
            if isinstance(usage.get("output_tokens"), int):
                self._output_tokens = usage["output_tokens"]
            stop = (event.get("delta") or {}).get("stop_reason")
            if stop:
                finish = STOP_REASONS.get(stop, "stop")
                if finish == "tool_calls" and self._answer_block is not None \
                        and not self._tool_index:
                    finish = "stop"
                return [self._chunk({}, finish)]
            return []
        if kind == "message_stop":
            self.done = True
            usage = self.usage()
            data = _dump({"id": self._id, "object": "chat.completion.chunk",
                          "created": self._created, "model": self._model, "choices": [],
                          "usage": usage.to_openai()})
            return [StreamChunk(data, usage=usage, usage_only=True)]
        if kind == "error":
            error = event.get("error") or {}
            error_type = str(error.get("type") or "api_error")
            raise UpstreamStatusError(str(error.get("message") or "Anthropic stream error"),
                                      status=ERROR_STATUS.get(error_type, 502),
                                      error_type=error_type)
        return []
