"""The live providers, one per configured deployment, each with its own pooled HTTP client.

On a configuration reload, a deployment whose settings (and the upstream timeouts) did not
change keeps its provider and its connection pool; a new or changed one gets a fresh provider;
the clients of removed or changed ones are handed back to be closed once their last request is
done. ``aclose`` closes everything still open.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from ailb.config.schema import DeploymentSettings, UpstreamSettings
from ailb.providers.anthropic import AnthropicProvider
from ailb.providers.base import Provider
from ailb.providers.echo import EchoProvider
from ailb.providers.http import make_client
from ailb.providers.ollama import OllamaProvider
from ailb.providers.openai import OpenAIProvider


def _build(dep: DeploymentSettings, upstream: UpstreamSettings,
           transport: httpx.AsyncBaseTransport | None) -> tuple[Provider, httpx.AsyncClient | None]:
    if dep.type == "echo":
        return EchoProvider(dep), None
    client = make_client(dep, upstream, transport)
    if dep.type == "openai":
        return OpenAIProvider(dep, client), client
    if dep.type == "anthropic":
        return AnthropicProvider(dep, client), client
    return OllamaProvider(dep, client), client


class ProviderPool:
    def __init__(self, transport: httpx.AsyncBaseTransport | None = None) -> None:
        self._transport = transport
        self._upstream: UpstreamSettings | None = None
        self._live: dict[str, tuple[DeploymentSettings, Provider, httpx.AsyncClient | None]] = {}
        self._retired: list[httpx.AsyncClient] = []  # closed when idle, or at the latest here

    def update(self, deployments: tuple[DeploymentSettings, ...], upstream: UpstreamSettings
               ) -> tuple[dict[str, Provider], list[tuple[str, httpx.AsyncClient]]]:
        """The providers for ``deployments``, and the (name, client) pairs no longer used."""
        same_upstream = upstream == self._upstream
        self._upstream = upstream
        live: dict[str, tuple[DeploymentSettings, Provider, httpx.AsyncClient | None]] = {}
        for dep in deployments:
            current = self._live.get(dep.name)
            if current is not None and current[0] == dep and same_upstream:
                live[dep.name] = current
            else:
                provider, client = _build(dep, upstream, self._transport)
                live[dep.name] = (dep, provider, client)
        retired = [(name, client) for name, (_, provider, client) in self._live.items()
                   if client is not None and live.get(name, (None, None, None))[1] is not provider]
        self._live = live
        self._retired += [client for _, client in retired]
        return {name: entry[1] for name, entry in live.items()}, retired

    def providers(self) -> Mapping[str, Provider]:
        return {name: entry[1] for name, entry in self._live.items()}

    async def aclose(self) -> None:
        clients = [c for _, _, c in self._live.values() if c is not None] + self._retired
        for client in clients:
            await client.aclose()  # closing twice is harmless
        self._live, self._retired = {}, []
