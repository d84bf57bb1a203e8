"""Legacy text completions (``POST /v1/completions``) as chat, and answers back. Pure.

Every provider is answered through chat (no upstream is asked for its own ``/v1/completions``),
so limits, budgets, the cache, memory and failover work the same. Request side:

* ``prompt`` (a string, or a list of one string) -> one user message. Token arrays and
  batches of several prompts are refused (400): a chat message is text, and one request is
  one conversation.
* ``max_tokens`` (16 when absent, as OpenAI's legacy API), ``temperature``, ``top_p``, ``n``,
  ``stop``, ``stream``, ``stream_options``, ``presence_penalty``, ``frequency_penalty``,
  ``logit_bias``, ``seed``, ``user`` as they are; AILB's own fields (``session_id``,
  ``rag``...) as in chat.
* ``echo: true`` puts the prompt in front of each choice's text; ``best_of`` equal to ``n``
  (or 1) is what chat does anyway. ``suffix``, ``logprobs`` and any other ``best_of`` have
  no chat equivalent: 400 naming the field.

Answer side: a ``chat.completion`` -> a ``text_completion`` (``choices[].text``,
``finish_reason``, ``logprobs: null``, ``usage``); each ``chat.completion.chunk`` -> a
``text_completion`` chunk; the stream ends with ``data: [DONE]``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ailb.errors import GatewayError, InvalidRequest
from ailb.http_api.errors import error_object
from ailb.model import StreamChunk, content_text
from ailb.pipeline.augment import OWN_FIELDS
from ailb.schemas.check import conform
from ailb.schemas.openai import CompletionRequest

DEFAULT_MAX_TOKENS: Final = 16  # OpenAI's default for /v1/completions
PASSED: Final = ("temperature", "top_p", "n", "stop", "stream", "stream_options",
                 "presence_penalty", "frequency_penalty", "logit_bias", "seed", "user")


@dataclass(frozen=True, slots=True)
class Translated:
    chat_body: dict[str, Any]
    echo: str  # put in front of each choice's text ("" without echo)


def _unsupported(field: str, why: str) -> InvalidRequest:
    return InvalidRequest(f"'{field}' is not supported by this gateway's /v1/completions "
                          f"(answered through chat): {why}", param=field,
                          code="unsupported_parameter")


def to_chat(body: Mapping[str, Any]) -> Translated:
    """A legacy completions body as a chat body. Raises InvalidRequest naming the field."""
    shape = conform(body, CompletionRequest)
    prompt = shape.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1 or not isinstance(prompt[0], str):
            raise _unsupported("prompt", "send one prompt as a string (token arrays and "
                                         "several prompts in one request are not supported).")
        prompt = prompt[0]
    if shape.suffix is not None:
        raise _unsupported("suffix", "chat models do not insert text before a suffix.")
    if shape.logprobs is not None:
        raise _unsupported("logprobs", "leave it out.")
    if shape.best_of is not None and shape.best_of != (shape.n or 1):
        raise _unsupported("best_of", "only a best_of equal to n is supported.")
    chat: dict[str, Any] = {"model": shape.model,
                            "messages": [{"role": "user", "content": prompt}],
                            "max_tokens": shape.max_tokens or DEFAULT_MAX_TOKENS}
    for name in (*PASSED, *OWN_FIELDS):
        if body.get(name) is not None:
            chat[name] = body[name]
    return Translated(chat, prompt if shape.echo else "")


def _text(message: Any) -> str:
    content = message.get("content") if isinstance(message, Mapping) else None
    return content if isinstance(content, str) else content_text(content, "")


def to_text_completion(completion: Mapping[str, Any], echo: str, request_id: str,
                       model: str) -> dict[str, Any]:
    """A ``chat.completion`` as a ``text_completion``."""
    choices = [{"text": echo + _text(choice.get("message")),
                "index": choice.get("index", index), "logprobs": None,
                "finish_reason": choice.get("finish_reason")}
               for index, choice in enumerate(completion.get("choices") or [])
               if isinstance(choice, Mapping)]
    answer: dict[str, Any] = {"id": f"cmpl-{request_id}", "object": "text_completion",
                              "created": completion.get("created", 0),
                              "model": completion.get("model") or model, "choices": choices}
    if completion.get("system_fingerprint"):
        answer["system_fingerprint"] = completion["system_fingerprint"]
    if completion.get("usage") is not None:
        answer["usage"] = completion["usage"]
    return answer


class TextCompletionEncoder:
    """OpenAI's legacy completion stream: ``data:`` chunks of ``object: text_completion``,
    then ``data: [DONE]``."""

    __slots__ = ("_echo", "_echoed", "_id", "_include_usage", "_model")

    def __init__(self, request_id: str, model: str, include_usage: bool, echo: str) -> None:
        self._id = f"cmpl-{request_id}"
        self._model = model
        self._include_usage = include_usage
        self._echo = echo
        self._echoed: set[int] = set()

    def _event(self, obj: Mapping[str, Any]) -> bytes:
        return b"data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() \
            + b"\n\n"

    def chunk(self, chunk: StreamChunk) -> bytes:
        if chunk.usage_only and not self._include_usage:
            return b""
        try:
            parsed = json.loads(chunk.data)
        except ValueError:
            return b""
        if not isinstance(parsed, dict):
            return b""
        choices = []
        for choice in parsed.get("choices") or []:
            if not isinstance(choice, Mapping):
                continue
            index = choice.get("index", 0)
            text = _text(choice.get("delta"))
            if self._echo and index not in self._echoed:
                self._echoed.add(index)
                text = self._echo + text
            if text or choice.get("finish_reason") is not None:
                choices.append({"text": text, "index": index, "logprobs": None,
                                "finish_reason": choice.get("finish_reason")})
        usage = parsed.get("usage") if self._include_usage else None
        if not choices and usage is None:
            return b""  # a role-only first delta: nothing of a text completion
        event: dict[str, Any] = {"id": self._id, "object": "text_completion",
                                 "created": parsed.get("created", 0),
                                 "model": parsed.get("model") or self._model,
                                 "choices": choices}
        if usage is not None:
            event["usage"] = usage
        return self._event(event)

    def end(self) -> bytes:
        return b"data: [DONE]\n\n"

    def error(self, exc: GatewayError) -> bytes:
        return self._event(error_object(exc))
