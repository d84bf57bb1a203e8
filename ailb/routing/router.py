"""The router: resolve the model, choose a deployment, call it, keep per-deployment counters.

It does the least I/O it can: all choosing is done by :mod:`ailb.routing.strategies` over a
snapshot, and the only awaits are the provider's.
"""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial
from typing import TypeVar

import trio

from ailb.config_schema import UpstreamSettings
from ailb.errors import NoHealthyDeployment, UpstreamError, UpstreamStreamCut, UpstreamTimeout
from ailb.exchange import Exchange
from ailb.health import HealthBoard
from ailb.metrics import Metrics
from ailb.model import ChatRequest, ChatResult, EmbeddingRequest, EmbeddingResult, StreamChunk
from ailb.providers.base import Provider
from ailb.routing import strategies
from ailb.routing.table import Route, RouteTable, Target

_R = TypeVar("_R")


class OpenStream:
    """A routed stream whose first chunk has arrived (so the response can start with a 200).

    Take ``first``, then call :meth:`next` until it returns None; whatever happens, call
    :meth:`aclose`, which closes the upstream call and releases the deployment exactly once,
    even if :meth:`next` was never called.
    """

    __slots__ = ("_closed", "_exchange", "_on_error", "_on_release", "_upstream", "first")

    def __init__(self, first: StreamChunk, upstream: AsyncIterator[StreamChunk],
                 exchange: Exchange, on_error: Callable[[UpstreamError], None],
                 on_release: Callable[[], None]) -> None:
        self.first = first
        self._upstream = upstream
        self._exchange = exchange
        self._on_error = on_error
        self._on_release = on_release
        self._closed = False

    async def next(self) -> StreamChunk | None:
        """The next chunk, or None once the upstream finished cleanly. Raises UpstreamError."""
        start = time.perf_counter()
        try:
            chunk = await anext(self._upstream)
        except StopAsyncIteration:
            return None
        except UpstreamError as exc:
            self._on_error(exc)
            raise
        finally:
            self._exchange.upstream_s += time.perf_counter() - start
        if chunk.usage is not None:
            self._exchange.usage = chunk.usage
        return chunk

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await _aclose(self._upstream)
        finally:
            self._on_release()


class Router:
    def __init__(
        self,
        table: RouteTable,
        providers: Mapping[str, Provider],
        board: HealthBoard,
        metrics: Metrics,
        upstream: UpstreamSettings,
        rng: random.Random | None = None,
    ) -> None:
        self._table = table
        self._providers = providers
        self._board = board
        self._metrics = metrics
        self._upstream = upstream
        self._rng = rng or random.Random()
        self._in_flight: dict[str, int] = {name: 0 for name in providers}

    def route(self, model: str) -> Route:
        """Raises NotFound for a model nobody serves."""
        return self._table.resolve(model, self._board.discovered())

    def models(self) -> list[Route]:
        return self._table.public_models(self._board.discovered())

    def _pick(self, model: str, exchange: Exchange) -> tuple[Target, Provider]:
        route = self.route(model)
        exchange.route = route.label
        healthy = [t for t in route.targets if self._board.routable(t.deployment)]
        if not healthy:
            names = ", ".join(t.deployment for t in route.targets)
            raise NoHealthyDeployment(
                f"No healthy deployment can serve `{model}` right now (tried: {names}).")
        target = strategies.choose(route.strategy, healthy, self._in_flight, self._rng)
        exchange.deployment = target.deployment
        exchange.upstream_model = target.model
        exchange.provider = target.provider
        return target, self._providers[target.deployment]

    def _failed(self, target: Target, exc: UpstreamError) -> None:
        self._metrics.upstream_errors.labels(deployment=target.deployment, kind=exc.kind).inc()

    async def _call(self, model: str, exchange: Exchange,
                    call: Callable[[Provider, str], Awaitable[_R]]) -> _R:
        target, provider = self._pick(model, exchange)
        self._in_flight[target.deployment] += 1
        start = time.perf_counter()
        try:
            return await call(provider, target.model)
        except UpstreamError as exc:
            self._failed(target, exc)
            raise
        finally:
            exchange.upstream_s += time.perf_counter() - start
            self._in_flight[target.deployment] -= 1

    async def complete(self, request: ChatRequest, exchange: Exchange) -> ChatResult:
        """One non-streamed call. Raises NotFound, NoHealthyDeployment or UpstreamError."""
        result = await self._call(request.model, exchange,
                                  lambda provider, model: provider.complete(request, model))
        exchange.usage = result.usage
        return result

    async def embed(self, request: EmbeddingRequest, exchange: Exchange) -> EmbeddingResult:
        """One embeddings call. Raises like :meth:`complete`."""
        result = await self._call(request.model, exchange,
                                  lambda provider, model: provider.embed(request, model))
        exchange.usage = result.usage
        return result

    async def open_stream(self, request: ChatRequest, exchange: Exchange) -> OpenStream:
        """Start a stream and wait for its first chunk (bounded by ``first_token_timeout_s``).

        Raises like :meth:`complete`. The caller must ``aclose`` the returned stream.
        """
        target, provider = self._pick(request.model, exchange)
        upstream = provider.stream(request, target.model)
        self._in_flight[target.deployment] += 1

        def release() -> None:
            self._in_flight[target.deployment] -= 1

        start = time.perf_counter()
        try:
            with trio.fail_after(self._upstream.first_token_timeout_s):
                first = await anext(upstream)
        except BaseException as exc:
            release()
            await _aclose(upstream)
            if isinstance(exc, trio.TooSlowError):
                exc = UpstreamTimeout(f"upstream {target.deployment} sent no first token in time")
            elif isinstance(exc, StopAsyncIteration):
                exc = UpstreamStreamCut(
                    f"upstream {target.deployment} ended the stream without a chunk")
            if isinstance(exc, UpstreamError):
                self._failed(target, exc)
                raise exc from None
            raise
        finally:
            exchange.upstream_s += time.perf_counter() - start
        exchange.first_token_s = exchange.elapsed()
        if first.usage is not None:
            exchange.usage = first.usage
        return OpenStream(first, upstream, exchange, partial(self._failed, target), release)

    def in_flight(self) -> dict[str, int]:
        return dict(self._in_flight)


async def _aclose(iterator: AsyncIterator[StreamChunk]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with trio.CancelScope(shield=True):
            await aclose()
