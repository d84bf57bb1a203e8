"""The series one finished request counts in, labelled once per (model, provider)
(:meth:`ailb.metrics.Metrics.request_series`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Histogram

if TYPE_CHECKING:
    from ailb.metrics import Metrics


class RequestSeries:
    """The series a finished request of one (model, provider) counts in, labelled once: a
    dict lookup per request instead of a ``.labels()`` call per series. A series is made when
    first used, as ``.labels()`` would (time to first token, tokens: not by every request)."""

    __slots__ = ("_completion", "_metrics", "_model", "_prompt", "_provider", "_requests",
                 "_ttft", "duration", "overhead")

    def __init__(self, metrics: Metrics, model: str, provider: str) -> None:
        self._metrics = metrics
        self._model = model
        self._provider = provider
        self._requests: dict[int, Counter] = {}
        self._ttft: Histogram | None = None
        self._prompt: Counter | None = None
        self._completion: Counter | None = None
        self.duration = metrics.duration.labels(model, provider)
        self.overhead = metrics.overhead.labels(provider)

    def requests(self, status: int) -> Counter:
        child = self._requests.get(status)
        if child is None:
            child = self._metrics.requests.labels(self._model, self._provider, str(status))
            self._requests[status] = child
        return child

    def ttft(self) -> Histogram:
        if self._ttft is None:
            self._ttft = self._metrics.ttft.labels(self._model, self._provider)
        return self._ttft

    def tokens(self) -> tuple[Counter, Counter]:
        """Prompt and completion."""
        if self._prompt is None or self._completion is None:
            tokens = self._metrics.tokens
            self._prompt = tokens.labels(self._model, self._provider, "prompt")
            self._completion = tokens.labels(self._model, self._provider, "completion")
        return self._prompt, self._completion
