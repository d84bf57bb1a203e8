"""OpenAI chunks -> Anthropic's named stream events, for ``POST /v1/messages`` with streaming.

``message_start`` (and a ``ping``) on the first chunk; each run of text is a ``text`` block and
each tool call a ``tool_use`` block, opened with ``content_block_start``, fed with
``text_delta`` / ``input_json_delta`` (argument fragments relayed as they arrive) and closed with
``content_block_stop``; at the end ``message_delta`` (stop reason and usage) and ``message_stop``.
A failure after the start is an ``error`` event, and the stream ends without ``message_stop``.
"""

from __future__ import annotations

import json
from typing import Any

from ailb.errors import GatewayError
from ailb.http_api.anthropic_ingress import STOP_REASONS, error_object, usage_object
from ailb.model import StreamChunk, Usage


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return (f"event: {name}\ndata: "
            f"{json.dumps(payload, separators=(',', ':'), ensure_ascii=False)}\n\n").encode()


class AnthropicEncoder:
    def __init__(self, message_id: str, model: str) -> None:
        self._id = message_id
        self._model = model
        self._started = False
        self._block = -1  # index of the open content block, -1 when none is open
        self._block_kind = ""
        self._tool_blocks: dict[int, int] = {}  # OpenAI tool index -> Anthropic block index
        self._stop_reason = "end_turn"
        self._usage: Usage | None = None
        self._native = False

    def _start(self) -> bytes:
        self._started = True
        message: dict[str, Any] = {
            "id": self._id, "type": "message", "role": "assistant", "model": self._model,
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0}}
        return (_event("message_start", {"type": "message_start", "message": message})
                + _event("ping", {"type": "ping"}))

    def _close_block(self) -> bytes:
        if self._block_kind == "":
            return b""
        self._block_kind = ""
        return _event("content_block_stop", {"type": "content_block_stop", "index": self._block})

    def _open_block(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self._block += 1
        self._block_kind = kind
        return out + _event("content_block_start", {"type": "content_block_start",
                                                    "index": self._block,
                                                    "content_block": block})

    def chunk(self, chunk: StreamChunk) -> bytes:
        if chunk.native is not None:  # an Anthropic deployment's own event: relay it
            self._native = True
            return chunk.native
        out = b"" if self._started else self._start()
        if chunk.usage is not None:
            self._usage = chunk.usage
        payload = json.loads(chunk.data)
        for choice in payload.get("choices") or []:
            delta = choice.get("delta") or {}
            text = delta.get("content")
            if text:
                if self._block_kind != "text":
                    out += self._open_block("text", {"type": "text", "text": ""})
                out += _event("content_block_delta", {
                    "type": "content_block_delta", "index": self._block,
                    "delta": {"type": "text_delta", "text": text}})
            for call in delta.get("tool_calls") or []:
                out += self._tool_delta(call)
            if choice.get("finish_reason"):
                self._stop_reason = STOP_REASONS.get(choice["finish_reason"], "end_turn")
        return out

    def _tool_delta(self, call: dict[str, Any]) -> bytes:
        out = b""
        index = int(call.get("index", 0))
        function = call.get("function") or {}
        if index not in self._tool_blocks:
            out += self._open_block("tool_use", {"type": "tool_use", "id": call.get("id"),
                                                 "name": function.get("name"), "input": {}})
            self._tool_blocks[index] = self._block
        arguments = function.get("arguments")
        if arguments:
            out += _event("content_block_delta", {
                "type": "content_block_delta", "index": self._tool_blocks[index],
                "delta": {"type": "input_json_delta", "partial_json": arguments}})
        return out

    def end(self) -> bytes:
        if self._native:
            return b""  # the upstream's own message_stop has been relayed already
        out = (b"" if self._started else self._start()) + self._close_block()
        usage = usage_object(self._usage)
        out += _event("message_delta", {"type": "message_delta",
                                        "delta": {"stop_reason": self._stop_reason,
                                                  "stop_sequence": None},
                                        "usage": usage})
        return out + _event("message_stop", {"type": "message_stop"})

    def error(self, exc: GatewayError) -> bytes:
        return _event("error", error_object(exc))
