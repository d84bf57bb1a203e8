"""OpenAI chat chunks -> the Responses API's stream events, for ``POST /v1/responses`` with
``stream: true``. Pure (a :class:`~ailb.http_api.sse.StreamEncoder`).

On the first chunk: ``response.created`` and ``response.in_progress``. A run of text is a
``message`` item: ``response.output_item.added``, ``response.content_part.added``, one
``response.output_text.delta`` per chunk, then ``response.output_text.done``,
``response.content_part.done`` and ``response.output_item.done`` when the next item starts or
the stream ends. Each tool call is a ``function_call`` item fed by
``response.function_call_arguments.delta`` and closed by ``.done``. At the end:
``response.completed`` with the whole response (:meth:`ResponsesEncoder.final`, which the door
stores before that event is sent). A failure after the start is ``response.failed``.
Every event carries its ``sequence_number``.
"""

from __future__ import annotations

import json
from typing import Any

from ailb.errors import GatewayError
from ailb.model import StreamChunk, Usage
from ailb.responses.output import Draft, call_item, message_item, response_object, text_part

_ERROR_CODES = {429: "rate_limit_exceeded"}


class ResponsesEncoder:
    def __init__(self, draft: Draft) -> None:
        self._draft = draft
        self._suffix = draft.id.removeprefix("resp_")
        self._seq = 0
        self._started = False
        self._items: list[dict[str, Any]] = []  # output items so far, finished or not
        self._open_text: int | None = None  # output index of the message item being written
        self._calls: dict[int, int] = {}  # chat tool call index -> output index (open ones)
        self._usage: Usage | None = None
        self._finish: str | None = None
        self._final: dict[str, Any] | None = None

    def _event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return (f"event: {kind}\ndata: "
                f"{json.dumps(payload, separators=(',', ':'), ensure_ascii=False)}\n\n").encode()

    def _start(self) -> bytes:
        self._started = True
        snapshot = response_object(self._draft, [], None, "in_progress")
        return (self._event("response.created", response=snapshot)
                + self._event("response.in_progress", response=snapshot))

    def _close_text(self) -> bytes:
        if self._open_text is None:
            return b""
        index, self._open_text = self._open_text, None
        item = self._items[index]
        text = item["content"][0]["text"]
        item["status"] = "completed"
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        return (self._event("response.output_text.done", **where, text=text, logprobs=[])
                + self._event("response.content_part.done", **where, part=text_part(text))
                + self._event("response.output_item.done", output_index=index, item=item))

    def _close_calls(self) -> bytes:
        out = b""
        for index in sorted(self._calls.values()):
            item = self._items[index]
            item["status"] = "completed"
            out += self._event("response.function_call_arguments.done", item_id=item["id"],
                               output_index=index, name=item["name"],
                               arguments=item["arguments"])
            out += self._event("response.output_item.done", output_index=index, item=item)
        self._calls.clear()
        return out

    def _text(self, text: str) -> bytes:
        out = b""
        if self._open_text is None:
            out += self._close_calls()
            index = len(self._items)
            item = message_item(f"msg_{self._suffix}_{index}", "", "in_progress")
            out += self._event("response.output_item.added", output_index=index, item=item)
            item["content"] = [text_part("")]
            out += self._event("response.content_part.added", item_id=item["id"],
                               output_index=index, content_index=0, part=text_part(""))
            self._items.append(item)
            self._open_text = index
        index = self._open_text
        item = self._items[index]
        item["content"][0]["text"] += text
        return out + self._event("response.output_text.delta", item_id=item["id"],
                                 output_index=index, content_index=0, delta=text, logprobs=[])

    def _call(self, call: dict[str, Any]) -> bytes:
        out = b""
        position = int(call.get("index", 0))
        function = call.get("function") or {}
        if position not in self._calls:
            out += self._close_text()
            index = len(self._items)
            item = call_item(f"fc_{self._suffix}_{index}",
                             str(call.get("id") or f"call_{self._suffix}_{index}"),
                             str(function.get("name") or ""), "", "in_progress")
            out += self._event("response.output_item.added", output_index=index,
                               item=dict(item))
            self._items.append(item)
            self._calls[position] = index
        index = self._calls[position]
        arguments = function.get("arguments")
        if not arguments:
            return out
        item = self._items[index]
        item["arguments"] += arguments
        return out + self._event("response.function_call_arguments.delta", item_id=item["id"],
                                 output_index=index, delta=arguments)

    def chunk(self, chunk: StreamChunk) -> bytes:
        out = b"" if self._started else self._start()
        if chunk.usage is not None:
            self._usage = chunk.usage
        payload = json.loads(chunk.data)
        for choice in (payload.get("choices") or [])[:1]:
            delta = choice.get("delta") or {}
            if delta.get("content"):
                out += self._text(str(delta["content"]))
            for call in delta.get("tool_calls") or []:
                out += self._call(call)
            if choice.get("finish_reason"):
                self._finish = str(choice["finish_reason"])
        return out

    def final(self) -> dict[str, Any]:
        """The whole response as the stream ends it (each item completed). Idempotent."""
        if self._final is None:
            items = [{**item, "status": "completed"} for item in self._items]
            self._final = response_object(self._draft, items, self._usage, "completed",
                                          self._finish)
        return self._final

    def end(self) -> bytes:
        out = (b"" if self._started else self._start()) + self._close_text() \
            + self._close_calls()
        return out + self._event("response.completed", response=self.final())

    def error(self, exc: GatewayError) -> bytes:
        out = b"" if self._started else self._start()
        error = {"code": _ERROR_CODES.get(exc.status, "server_error"), "message": exc.message}
        failed = response_object(self._draft, self._items, None, "failed", error=error)
        return out + self._event("response.failed", response=failed)
