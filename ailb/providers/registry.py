"""Build one provider per configured deployment, each with its own pooled HTTP client."""

from __future__ import annotations

from contextlib import AsyncExitStack

import httpx

from ailb.config_schema import DeploymentSettings, UpstreamSettings
from ailb.providers.anthropic import AnthropicProvider
from ailb.providers.base import Provider
from ailb.providers.echo import EchoProvider
from ailb.providers.http import make_client
from ailb.providers.ollama import OllamaProvider
from ailb.providers.openai import OpenAIProvider


async def open_providers(
    deployments: tuple[DeploymentSettings, ...],
    upstream: UpstreamSettings,
    stack: AsyncExitStack,
    transport: httpx.AsyncBaseTransport | None = None,
) -> dict[str, Provider]:
    """Providers by deployment name. Their clients are closed when ``stack`` closes."""
    providers: dict[str, Provider] = {}
    for dep in deployments:
        if dep.type == "echo":
            providers[dep.name] = EchoProvider(dep)
            continue
        client = await stack.enter_async_context(make_client(dep, upstream, transport))
        if dep.type == "openai":
            providers[dep.name] = OpenAIProvider(dep, client)
        elif dep.type == "anthropic":
            providers[dep.name] = AnthropicProvider(dep, client)
        else:
            providers[dep.name] = OllamaProvider(dep, client)
    return providers
