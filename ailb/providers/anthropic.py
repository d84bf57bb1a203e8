"""Anthropic's Messages API, behind the OpenAI-shaped provider interface."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from dataclasses import replace
from typing import Any

from ailb.config.schema import DeploymentSettings
from ailb.errors import (
    InvalidRequest,
    UpstreamStatusError,
    UpstreamStreamCut,
    UpstreamUnavailable,
)
from ailb.model import ChatRequest, ChatResult, EmbeddingRequest, EmbeddingResult, StreamChunk
from ailb.providers import http
from ailb.providers.anthropic_answer import from_anthropic, usage_of
from ailb.providers.anthropic_stream import AnthropicStreamTranslator
from ailb.providers.anthropic_structured import answer_name
from ailb.providers.anthropic_wire import to_anthropic
from ailb.providers.base import ProbeResult
from ailb.providers.sse import SSEDecoder

ANTHROPIC_VERSION = "2023-06-01"


def anthropic_status_error(error: UpstreamStatusError) -> UpstreamStatusError:
    """Anthropic's 529 ``overloaded_error`` means "try later": 503 with retry-after kept."""
    if error.upstream_status == 529:
        return UpstreamStatusError(error.message, status=503, upstream_status=529,
                                   error_type=error.type, code="overloaded",
                                   retry_after_s=error.retry_after_s)
    return error


class AnthropicProvider:
    def __init__(self, deployment: DeploymentSettings, client: http.Client) -> None:
        self._deployment = deployment
        self._client = client
        self._url = http.url(f"{deployment.base_url}/v1/messages")
        self._count_url = http.url(f"{deployment.base_url}/v1/messages/count_tokens")
        self._headers = {"x-api-key": deployment.api_key.value,
                         "anthropic-version": ANTHROPIC_VERSION, **deployment.headers}

    @property
    def deployment(self) -> DeploymentSettings:
        return self._deployment

    def _request_headers(self, request: ChatRequest) -> dict[str, str]:
        return {**self._headers, "x-request-id": request.request_id}

    def _error(self, status: int, body: bytes,
               headers: Mapping[str, str]) -> UpstreamStatusError:
        return anthropic_status_error(http.status_error(status, body, headers,
                                                        self._deployment.name))

    @staticmethod
    def _body(request: ChatRequest, model: str) -> dict[str, Any]:
        if request.native is not None:  # came in as an Anthropic request: send it as it is
            return {**request.native, "model": model}
        return to_anthropic(request, model)

    async def complete(self, request: ChatRequest, model: str) -> ChatResult:
        name = self._deployment.name
        body = self._body(request, model)
        message, _ = await http.post_json(self._client, self._url, body,
                                          self._request_headers(request), name, self._error)
        if not isinstance(message, dict) or message.get("type") != "message":
            raise UpstreamUnavailable(f"upstream {name} answered without a message")
        answer = answer_name(request.body) if request.native is None else None
        return ChatResult(body=from_anthropic(message, int(time.time()), answer),
                          usage=usage_of(message.get("usage")),
                          native=message if request.native is not None else None)

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingResult:
        raise InvalidRequest(f"`{request.model}` is served by Anthropic, which has no "
                             "embeddings; route embeddings to an OpenAI-compatible or Ollama "
                             "deployment.", param="model")

    async def stream(self, request: ChatRequest, model: str) -> AsyncIterator[StreamChunk]:
        name = self._deployment.name
        body = self._body(request, model)
        native = request.native is not None
        translator = AnthropicStreamTranslator(
            f"chatcmpl-{request.request_id}", model, int(time.time()),
            answer_tool=None if native else answer_name(request.body))
        decoder = SSEDecoder()
        raws = http.stream_bytes(self._client, self._url, body, self._request_headers(request),
                                 name, self._error)
        async with aclosing(raws):
            async for raw in raws:
                for event in decoder.feed(raw):
                    chunks = translator.feed(event.event, event.data)
                    if native:  # relay the event itself, and what it means in OpenAI's
                        # shape for the pipeline (memory, the response cache) to read
                        raw = f"event: {event.event}\ndata: {event.data}\n\n".encode()
                        for chunk in chunks[:-1]:
                            yield replace(chunk, native=b"")
                        yield replace(chunks[-1], native=raw) if chunks else \
                            StreamChunk("", native=raw)
                    else:
                        for chunk in chunks:
                            yield chunk
                if translator.done:
                    break
            if translator.done:
                await http.finish_body(raws)
        if not translator.done:
            raise UpstreamStreamCut(f"upstream {name} ended the stream before message_stop")

    async def count_tokens(self, body: Mapping[str, Any], model: str) -> int:
        """Anthropic's own count of an Anthropic Messages body's input tokens (``body`` as
        the client sent it, for upstream ``model``). Raises UpstreamError."""
        name = self._deployment.name
        answer, _ = await http.post_json(self._client, self._count_url, {**body, "model": model},
                                         self._headers, name, self._error)
        tokens = answer.get("input_tokens") if isinstance(answer, dict) else None
        if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < 0:
            raise UpstreamUnavailable(f"upstream {name} answered without input_tokens")
        return tokens

    async def probe(self) -> ProbeResult:
        result, _ = await http.probe_get(self._client, f"{self._deployment.base_url}/v1/models",
                                         self._headers)
        return result
