"""The router: resolve the model, choose deployments, call them with retries, fallback and
hedging, and keep what live traffic teaches about each deployment.

Rules, stated once:

* Candidates are the route's targets that are healthy (probe), not cooling down, not waiting for
  a probe after a cooldown, and under their own rate caps. When none is, the least-bad target
  is tried anyway (the one coming back soonest) and the response says so (``x-ailb-degraded``).
* A failed attempt moves on to the next candidate chosen by the same strategy, up to
  ``ROUTING.max_attempts`` deployments and ``ROUTING.total_deadline_s`` in all; only errors that
  another deployment may not repeat are retried (connect errors, timeouts, 5xx, 408/409/429,
  broken streams before their first chunk). 400/401/403/404/422 go straight back.
* A stream is retried only before its first chunk, i.e. before anything reached the client.
* Hedging (per alias, per request ``x-ailb-hedge-ms``, or ``ROUTING.hedge_ms``/percentile) runs
  on the first attempt only: at most one extra attempt.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import trio

from ailb.accounting.reservations import MAX_CEILING_TOKENS
from ailb.config.schema import RoutingSettings, UpstreamSettings
from ailb.errors import (
    GatewayError,
    InternalError,
    NoHealthyDeployment,
    RateLimited,
    UpstreamError,
    UpstreamTimeout,
)
from ailb.health import HealthBoard
from ailb.limits.runtime import RuntimeLimits
from ailb.metrics import Metrics
from ailb.model import ChatRequest, ChatResult, EmbeddingRequest, EmbeddingResult
from ailb.pipeline.exchange import Exchange
from ailb.pricing import PriceTable, estimate_prompt_tokens
from ailb.providers.base import Provider, TokenCounter
from ailb.routing import strategies
from ailb.routing.hedge import race
from ailb.routing.stats import DeploymentStats
from ailb.routing.stream import OpenStream, aclose_quietly, first_chunk
from ailb.routing.table import Route, RouteTable, Target
from ailb.telemetry.spans import attempt as traced_attempt

_R = TypeVar("_R")
Call = Callable[[Provider, Target], Awaitable[_R]]
# (deployment, seconds, reason, needs_probe): told of every cooldown this router starts, so
# other gateways can avoid the deployment too (ailb.shared.cooldowns). Must not block.
CooldownHook = Callable[[str, float, str, bool], None]


@dataclass(frozen=True, slots=True)
class Hints:
    """What a request asked of routing (headers ``x-ailb-strategy``, ``x-ailb-hedge-ms``)."""

    strategy: str | None = None
    hedge_ms: float | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    route: Route
    strategy: str
    hedge_ms: float
    prompt_tokens: int
    max_tokens: int


class Router:
    def __init__(self, table: RouteTable, providers: Mapping[str, Provider], board: HealthBoard,
                 metrics: Metrics, upstream: UpstreamSettings, routing: RoutingSettings,
                 prices: PriceTable, rng: random.Random | None = None,
                 previous: Router | None = None,
                 runtime_limits: RuntimeLimits | None = None,
                 on_cooldown: CooldownHook | None = None) -> None:
        """``previous``: the router of the configuration this one replaces; deployments whose
        provider object is unchanged keep their live statistics (and in-flight counts).
        ``on_cooldown``: told of each cooldown this router starts."""
        self._on_cooldown = on_cooldown
        self._table = table
        self._providers = providers
        self._board = board
        self._metrics = metrics
        self._upstream = upstream
        self._policy = routing
        self._prices = prices
        self._runtime_limits = runtime_limits
        self._rng = rng or random.Random()
        self._scores: strategies.RoundRobinScores = (
            previous._scores if previous else strategies.RoundRobinScores())
        now = trio.current_time()
        self._stats: dict[str, DeploymentStats] = {}
        for name, provider in providers.items():
            kept = previous._stats.get(name) if previous else None
            same = previous is not None and previous._providers.get(name) is provider
            self._stats[name] = kept if (kept is not None and same) else DeploymentStats(
                name, provider.deployment.rpm, provider.deployment.tpm, now)

    # -- what there is --------------------------------------------------------------------------
    def route(self, model: str) -> Route:
        """Raises NotFound for a model nobody serves."""
        return self._table.resolve(model, self._board.discovered())

    def models(self) -> list[Route]:
        return self._table.public_models(self._board.discovered())

    def in_flight(self) -> dict[str, int]:
        return {name: stats.in_flight for name, stats in self._stats.items()}

    def stats(self) -> Mapping[str, DeploymentStats]:
        return self._stats

    @property
    def policy(self) -> RoutingSettings:
        return self._policy

    # -- choosing -------------------------------------------------------------------------------
    def _plan(self, model: str, body: Mapping[str, Any], max_tokens: int | None,
              hints: Hints, exchange: Exchange, route: Route | None = None,
              prompt_tokens: int | None = None) -> Plan:
        """``route`` and ``prompt_tokens`` when the caller resolved and estimated them
        already (the pipeline does, once per request); else here."""
        route = route if route is not None else self.route(model)
        exchange.route = route.label
        strategy = hints.strategy or route.strategy
        exchange.strategy = strategy
        hedge = hints.hedge_ms if hints.hedge_ms is not None else route.hedge_ms
        return Plan(route, strategy, hedge if hedge is not None else self._policy.hedge_ms,
                    estimate_prompt_tokens(body) if prompt_tokens is None else prompt_tokens,
                    # the client's number may be of any size: a cost must stay a float
                    min(max_tokens or 256, MAX_CEILING_TOKENS))

    def _candidate(self, plan: Plan, index: int, target: Target) -> strategies.Candidate:
        stats = self._stats[target.deployment]
        price = self._prices.price(target.model, target.provider)
        return strategies.Candidate(target, stats.in_flight, stats.ewma_s,
                                    price.cost(plan.prompt_tokens, plan.max_tokens), index)

    def _choose(self, plan: Plan, tried: set[str], exchange: Exchange | None,
                allow_degraded: bool = True) -> Target:
        """The next target to try. Raises NoHealthyDeployment when none is left."""
        now = trio.current_time()
        good: list[strategies.Candidate] = []
        poor: list[tuple[tuple[int, float], strategies.Candidate]] = []
        capped: list[float] = []
        for index, target in enumerate(plan.route.targets):
            if target.deployment in tried:
                continue
            stats = self._stats[target.deployment]
            state = stats.availability(now, self._board.last_ok(target.deployment),
                                       plan.prompt_tokens + plan.max_tokens)
            if self._runtime_limits and self._runtime_limits.blocked(target.deployment, now):
                state = "capped"
            if state == "probing":
                self._board.request_probe(target.deployment)
            candidate = self._candidate(plan, index, target)
            if state == "capped":  # a cap holds: never the least-bad fallback
                capped.append(stats.seconds_until_capacity(plan.prompt_tokens +
                                                           plan.max_tokens, now))
            elif state == "ok" and self._board.routable(target.deployment):
                good.append(candidate)
            else:  # least bad first: probing, then down by probe, then cooling (soonest back)
                rank = {"probing": 0, "ok": 1, "cooling": 2}[state]
                poor.append(((rank, stats.cooldown_until), candidate))
        if good and any(c.target.weight > 0 for c in good):
            good = [c for c in good if c.target.weight > 0]  # weight 0: out of rotation
        if good:
            chosen = strategies.choose(plan.strategy, plan.route.label, good, self._rng,
                                       self._scores, self._policy.explore)
        elif poor and allow_degraded:
            chosen = min(poor, key=lambda item: item[0])[1]
            if exchange is not None:
                exchange.degraded = True
        elif capped and not tried:
            raise RateLimited(
                f"Every deployment of `{plan.route.public}` is at its own rate limit.",
                code="deployment_capacity", retry_after_s=min(capped))
        else:
            names = ", ".join(t.deployment for t in plan.route.targets)
            raise NoHealthyDeployment(
                f"No healthy deployment can serve `{plan.route.public}` right now "
                f"(tried: {names}).")
        return chosen.target

    def _hedge_delay(self, plan: Plan, first: Target) -> float | None:
        if plan.hedge_ms > 0:
            return plan.hedge_ms / 1000
        if self._policy.hedge_percentile > 0:
            stats = self._stats[first.deployment]
            if len(stats.samples) >= 20:
                return stats.percentile(self._policy.hedge_percentile)
        return None

    # -- outcomes -------------------------------------------------------------------------------
    def _failed(self, target: Target, exc: GatewayError) -> None:
        if not isinstance(exc, UpstreamError):
            return
        self._metrics.upstream_errors.labels(deployment=target.deployment, kind=exc.kind).inc()
        stats = self._stats[target.deployment]
        now = trio.current_time()
        status = getattr(exc, "upstream_status", None)
        if status == 429:
            wait = exc.retry_after_s if exc.retry_after_s is not None else self._policy.cooldown_s
            stats.cool_down(wait, now, "rate_limited", needs_probe=False)
            self._metrics.cooldowns.labels(deployment=target.deployment,
                                           reason="rate_limited").inc()
            reason, needs_probe = "rate_limited", False
        elif exc.retryable and stats.record_failure(now, self._policy):
            self._metrics.cooldowns.labels(deployment=target.deployment, reason="failures").inc()
            reason, needs_probe = "failures", True
        else:
            return
        if self._on_cooldown is not None:
            self._on_cooldown(target.deployment, stats.cooldown_until - now, reason, needs_probe)

    # -- calling --------------------------------------------------------------------------------
    async def _attempt(self, target: Target, *, call: Call[_R], keep_in_flight: bool,
                       tokens: int, exchange: Exchange) -> _R:
        """One call to one deployment, counted (and traced: its span is the parent of the
        upstream call). ``keep_in_flight``: on success the in-flight count is released later
        by the caller (streams)."""
        stats = self._stats[target.deployment]
        started = trio.current_time()
        stats.requests += 1
        stats.in_flight += 1
        stats.take_capacity(tokens, started)
        if self._runtime_limits:
            self._runtime_limits.take_deployment(target.deployment, started)
        try:
            with traced_attempt(exchange, target):
                value = await call(self._providers[target.deployment], target)
        except BaseException as exc:
            stats.in_flight -= 1
            outcome = "error" if isinstance(exc, GatewayError) else "cancelled"
            self._metrics.attempts.labels(deployment=target.deployment, outcome=outcome).inc()
            if isinstance(exc, GatewayError):
                self._failed(target, exc)
            raise
        if not keep_in_flight:
            stats.in_flight -= 1
        now = trio.current_time()
        stats.observe_latency(now - started, now, self._policy.latency_decay_s)
        stats.record_success()
        self._metrics.attempts.labels(deployment=target.deployment, outcome="ok").inc()
        return value

    async def _run(self, plan: Plan, exchange: Exchange, call: Call[_R],
                   discard: Callable[[_R], Awaitable[None]], keep_in_flight: bool) -> _R:
        tried: set[str] = set()
        errors: list[GatewayError] = []
        start = time.perf_counter()
        with trio.move_on_after(self._policy.total_deadline_s):
            while len(tried) < self._policy.max_attempts:
                try:
                    target = self._choose(plan, tried, exchange)
                except NoHealthyDeployment:
                    if errors:
                        raise errors[-1] from None
                    raise
                tried.add(target.deployment)
                exchange.attempts += 1
                # the deployment being called, until an answer names the winner: a request cut
                # short is charged to what it was sent to
                exchange.deployment, exchange.upstream_model = target.deployment, target.model
                exchange.provider = target.provider
                if len(tried) > 1:
                    self._metrics.fallbacks.labels(model=plan.route.label).inc()
                attempt = partial(self._attempt, call=call, keep_in_flight=keep_in_flight,
                                  tokens=plan.prompt_tokens + plan.max_tokens,
                                  exchange=exchange)
                try:
                    delay = self._hedge_delay(plan, target) if len(tried) == 1 else None
                    if delay is None:
                        value = await attempt(target)
                    else:
                        target, value = await race(
                            target, delay, partial(self._pick_hedge, plan, tried, exchange),
                            attempt, discard, partial(self._hedged, plan, exchange))
                        if exchange.hedged:
                            self._metrics.hedges.labels(event="won" if target.deployment ==
                                                        exchange.hedge_target else "lost").inc()
                except GatewayError as exc:
                    errors.append(exc)
                    if not (isinstance(exc, UpstreamError) and exc.retryable):
                        raise
                    continue
                finally:
                    exchange.upstream_s += time.perf_counter() - start
                    start = time.perf_counter()
                exchange.deployment = target.deployment
                exchange.upstream_model = target.model
                exchange.provider = target.provider
                return value
        if errors:
            raise errors[-1]
        raise UpstreamTimeout("No deployment answered within ROUTING.total_deadline_s.")

    def _pick_hedge(self, plan: Plan, tried: set[str], exchange: Exchange) -> Target | None:
        try:
            target = self._choose(plan, tried, None, allow_degraded=False)
        except NoHealthyDeployment:
            return None
        tried.add(target.deployment)
        exchange.attempts += 1
        return target

    def _hedged(self, plan: Plan, exchange: Exchange, target: Target) -> None:
        exchange.hedged = True
        exchange.hedge_target = target.deployment
        self._metrics.hedges.labels(event="fired").inc()

    # -- the three kinds of call ----------------------------------------------------------------
    async def complete(self, request: ChatRequest, exchange: Exchange,
                       hints: Hints = Hints(), *, route: Route | None = None,
                       prompt_tokens: int | None = None) -> ChatResult:
        """A non-streamed answer. Raises NotFound, NoHealthyDeployment or UpstreamError."""
        plan = self._plan(request.model, request.body, request.max_tokens, hints, exchange,
                          route, prompt_tokens)
        result = await self._run(plan, exchange,
                                 lambda provider, t: provider.complete(request, t.model),
                                 _nothing, keep_in_flight=False)
        exchange.usage = result.usage
        return result

    async def embed(self, request: EmbeddingRequest, exchange: Exchange,
                    hints: Hints = Hints(), *, route: Route | None = None,
                    prompt_tokens: int | None = None) -> EmbeddingResult:
        plan = self._plan(request.model, {"messages": [{"content": " ".join(request.inputs)}]},
                          1, hints, exchange, route, prompt_tokens)
        result = await self._run(plan, exchange,
                                 lambda provider, t: provider.embed(request, t.model),
                                 _nothing, keep_in_flight=False)
        exchange.usage = result.usage
        return result

    async def open_stream(self, request: ChatRequest, exchange: Exchange,
                          hints: Hints = Hints(), *, route: Route | None = None,
                          prompt_tokens: int | None = None) -> OpenStream:
        """A stream whose first chunk arrived. The caller must ``aclose`` it."""
        plan = self._plan(request.model, request.body, request.max_tokens, hints, exchange,
                          route, prompt_tokens)

        async def open_one(provider: Provider, target: Target) -> OpenStream:
            upstream = provider.stream(request, target.model)
            try:
                first = await first_chunk(upstream, target.deployment,
                                          self._upstream.first_token_timeout_s)
            except BaseException:
                await aclose_quietly(upstream)
                raise
            stats = self._stats[target.deployment]

            def release() -> None:
                stats.in_flight -= 1

            return OpenStream(first, upstream, partial(self._failed, target), release)

        stream = await self._run(plan, exchange, open_one, _close_stream, keep_in_flight=True)
        exchange.first_token_s = exchange.elapsed()
        stream.bind(exchange)
        return stream

    async def count_tokens(self, body: Mapping[str, Any], exchange: Exchange, route: Route,
                           hints: Hints = Hints()) -> int:
        """The upstream's count of a request's input tokens, from one of ``route``'s targets
        (the caller keeps only those whose provider counts: Anthropic's), with the same
        choice, retries and cooldowns as a chat. Raises NoHealthyDeployment or
        UpstreamError."""
        plan = self._plan(exchange.model, body, 1, hints, exchange, route, 0)

        async def count(provider: Provider, target: Target) -> int:
            if not isinstance(provider, TokenCounter):  # a bug: the caller chose the targets
                raise InternalError()
            return await provider.count_tokens(body, target.model)

        return await self._run(plan, exchange, count, _nothing, keep_in_flight=False)


async def _nothing(value: object) -> None:
    await trio.lowlevel.checkpoint()


async def _close_stream(stream: OpenStream) -> None:
    await stream.aclose()
