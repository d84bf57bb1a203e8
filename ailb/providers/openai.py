"""OpenAI and every OpenAI-compatible server (vLLM, LM Studio, OpenRouter, Azure-style gateways).

The client's body goes upstream as it came, unknown fields included; only ``model`` is replaced by
the deployment's upstream model name, and streams always ask for the usage chunk so that AILB can
account for them (the handler drops that chunk again when the client did not ask for it).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any

from ailb.config.schema import DeploymentSettings
from ailb.errors import UpstreamStatusError, UpstreamStreamCut, UpstreamUnavailable
from ailb.model import (
    ChatRequest,
    ChatResult,
    EmbeddingRequest,
    EmbeddingResult,
    StreamChunk,
    Usage,
)
from ailb.pipeline.embeddings_parse import usage_of as embedding_usage
from ailb.providers import http
from ailb.providers.abort import Abort
from ailb.providers.base import ProbeResult
from ailb.providers.sse_block import BlockScanner, parse_chunk

__all__ = ["OpenAIProvider", "parse_chunk", "upstream_body"]


def upstream_body(request: ChatRequest, model: str) -> dict[str, Any]:
    """The JSON body to send upstream: the client's, with the upstream model and usage on."""
    body = dict(request.body)
    body["model"] = model
    if request.stream:
        options = body.get("stream_options")
        body["stream_options"] = {**(options if isinstance(options, Mapping) else {}),
                                  "include_usage": True}
    return body


class OpenAIProvider:
    """Chat completions against ``{base_url}/chat/completions``."""

    def __init__(self, deployment: DeploymentSettings, client: http.Client) -> None:
        self._deployment = deployment
        self._client = client
        self._url = http.url(f"{deployment.base_url}/chat/completions")
        self._headers = {**deployment.headers}
        if deployment.api_key:
            self._headers["authorization"] = f"Bearer {deployment.api_key.value}"

    @property
    def deployment(self) -> DeploymentSettings:
        return self._deployment

    def _request_headers(self, request: ChatRequest) -> dict[str, str]:
        return {**self._headers, "x-request-id": request.request_id}

    async def _post_json(self, url: http.Url, body: Mapping[str, Any], request_id: str,
                         required: str) -> tuple[dict[str, Any], bytes]:
        """POST and return the JSON object answered, which must have ``required``, with its
        raw bytes. Raises UpstreamError."""
        name = self._deployment.name
        answer, raw = await http.post_json(
            self._client, url, body, {**self._headers, "x-request-id": request_id}, name,
            self._status_error)
        if not isinstance(answer, dict) or required not in answer:
            raise UpstreamUnavailable(f"upstream {name} answered without {required}")
        return answer, raw

    async def complete(self, request: ChatRequest, model: str) -> ChatResult:
        body, raw = await self._post_json(self._url, upstream_body(request, model),
                                          request.request_id, "choices")
        return ChatResult(body=body, usage=Usage.from_openai(body.get("usage")), raw=raw)

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingResult:
        body, _ = await self._post_json(f"{self._deployment.base_url}/embeddings",
                                        {**request.body, "model": model}, request.request_id,
                                        "data")
        return EmbeddingResult(body=body, usage=embedding_usage(body))

    def _status_error(self, status: int, body: bytes,
                      headers: Mapping[str, str]) -> UpstreamStatusError:
        return http.status_error(status, body, headers, self._deployment.name)

    def stream(self, request: ChatRequest, model: str) -> AsyncIterator[StreamChunk]:
        abort = Abort()
        raws = http.stream_bytes(self._client, self._url, upstream_body(request, model),
                                 self._request_headers(request), self._deployment.name,
                                 self._status_error, abort)
        return BlockStream(raws, self._deployment.name, abort)

    async def probe(self) -> ProbeResult:
        result, _ = await http.probe_get(self._client, f"{self._deployment.base_url}/models",
                                         self._headers)
        return result


class BlockStream:
    """An OpenAI-compatible stream as blocks, one per upstream read (see
    :mod:`ailb.providers.sse_block`): the events it completed, as the upstream framed them.
    ``[DONE]`` is not relayed. Raises UpstreamError like any provider stream; ``abort`` ends
    the upstream call at once from outside (the drain's cut, see :mod:`ailb.providers.abort`).
    """

    __slots__ = ("_abort", "_deployment", "_raws", "_scanner")

    def __init__(self, raws: AsyncGenerator[bytes, None], deployment: str,
                 abort: Abort) -> None:
        self._raws = raws
        self._deployment = deployment
        self._scanner = BlockScanner()
        self._abort = abort

    def __aiter__(self) -> BlockStream:
        return self

    async def __anext__(self) -> StreamChunk:
        scanner = self._scanner
        while True:
            if scanner.error is not None:
                self._abort.arm(None)
                await self._raws.aclose()
                raise scanner.error
            if scanner.done:
                # complete: a drain cut from now on must not turn the end into an error
                self._abort.arm(None)
                await http.finish_body(self._raws)
                await self._raws.aclose()
                raise StopAsyncIteration
            try:
                raw = await anext(self._raws)
            except StopAsyncIteration:
                raise UpstreamStreamCut(
                    f"upstream {self._deployment} ended the stream before [DONE]") from None
            block = scanner.feed(raw)
            if block is not None:
                return block

    async def aclose(self) -> None:
        await self._raws.aclose()

    @property
    def abortable(self) -> bool:
        return self._abort.armed

    def abort(self) -> bool:
        return self._abort()
