"""Rate limits set at runtime (MarchProxy's ``SetRateLimit``), on top of the configuration.

A limit targets ``key:<id>``, ``model:<public name>`` or ``deployment:<name>`` and allows at most
``requests_per_second``, ``requests_per_minute`` and ``requests_per_hour`` (each optional), with
``burst_size`` as the per-second bucket's size. It takes effect on the next request; the set is
kept in ``rate_limits.json`` under the data dir, so it survives restarts. Checks and takes do
not await (Trio runs one task at a time between awaits), so the limits hold under concurrency.
The buckets are immutable values: a take stores the new ones.

Changes (``set``, ``remove``) are made one at a time under a lock, each computed from the set as
it is when its turn comes: the file is written in a worker thread first, then the change goes
live, so two concurrent changes never lose one another.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import trio

from ailb.errors import ConfigError, InvalidRequest, RateLimited
from ailb.files import write_json_in_thread
from ailb.limits.bucket import TokenBucket

KINDS = ("key", "model", "deployment")
FILE = "rate_limits.json"


@dataclass(frozen=True, slots=True)
class RuntimeLimit:
    limit_id: str
    target: str  # "key:<id>", "model:<name>" or "deployment:<name>"
    requests_per_second: int = 0  # 0: no limit of that kind
    requests_per_minute: int = 0
    requests_per_hour: int = 0
    burst_size: int = 0
    enabled: bool = True
    metadata: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        kind, _, name = self.target.partition(":")
        if kind not in KINDS or not name:
            raise InvalidRequest("target must be key:<id>, model:<name> or deployment:<name>",
                                 param="target")
        if not self.limit_id:
            raise InvalidRequest("limit_id is required", param="limit_id")
        rates = (self.requests_per_second, self.requests_per_minute, self.requests_per_hour)
        if any(r < 0 for r in rates) or self.burst_size < 0:
            raise InvalidRequest("rates and burst_size must be >= 0", param="limit")
        if not any(rates):
            raise InvalidRequest("set at least one of requests_per_second/_minute/_hour",
                                 param="limit")


def _buckets(limit: RuntimeLimit, now: float) -> tuple[TokenBucket, ...]:
    buckets = []
    if limit.requests_per_second:
        size = limit.burst_size or limit.requests_per_second
        buckets.append(TokenBucket.full(size, limit.requests_per_second, now))
    if limit.requests_per_minute:
        buckets.append(TokenBucket.per_minute(limit.requests_per_minute, now))
    if limit.requests_per_hour:
        buckets.append(TokenBucket.full(limit.requests_per_hour, limit.requests_per_hour / 3600,
                                        now))
    return tuple(buckets)


def _taken(buckets: tuple[TokenBucket, ...], now: float) -> tuple[TokenBucket, ...]:
    """One request taken from each bucket that has it."""
    return tuple(bucket.take(1, now) or bucket for bucket in buckets)


class RuntimeLimits:
    def __init__(self, data_dir: Path, now: float) -> None:
        self._path = data_dir / FILE
        self._limits: dict[str, RuntimeLimit] = {}
        self._buckets: dict[str, tuple[TokenBucket, ...]] = {}
        self._changing = trio.Lock()  # one change at a time: file, then live state
        for limit in self._load():
            self._limits[limit.limit_id] = limit
            self._buckets[limit.limit_id] = _buckets(limit, now)

    def _load(self) -> list[RuntimeLimit]:
        if not self._path.exists():
            return []
        try:
            return [RuntimeLimit(**item) for item in json.loads(self._path.read_text("utf-8"))]
        except (OSError, ValueError, TypeError) as exc:
            raise ConfigError(str(self._path), f"cannot be read: {exc}") from exc

    @property
    def path(self) -> Path:
        return self._path

    async def refresh(self, now: float) -> bool:
        """Take the file as it is now (another worker process changed it): a limit that did
        not change keeps its buckets. True when the live limits changed. Raises ConfigError
        when the file cannot be read."""
        async with self._changing:
            limits = {x.limit_id: x for x in await trio.to_thread.run_sync(self._load)}
            if limits == self._limits:
                return False
            self._buckets = {limit_id: self._buckets[limit_id]
                             if self._limits.get(limit_id) == limit and limit_id in self._buckets
                             else _buckets(limit, now) for limit_id, limit in limits.items()}
            self._limits = limits
            return True

    async def _save(self, limits: dict[str, RuntimeLimit]) -> None:
        await write_json_in_thread(self._path, [asdict(x) for x in limits.values()])

    def all(self, target: str = "") -> list[RuntimeLimit]:
        return [x for x in self._limits.values() if not target or x.target == target]

    async def set(self, limit: RuntimeLimit, now: float) -> None:
        """Add or replace ``limit``, on disk first, then live. Raises InvalidRequest for a bad
        limit and GatewayError (500) when the file cannot be written (nothing changes then)."""
        limit.validate()
        async with self._changing:
            # shielded: a change whose file is written also goes live, even if the caller left
            with trio.CancelScope(shield=True):
                await self._save({**self._limits, limit.limit_id: limit})
                self._limits[limit.limit_id] = limit
                self._buckets[limit.limit_id] = _buckets(limit, now)

    async def remove(self, limit_id: str) -> bool:
        """Remove a limit, on disk first, then live. False when there is none of that id.
        Raises GatewayError (500) when the file cannot be written (nothing changes then)."""
        async with self._changing:
            if limit_id not in self._limits:
                return False
            with trio.CancelScope(shield=True):
                await self._save({k: v for k, v in self._limits.items() if k != limit_id})
                del self._limits[limit_id]
                self._buckets.pop(limit_id, None)
            return True

    def _matching(self, targets: Iterable[str]
                  ) -> list[tuple[RuntimeLimit, tuple[TokenBucket, ...]]]:
        wanted = set(targets)
        return [(x, self._buckets[x.limit_id]) for x in self._limits.values()
                if x.enabled and x.target in wanted]

    def admit(self, targets: Iterable[str], now: float) -> None:
        """Take one request from every matching limit, or none. Raises RateLimited (429)."""
        matching = self._matching(targets)
        for limit, buckets in matching:
            for bucket in buckets:
                if bucket.available(now) < 1:
                    raise RateLimited(f"Rate limit {limit.limit_id} on {limit.target} reached.",
                                      code="runtime_limit_exceeded",
                                      retry_after_s=bucket.seconds_until(1, now))
        for limit, buckets in matching:
            self._buckets[limit.limit_id] = _taken(buckets, now)

    def blocked(self, deployment: str, now: float) -> bool:
        """True when a deployment's runtime limit has no request left now (routing skips it)."""
        return any(bucket.available(now) < 1
                   for _, buckets in self._matching([f"deployment:{deployment}"])
                   for bucket in buckets)

    def take_deployment(self, deployment: str, now: float) -> None:
        for limit, buckets in self._matching([f"deployment:{deployment}"]):
            self._buckets[limit.limit_id] = _taken(buckets, now)
