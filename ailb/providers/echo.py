"""The built-in offline provider: answers with the last user message, deterministically.

It needs no network and no key, so a fresh install answers requests and tests have a provider
with no moving parts. Token counts are real counts of a simple, documented tokenizer (words and
punctuation marks), so limits and accounting see the same numbers on every run. ``max_tokens``
truncates the answer and sets ``finish_reason: "length"``, as a real model would.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Final

import trio

from ailb.config.schema import DeploymentSettings
from ailb.model import (
    ChatRequest,
    ChatResult,
    EmbeddingRequest,
    EmbeddingResult,
    StreamChunk,
    Usage,
    content_text,
)
from ailb.pipeline.embeddings_parse import embedding_body
from ailb.providers.base import ProbeResult

_TOKEN: Final = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_PIECE: Final = re.compile(r"\s*(?:\w+|[^\w\s])", re.UNICODE)
ECHO_DIMENSIONS: Final = 64


def count_tokens(text: str) -> int:
    """Words and punctuation marks: the echo tokenizer."""
    return len(_TOKEN.findall(text))


def hashed_vector(text: str, dims: int) -> list[float]:
    """Each lower-cased token adds +-1 to a dimension chosen by a stable hash; then normalised."""
    vector = [0.0] * dims
    for token in _TOKEN.findall(text.lower()):
        digest = hashlib.blake2b(token.encode(), digest_size=8).digest()
        value = int.from_bytes(digest, "little")
        vector[value % dims] += 1.0 if value >> 63 else -1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def prompt_tokens(messages: Any) -> int:
    """3 tokens per message plus its text, plus 3 for the reply priming (OpenAI's convention)."""
    if not isinstance(messages, list):
        return 0
    total = 3
    for message in messages:
        if isinstance(message, Mapping):
            total += 3 + count_tokens(content_text(message.get("content")))
    return total


def answer(request: ChatRequest) -> tuple[list[str], str]:
    """The reply split into tokens (each keeps its leading space) and the finish reason."""
    messages = request.body.get("messages")
    last = ""
    if isinstance(messages, list):
        for message in reversed(messages):
            if isinstance(message, Mapping) and message.get("role") == "user":
                last = content_text(message.get("content"))
                break
    pieces = _PIECE.findall(last) or ["(", "empty", ")"]
    if request.max_tokens is not None and len(pieces) > request.max_tokens:
        return pieces[: request.max_tokens], "length"
    return pieces, "stop"


class EchoProvider:
    def __init__(self, deployment: DeploymentSettings) -> None:
        self._deployment = deployment

    @property
    def deployment(self) -> DeploymentSettings:
        return self._deployment

    async def complete(self, request: ChatRequest, model: str) -> ChatResult:
        await trio.lowlevel.checkpoint()
        pieces, finish = answer(request)
        usage = Usage(prompt_tokens(request.body.get("messages")), len(pieces))
        body = {
            "id": f"chatcmpl-{request.request_id}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "".join(pieces).strip(),
                            "refusal": None},
                "logprobs": None,
                "finish_reason": finish,
            }],
            "usage": usage.to_openai(),
            "system_fingerprint": "ailb-echo",
        }
        return ChatResult(body=body, usage=usage)

    async def stream(self, request: ChatRequest, model: str) -> AsyncIterator[StreamChunk]:
        pieces, finish = answer(request)
        usage = Usage(prompt_tokens(request.body.get("messages")), len(pieces))
        base = {"id": f"chatcmpl-{request.request_id}", "object": "chat.completion.chunk",
                "created": int(time.time()), "model": model, "system_fingerprint": "ailb-echo"}

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> StreamChunk:
            choice = {"index": 0, "delta": delta, "logprobs": None,
                      "finish_reason": finish_reason}
            text = json.dumps({**base, "choices": [choice], "usage": None},
                              separators=(",", ":"))
            return StreamChunk(text)

        await trio.lowlevel.checkpoint()
        yield chunk({"role": "assistant", "content": "", "refusal": None})
        for index, piece in enumerate(pieces):
            await trio.lowlevel.checkpoint()
            yield chunk({"content": piece.lstrip() if index == 0 else piece})
        yield chunk({}, finish)
        usage_text = json.dumps({**base, "choices": [], "usage": usage.to_openai()},
                                separators=(",", ":"))
        yield StreamChunk(usage_text, usage=usage, usage_only=True)

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingResult:
        """Deterministic feature-hashed vectors of the echo tokens (unit length)."""
        await trio.lowlevel.checkpoint()
        dims = request.body.get("dimensions") or ECHO_DIMENSIONS
        vectors = [hashed_vector(text, dims) for text in request.inputs]
        tokens = sum(count_tokens(text) for text in request.inputs)
        return EmbeddingResult(body=embedding_body(vectors, model, tokens,
                                                   request.encoding_format),
                               usage=Usage(prompt_tokens=tokens))

    async def probe(self) -> ProbeResult:
        await trio.lowlevel.checkpoint()
        return ProbeResult(True, 0.0, "built-in")
