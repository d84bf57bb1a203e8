"""Ollama's native API (``/api/chat`` with NDJSON streaming, ``/api/tags``, ``/api/embed``)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing
from typing import Any

from ailb.config.schema import DeploymentSettings
from ailb.errors import UpstreamStatusError, UpstreamStreamCut, UpstreamUnavailable
from ailb.model import ChatRequest, ChatResult, EmbeddingRequest, EmbeddingResult, StreamChunk
from ailb.pipeline.embeddings_parse import embedding_body
from ailb.providers import http
from ailb.providers.base import ProbeResult
from ailb.providers.ollama_wire import finish_reason, from_ollama, to_ollama, tool_calls, usage_of
from ailb.providers.sse import event_object


def _dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class NDJSONLines:
    """Split a byte stream into complete lines (pure, incremental)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        lines = (self._buffer + data).split(b"\n")
        self._buffer = lines.pop()
        return [line for line in lines if line.strip()]


class OllamaStreamTranslator:
    """Ollama's NDJSON lines -> OpenAI chunks; ``done`` once the final line arrived."""

    def __init__(self, request_id: str, model: str, created: int) -> None:
        self._base = {"id": f"chatcmpl-{request_id}", "object": "chat.completion.chunk",
                      "created": created, "model": model}
        self._call_prefix = f"call_{request_id}"
        self._calls = 0
        self._started = False
        self.done = False

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> StreamChunk:
        data = _dump({**self._base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                                  "finish_reason": finish}], "usage": None})
        return StreamChunk(data)

    def feed(self, line: bytes) -> list[StreamChunk]:
        obj = event_object(line, "Ollama")
        if "error" in obj:
            raise UpstreamStatusError(str(obj["error"]), status=502)
        chunks: list[StreamChunk] = []
        if not self._started:
            self._started = True
            chunks.append(self._chunk({"role": "assistant", "content": "", "refusal": None}))
        message = obj.get("message") or {}
        if message.get("content"):
            chunks.append(self._chunk({"content": message["content"]}))
        calls = tool_calls(message, self._call_prefix, self._calls)
        if calls:
            deltas = [{"index": self._calls + i, **call} for i, call in enumerate(calls)]
            self._calls += len(calls)
            chunks.append(self._chunk({"tool_calls": deltas}))
        if obj.get("done"):
            self.done = True
            chunks.append(self._chunk({}, finish_reason(obj.get("done_reason"),
                                                        self._calls > 0)))
            usage = usage_of(obj)
            data = _dump({**self._base, "choices": [], "usage": usage.to_openai()})
            chunks.append(StreamChunk(data, usage=usage, usage_only=True))
        return chunks


class OllamaProvider:
    def __init__(self, deployment: DeploymentSettings, client: http.Client) -> None:
        self._deployment = deployment
        self._client = client
        self._base = deployment.base_url
        self._headers = {**deployment.headers}
        if deployment.api_key:  # Ollama behind an authenticating proxy
            self._headers["authorization"] = f"Bearer {deployment.api_key.value}"

    @property
    def deployment(self) -> DeploymentSettings:
        return self._deployment

    def _request_headers(self, request_id: str) -> dict[str, str]:
        return {**self._headers, "x-request-id": request_id}

    async def post_json(self, path: str, body: Mapping[str, Any], request_id: str) -> Any:
        """POST and parse a JSON answer. Raises UpstreamError."""
        answer, _ = await http.post_json(self._client, f"{self._base}{path}", body,
                                         self._request_headers(request_id),
                                         self._deployment.name, self._status_error)
        return answer

    async def complete(self, request: ChatRequest, model: str) -> ChatResult:
        answer = await self.post_json("/api/chat", to_ollama(request, model), request.request_id)
        if not isinstance(answer, dict) or not answer.get("done", True):
            raise UpstreamUnavailable(f"upstream {self._deployment.name} answered oddly")
        return ChatResult(body=from_ollama(answer, request.request_id, model, int(time.time())),
                          usage=usage_of(answer))

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingResult:
        body: dict[str, Any] = {"model": model, "input": list(request.inputs)}
        if request.body.get("dimensions") is not None:
            body["dimensions"] = request.body["dimensions"]
        answer = await self.post_json("/api/embed", body, request.request_id)
        vectors = answer.get("embeddings") if isinstance(answer, dict) else None
        if not isinstance(vectors, list) or len(vectors) != len(request.inputs):
            raise UpstreamUnavailable(f"upstream {self._deployment.name} answered without "
                                      "one embedding per input")
        usage = usage_of(answer)
        return EmbeddingResult(body=embedding_body(vectors, model, usage.prompt_tokens,
                                                   request.encoding_format), usage=usage)

    async def stream(self, request: ChatRequest, model: str) -> AsyncIterator[StreamChunk]:
        name = self._deployment.name
        body = to_ollama(request, model)
        translator = OllamaStreamTranslator(request.request_id, model, int(time.time()))
        lines = NDJSONLines()
        raws = http.stream_bytes(self._client, f"{self._base}/api/chat", body,
                                 self._request_headers(request.request_id), name,
                                 self._status_error)
        async with aclosing(raws):
            async for raw in raws:
                for line in lines.feed(raw):
                    for chunk in translator.feed(line):
                        yield chunk
                if translator.done:
                    break
            if translator.done:
                await http.finish_body(raws)
        if not translator.done:
            raise UpstreamStreamCut(f"upstream {name} ended the stream before done")

    def _status_error(self, status: int, body: bytes,
                      headers: Mapping[str, str]) -> UpstreamStatusError:
        return http.status_error(status, body, headers, self._deployment.name)

    async def probe(self) -> ProbeResult:
        result, response = await http.probe_get(self._client, f"{self._base}/api/tags",
                                                 self._headers)
        if response is None or not self._deployment.discovers_models:
            return result
        try:
            listed = response.json().get("models", [])
            models = tuple(str(m["name"]) for m in listed if isinstance(m, dict) and "name" in m)
        except (ValueError, AttributeError, TypeError, KeyError):
            return ProbeResult(False, result.latency_s, "GET /api/tags answered without models")
        return ProbeResult(True, result.latency_s, models=models)
