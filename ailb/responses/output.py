"""Chat answers -> Responses API objects. Pure.

A ``chat.completion``'s text becomes a ``message`` output item with one ``output_text`` part,
each tool call a ``function_call`` item (``call_id`` is the chat tool call's id, so the
``function_call_output`` sent back finds it on any provider). Finish reason ``length`` makes the
response ``incomplete`` (``max_output_tokens``); usage is renamed (``input_tokens``,
``output_tokens``, cached tokens under ``input_tokens_details``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ailb.model import Usage


@dataclass(frozen=True, slots=True)
class Draft:
    """What a response object is made of, besides its output and usage."""

    id: str
    created_at: int
    model: str
    request: Mapping[str, Any]  # the Responses request body


def usage_object(usage: Usage | None) -> dict[str, Any]:
    usage = usage or Usage()
    return {"input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens},
            "output_tokens": usage.completion_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.total_tokens}


def message_item(item_id: str, text: str, status: str = "completed") -> dict[str, Any]:
    content = [] if status == "in_progress" else [text_part(text)]
    return {"id": item_id, "type": "message", "role": "assistant", "status": status,
            "content": content}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def call_item(item_id: str, call_id: str, name: str, arguments: str,
              status: str = "completed") -> dict[str, Any]:
    return {"id": item_id, "type": "function_call", "status": status, "call_id": call_id,
            "name": name, "arguments": arguments}


def output_items(completion: Mapping[str, Any], response_id: str) -> list[dict[str, Any]]:
    """The output items of a ``chat.completion`` (its first choice)."""
    choice = (completion.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    suffix = response_id.removeprefix("resp_")
    items: list[dict[str, Any]] = []
    if reply.get("content"):
        items.append(message_item(f"msg_{suffix}", str(reply["content"])))
    for index, call in enumerate(reply.get("tool_calls") or []):
        function = call.get("function") or {}
        items.append(call_item(f"fc_{suffix}_{index}", str(call.get("id") or f"call_{index}"),
                               str(function.get("name") or ""),
                               str(function.get("arguments") or "")))
    return items


def finish_reason(completion: Mapping[str, Any]) -> str | None:
    choice = (completion.get("choices") or [{}])[0]
    reason = choice.get("finish_reason")
    return str(reason) if reason else None


def response_object(draft: Draft, output: Sequence[Mapping[str, Any]], usage: Usage | None,
                    status: str, finish: str | None = None,
                    error: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``response`` object. ``status``: in_progress, completed (incomplete when the answer
    stopped at the token limit), failed."""
    body = draft.request
    incomplete = None
    if status == "completed" and finish == "length":
        status, incomplete = "incomplete", {"reason": "max_output_tokens"}
    text = body.get("text") or {"format": {"type": "text"}}
    tools = [dict(t) for t in body.get("tools") or []]
    return {
        "id": draft.id, "object": "response", "created_at": draft.created_at,
        "status": status, "error": dict(error) if error else None,
        "incomplete_details": incomplete, "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"), "model": draft.model,
        "output": [dict(item) for item in output],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "store": body.get("store", True),
        "temperature": body.get("temperature"), "top_p": body.get("top_p"),
        "text": text, "tool_choice": body.get("tool_choice", "auto"), "tools": tools,
        "truncation": "disabled", "metadata": dict(body.get("metadata") or {}),
        "user": body.get("user"),
        "usage": None if status in ("in_progress", "failed") else usage_object(usage),
    }


def assistant_message(output: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The chat message a response's output stands for (None when it has none), for the
    conversation a continuation starts from."""
    texts = [str(part.get("text") or "") for item in output if item.get("type") == "message"
             for part in item.get("content") or []]
    calls = [{"id": item["call_id"], "type": "function",
              "function": {"name": item["name"], "arguments": item["arguments"]}}
             for item in output if item.get("type") == "function_call"]
    if not texts and not calls:
        return None
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message
