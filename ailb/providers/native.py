"""Anthropic and Ollama deployments: health probes and model discovery.

Their chat translation (Messages API, ``/api/chat`` NDJSON) is a separate piece of work; until it
lands a chat request routed here fails with a clear 501 instead of a half-translated answer.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx

from ailb.config_schema import DeploymentSettings
from ailb.errors import GatewayError
from ailb.model import ChatRequest, ChatResult, StreamChunk
from ailb.providers.base import ProbeResult

ANTHROPIC_VERSION = "2023-06-01"


class TranslationPending(GatewayError):
    status = 501
    type = "not_implemented"
    code = "provider_translation_pending"
    grpc_status = "UNIMPLEMENTED"


class NativeProvider:
    """A deployment of a non-OpenAI wire format (``anthropic`` or ``ollama``)."""

    def __init__(self, deployment: DeploymentSettings, client: httpx.AsyncClient) -> None:
        self._deployment = deployment
        self._client = client
        if deployment.type == "anthropic":
            self._probe_url = f"{deployment.base_url}/v1/models"
            self._headers = {"x-api-key": deployment.api_key.value,
                             "anthropic-version": ANTHROPIC_VERSION, **deployment.headers}
        else:
            self._probe_url = f"{deployment.base_url}/api/tags"
            self._headers = {**deployment.headers}

    @property
    def deployment(self) -> DeploymentSettings:
        return self._deployment

    def _pending(self) -> TranslationPending:
        return TranslationPending(
            f"deployment {self._deployment.name} is of type {self._deployment.type}, whose chat "
            "translation is not in this build yet")

    async def complete(self, request: ChatRequest, model: str) -> ChatResult:
        raise self._pending()

    async def stream(self, request: ChatRequest, model: str) -> AsyncIterator[StreamChunk]:
        raise self._pending()
        yield  # pragma: no cover - makes this an async generator like every provider's stream

    async def probe(self) -> ProbeResult:
        start = time.perf_counter()
        try:
            response = await self._client.get(self._probe_url, headers=self._headers)
        except httpx.HTTPError as exc:
            return ProbeResult(False, time.perf_counter() - start, type(exc).__name__)
        elapsed = time.perf_counter() - start
        if response.status_code >= 400:
            return ProbeResult(False, elapsed, f"HTTP {response.status_code}")
        models: tuple[str, ...] | None = None
        if self._deployment.discovers_models:
            try:
                listed = response.json().get("models", [])
                models = tuple(str(m["name"]) for m in listed if isinstance(m, dict)
                               and "name" in m)
            except (ValueError, AttributeError):
                return ProbeResult(False, elapsed, "GET /api/tags answered without models")
        return ProbeResult(True, elapsed, models=models)
