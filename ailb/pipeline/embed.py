"""The embeddings pipeline, for every door that takes an embeddings request (HTTP
``/v1/embeddings``, gRPC ``Embed``): precheck, admit, route, on one router snapshot."""

from __future__ import annotations

from ailb.keys.auth import Principal
from ailb.model import EmbeddingRequest, EmbeddingResult
from ailb.pipeline.admission import admit, precheck
from ailb.pipeline.exchange import Exchange
from ailb.pipeline.services import Services
from ailb.pricing import estimate_prompt_tokens
from ailb.routing.router import Hints
from ailb.telemetry.spans import asked, step


async def run_embed(services: Services, exchange: Exchange, principal: Principal,
                    request: EmbeddingRequest, hints: Hints) -> EmbeddingResult:
    """Embed ``request`` for ``principal``. Raises NotFound, PermissionDenied, RateLimited,
    BudgetExceeded, NoHealthyDeployment or UpstreamError."""
    router = services.router  # one snapshot for the whole request
    exchange.model = request.model
    if exchange.trace is not None:
        asked(exchange.trace, "embeddings", request.body, False)
    route = precheck(router, principal, request.model)
    prompt_tokens = estimate_prompt_tokens(
        {"messages": [{"role": "user", "content": " ".join(request.inputs)}]})
    with step(exchange.trace, "ailb.admission"):
        await admit(services, exchange, principal, request.model, route, prompt_tokens, 1)
    return await router.embed(request, exchange, hints, route=route,
                              prompt_tokens=prompt_tokens)
