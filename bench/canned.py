"""Canned OpenAI-wire responses served by the fake upstream (nginx or the Python fallback)."""

from __future__ import annotations

import json
from typing import Any, Final

STREAM_CONTENT_CHUNKS: Final = 20
STREAM_LONG_CHUNKS: Final = 200  # the long stream of the per-event CPU row (stream_cost.py)
PACED_GAP_MS: Final = 20.0  # between the events of the capacity row's streams (capacity.py)
MODEL: Final = "bench-model"
CREATED: Final = 1_700_000_000

def _usage(chunks: int = STREAM_CONTENT_CHUNKS) -> dict[str, int]:
    return {"prompt_tokens": 9, "completion_tokens": chunks, "total_tokens": 9 + chunks}


_USAGE: Final = _usage()


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def chat_completion_json() -> str:
    """One non-streaming ``chat.completion`` object."""
    return _dumps(
        {
            "id": "chatcmpl-bench0001",
            "object": "chat.completion",
            "created": CREATED,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": _USAGE,
            "system_fingerprint": "fp_bench",
        }
    )


def _chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> str:
    obj: dict[str, Any] = {
        "id": "chatcmpl-bench0002",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": MODEL,
        "system_fingerprint": "fp_bench",
        "choices": choices,
    }
    if usage is not None:
        obj["usage"] = usage
    return _dumps(obj)


def stream_events(chunks: int = STREAM_CONTENT_CHUNKS) -> list[str]:
    """The SSE events of one stream, each ``data: ...\\n\\n``.

    ``chunks`` content chunks (the first carries the role, the last the
    finish_reason), then a usage chunk with ``"choices": []``, then ``data: [DONE]``.
    """
    events: list[str] = []
    for i in range(chunks):
        delta: dict[str, str] = {"content": f"tok{i} "}
        if i == 0:
            delta["role"] = "assistant"
        last = i == chunks - 1
        choice = {"index": 0, "delta": delta, "logprobs": None,
                  "finish_reason": "stop" if last else None}
        events.append(f"data: {_chunk([choice])}\n\n")
    events.append(f"data: {_chunk([], usage=_usage(chunks))}\n\n")
    events.append("data: [DONE]\n\n")
    return events


def models_json() -> str:
    return _dumps(
        {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": CREATED, "owned_by": "bench"}
                for m in (MODEL, "bench-stream")
            ],
        }
    )


def nginx_quote(text: str) -> str:
    """``text`` as a single-quoted nginx string (newlines as ``\\n``); refuses ``$``."""
    if "$" in text or "\\" in text:
        raise ValueError("canned text must not contain '$' or backslashes")
    return "'" + text.replace("'", "\\'").replace("\n", "\\n") + "'"
