"""Counting a request's input tokens (``POST /v1/messages/count_tokens``), for every door
that offers it.

Counting generates nothing, so it takes no limit, budget or reservation; it is still a
request of the key (authenticated, the key's model permission checked, logged and counted
in the metrics). A model routed to Anthropic deployments is counted by Anthropic (its
``/v1/messages/count_tokens``, through the router: choice, retries, cooldowns); any other
gets AILB's own prompt estimate (what admission reserves, plus the tools' definitions), and
says so.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ailb.keys.auth import Principal
from ailb.pipeline.admission import precheck
from ailb.pipeline.augment import OWN_FIELDS
from ailb.pipeline.exchange import Exchange
from ailb.pipeline.services import Services
from ailb.pricing import estimate_prompt_tokens
from ailb.routing.router import Hints

COUNTING_PROVIDERS = frozenset({"anthropic"})


@dataclass(frozen=True, slots=True)
class Count:
    input_tokens: int
    estimated: bool  # AILB's estimate, not the upstream's count


def estimate(chat_body: Mapping[str, Any]) -> int:
    """AILB's estimate of an OpenAI-shaped chat body's input tokens, its tools included."""
    tokens = estimate_prompt_tokens(chat_body)
    tools = chat_body.get("tools")
    if tools:
        tokens += estimate_prompt_tokens({"messages": [{"content": json.dumps(tools)}]})
    return tokens


async def run_count_tokens(services: Services, exchange: Exchange, principal: Principal,
                           native: Mapping[str, Any], chat_body: Mapping[str, Any],
                           hints: Hints) -> Count:
    """Count the input tokens of ``native`` (an Anthropic Messages body; ``chat_body`` is
    the same request in OpenAI's shape). Raises NotFound, PermissionDenied,
    NoHealthyDeployment or UpstreamError."""
    router = services.router  # one snapshot for the whole request
    model = str(native["model"])
    exchange.model = model
    route = precheck(router, principal, model)
    counting = tuple(t for t in route.targets if t.provider in COUNTING_PROVIDERS)
    if not counting:
        exchange.route = route.label
        return Count(estimate(chat_body), True)
    body = {name: value for name, value in native.items() if name not in OWN_FIELDS}
    tokens = await router.count_tokens(body, exchange, replace(route, targets=counting), hints)
    return Count(tokens, False)
