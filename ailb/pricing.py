"""Prices per model and the cost of a request. Pure.

Prices are USD per million tokens, input and output. The built-in table covers common OpenAI and
Anthropic models (list prices, November 2026; override or extend them with ``prices:`` in the
YAML). A model matches the longest table entry that its name starts with, so dated snapshots
(``gpt-4o-2024-08-06``) find their family. Ollama and echo deployments cost nothing unless a
price is configured for the model.

Prompt tokens read from a provider's prompt cache and written to it have their own rates
(``cached_input_per_mtok``, ``cache_write_per_mtok``). Unset, they follow the provider's list
ratios: on Anthropic deployments a cache read costs 10 % of the input rate and a cache write
125 % (the 5-minute cache); elsewhere (OpenAI and compatible servers, which report reads only)
a read costs 50 % of the input rate and a write the input rate.
The gpt-4.1 and gpt-5 families have their own read rates in the table.
Budget reservations (before the call) price every prompt token at the input rate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from ailb.model import Usage

# provider type -> (cache read, cache write) as fractions of the input rate, when unconfigured
_CACHE_RATIOS: Final[Mapping[str, tuple[float, float]]] = {"anthropic": (0.10, 1.25)}
_OTHER_CACHE_RATIOS: Final = (0.50, 1.0)


@dataclass(frozen=True, slots=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None = None  # None: by the provider's ratio (see above)
    cache_write_per_mtok: float | None = None

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Every prompt token at the input rate (estimates: the cache is not known yet)."""
        return (prompt_tokens * self.input_per_mtok
                + completion_tokens * self.output_per_mtok) / 1_000_000

    def worst_cost(self, prompt_tokens: int, completion_tokens: int, provider: str) -> float:
        """The most a call can cost: every prompt token at the dearest of the input, cache-read
        and cache-write rates (a write costs more than input on Anthropic), as a reservation
        must."""
        prompt_rate = max(self.input_per_mtok, *self.cache_rates(provider))
        return (prompt_tokens * prompt_rate
                + completion_tokens * self.output_per_mtok) / 1_000_000

    def cache_rates(self, provider: str) -> tuple[float, float]:
        """USD per million cache-read and cache-write tokens on a ``provider`` deployment."""
        read, write = _CACHE_RATIOS.get(provider, _OTHER_CACHE_RATIOS)
        return (self.input_per_mtok * read if self.cached_input_per_mtok is None
                else self.cached_input_per_mtok,
                self.input_per_mtok * write if self.cache_write_per_mtok is None
                else self.cache_write_per_mtok)

    def usage_cost(self, usage: Usage, provider: str) -> float:
        """What ``usage`` costs: cache reads and writes at their rates, the rest of the
        prompt at the input rate."""
        read_rate, write_rate = self.cache_rates(provider)
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        written = min(usage.cache_write_tokens, usage.prompt_tokens - cached)
        fresh = usage.prompt_tokens - cached - written
        return (fresh * self.input_per_mtok + cached * read_rate + written * write_rate
                + usage.completion_tokens * self.output_per_mtok) / 1_000_000


FREE: Final = Price(0.0, 0.0)
DEFAULT_PRICES: Final[Mapping[str, Price]] = {
    "gpt-4o-mini": Price(0.15, 0.60),
    "gpt-4o": Price(2.50, 10.00),
    "gpt-4.1-nano": Price(0.10, 0.40, 0.025),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.10),
    "gpt-4.1": Price(2.00, 8.00, 0.50),
    "gpt-4-turbo": Price(10.00, 30.00),
    "gpt-4": Price(30.00, 60.00),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    "gpt-5-nano": Price(0.05, 0.40, 0.005),
    "gpt-5-mini": Price(0.25, 2.00, 0.025),
    "gpt-5": Price(1.25, 10.00, 0.125),
    "o1-mini": Price(1.10, 4.40),
    "o1": Price(15.00, 60.00),
    "o3-mini": Price(1.10, 4.40),
    "o3": Price(2.00, 8.00),
    "o4-mini": Price(1.10, 4.40),
    "text-embedding-3-small": Price(0.02, 0.0),
    "text-embedding-3-large": Price(0.13, 0.0),
    "claude-opus-4": Price(15.00, 75.00),
    "claude-sonnet-4": Price(3.00, 15.00),
    "claude-haiku-4": Price(1.00, 5.00),
    "claude-3-7-sonnet": Price(3.00, 15.00),
    "claude-3-5-sonnet": Price(3.00, 15.00),
    "claude-3-5-haiku": Price(0.80, 4.00),
    "claude-3-opus": Price(15.00, 75.00),
    "claude-3-haiku": Price(0.25, 1.25),
}
# A model nobody priced, on a paid provider: assume it is expensive rather than free, so that
# cost_optimized never prefers it by accident.
UNKNOWN_PAID: Final = Price(30.00, 60.00)
_MATCHED_MAX: Final = 1024


class PriceTable:
    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self._prices = {**DEFAULT_PRICES, **(overrides or {})}
        self._overrides = dict(overrides or {})
        self._names = sorted(self._prices, key=len, reverse=True)
        # the longest-prefix match of each model seen (every request prices its targets);
        # bounded, as the names come from upstreams too
        self._matched: dict[str, Price] = {}

    def price(self, model: str, provider: str) -> Price:
        """The price of ``model`` served by a deployment of type ``provider``."""
        if model in self._overrides:
            return self._overrides[model]
        if provider in ("ollama", "echo"):
            return FREE
        found = self._matched.get(model)
        if found is None:
            found = next((self._prices[name] for name in self._names
                          if model.startswith(name)), UNKNOWN_PAID)
            if len(self._matched) >= _MATCHED_MAX:
                self._matched.clear()
            self._matched[model] = found
        return found

    def cost(self, model: str, provider: str, usage: Usage) -> float:
        return self.price(model, provider).usage_cost(usage, provider)


def estimate_prompt_tokens(body: Mapping[str, Any]) -> int:
    """A cheap, deliberately high estimate of a chat request's prompt tokens (reserved against
    limits and budgets, compared between deployments), plus 4 per message for the framing."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0
    chars = 0
    utf8 = 0
    for message in messages:
        if not isinstance(message, Mapping):
            continue
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
            utf8 += len(content.encode())
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    chars += len(part["text"])
                    utf8 += len(part["text"].encode())
                elif isinstance(part, Mapping):
                    chars += 1000  # an image or other non-text part: count it as sizeable
        for call in message.get("tool_calls") or []:
            chars += len(str(call))
    # ~4 characters a token for English, but text in other scripts and code tokenizes denser:
    # a third of its UTF-8 bytes bounds those (CJK: one character, three bytes, ~one token).
    return max(chars // 4, utf8 // 3) + 4 * len(messages) + 3
