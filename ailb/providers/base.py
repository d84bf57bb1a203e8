"""The provider interface every upstream wire format implements.

A provider is bound to one deployment (a base URL, a credential, its models). It translates AILB's
OpenAI-shaped values to its wire format and back, and does its I/O with the ``httpx.AsyncClient``
it was given, so tests can inject ``httpx.MockTransport``. Errors leave a provider only as
:class:`~ailb.errors.UpstreamError` subclasses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ailb.config.schema import DeploymentSettings
from ailb.model import ChatRequest, ChatResult, EmbeddingRequest, EmbeddingResult, StreamChunk


@dataclass(frozen=True, slots=True)
class ProbeResult:
    """Outcome of one cheap health request. ``models`` is set by providers that discover them."""

    ok: bool
    latency_s: float
    detail: str = ""
    models: tuple[str, ...] | None = None


class Provider(Protocol):
    @property
    def deployment(self) -> DeploymentSettings: ...

    async def complete(self, request: ChatRequest, model: str) -> ChatResult:
        """Send a non-streamed request for upstream ``model``. Raises UpstreamError."""
        ...

    def stream(self, request: ChatRequest, model: str) -> AsyncIterator[StreamChunk]:
        """An async generator of chunks for upstream ``model``.

        It ends normally only after the upstream signalled a complete answer; a stream that breaks
        off raises UpstreamStreamCut, a stalled one UpstreamTimeout. Closing the generator early
        (``aclose``, or cancellation) closes the upstream connection at once.
        """
        ...

    async def embed(self, request: EmbeddingRequest, model: str) -> EmbeddingResult:
        """Embed ``request.inputs`` with upstream ``model``. Raises UpstreamError, or
        InvalidRequest where the provider has no embeddings."""
        ...

    async def probe(self) -> ProbeResult:
        """One cheap request that tells whether the deployment answers. Never raises (but
        Cancelled)."""
        ...


@runtime_checkable
class TokenCounter(Protocol):
    """A provider whose upstream counts a request's tokens itself (Anthropic's
    ``/v1/messages/count_tokens``)."""

    async def count_tokens(self, body: Mapping[str, Any], model: str) -> int:
        """The upstream's count of ``body``'s input tokens for upstream ``model``. Raises
        UpstreamError."""
        ...
