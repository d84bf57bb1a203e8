"""Deployment cooldowns shared by every gateway: when one instance cools a deployment down (a
429 with Retry-After, repeated failures), the others avoid it too.

The router reports its cooldowns through a plain callback (:meth:`SharedCooldowns.report`,
given to :class:`~ailb.routing.router.Router` as ``on_cooldown``): no await and no Redis on the
request path, the report goes into a bounded queue. :meth:`SharedCooldowns.run`, a task the
supervisor owns, writes them (``SET ailb:cooldown:<deployment> <json> PX <ms>``, kept when a
longer one is there) and every ``poll_s`` reads the cooldowns of the live router's deployments
and applies those of other instances to the local :class:`~ailb.routing.stats.DeploymentStats`.

Durations, never wall-clock times, cross between instances: the writer sends how long, the
reader reads the key's remaining ``PTTL`` and adds it to its own Trio clock, so clocks that
disagree between machines do not matter. Polling (not pub/sub) keeps it to one round trip per
``poll_s`` per instance and nothing to re-subscribe after an outage; another instance hears of
a cooldown within ``poll_s`` plus a round trip.

Redis down: local cooldowns work as before (they are the router's own); reports wait in
``_pending`` (the latest per deployment) and are written once Redis answers, if not over by
then; the task retries with a growing backoff and logs the outage once.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import trio

from ailb import logs
from ailb.errors import StoreUnavailable
from ailb.routing.stats import DeploymentStats
from ailb.shared.redis import Redis

_log = logging.getLogger("ailb.shared.cooldowns")
PREFIX = "ailb:cooldown:"
MAX_BACKOFF_S = 5.0
# A remote cooldown is applied only when it ends this much later than the local one: the same
# cooldown read again (its PTTL against our clock jitters by a millisecond) changes nothing.
SLACK_S = 0.05

# KEYS[1]: the cooldown; ARGV: ms, payload. Kept when the one there lasts at least as long.
_WRITE = """
if redis.call('PTTL', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[1])
return 1
"""
# KEYS: cooldowns. Reply: {key, payload, pttl_ms, ...} for those that exist.
_READ = """
local out = {}
for _, key in ipairs(KEYS) do
  local value = redis.call('GET', key)
  if value then
    out[#out + 1] = key
    out[#out + 1] = value
    out[#out + 1] = redis.call('PTTL', key)
  end
end
return out
"""

Stats = Callable[[], Mapping[str, DeploymentStats]]


@dataclass(frozen=True, slots=True)
class _Report:
    deployment: str
    until: float  # Trio clock
    reason: str
    needs_probe: bool


class SharedCooldowns:
    def __init__(self, redis: Redis, *, poll_s: float = 0.25, queue: int = 256) -> None:
        self._redis = redis
        self._write = redis.script(_WRITE)
        self._read = redis.script(_READ)
        self._poll_s = poll_s
        self.instance = uuid.uuid4().hex  # this gateway's own reports are not applied back
        self._send, self._receive = trio.open_memory_channel[_Report](queue)
        self._pending: dict[str, _Report] = {}
        self.applied = 0  # others' cooldowns applied here (for tests and curiosity)

    def report(self, deployment: str, seconds: float, reason: str, needs_probe: bool) -> None:
        """The router cooled ``deployment`` down for ``seconds``: share it. Never blocks or
        raises; with the queue full (Redis far behind) the report is dropped (the local
        cooldown still holds)."""
        try:
            self._send.send_nowait(_Report(deployment, trio.current_time() + seconds, reason,
                                           needs_probe))
        except trio.WouldBlock:
            logs.event(_log, "shared cooldown dropped: queue full", logging.WARNING,
                       deployment=deployment)

    async def run(self, stats: Stats, *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write this gateway's cooldowns and apply the others', until cancelled. ``stats``
        returns the live router's statistics (a reload swaps the router). Reports started at
        once: it never waits for Redis."""
        task_status.started()
        backoff = self._poll_s
        down = False
        while True:
            try:
                await self._sync(stats)
            except StoreUnavailable as exc:
                if not down:
                    logs.event(_log, "shared cooldowns: Redis unavailable, local only",
                               logging.WARNING, error=exc.message)
                down, backoff = True, min(MAX_BACKOFF_S, backoff * 2)
            else:
                if down:
                    logs.event(_log, "shared cooldowns: Redis is back")
                down, backoff = False, self._poll_s
            with trio.move_on_after(backoff):  # a new report is written at once
                report = await self._receive.receive()
                self._pending[report.deployment] = report

    async def _sync(self, stats: Stats) -> None:
        """One round: pending reports written, others' cooldowns applied. Raises
        StoreUnavailable (what is not written stays pending)."""
        while True:
            try:
                report = self._receive.receive_nowait()
            except trio.WouldBlock:
                break
            self._pending[report.deployment] = report
        for name, report in list(self._pending.items()):
            left_ms = int((report.until - trio.current_time()) * 1000)
            if left_ms > 0:
                payload = json.dumps({"reason": report.reason, "needs_probe": report.needs_probe,
                                      "origin": self.instance})
                await self._redis.run(self._write, [PREFIX + name], [left_ms, payload])
            del self._pending[name]
        live = stats()
        if not live:
            return
        reply = await self._redis.run(self._read, [PREFIX + name for name in live], [])
        now = trio.current_time()
        for i in range(0, len(reply), 3):
            name = reply[i].decode().removeprefix(PREFIX)
            try:
                data = json.loads(reply[i + 1])
            except ValueError:
                continue  # not ours: another program's key under our prefix
            deployment = live.get(name)
            if (deployment is None or not isinstance(data, dict)
                    or data.get("origin") == self.instance or reply[i + 2] <= 0):
                continue
            until = now + reply[i + 2] / 1000
            if until > deployment.cooldown_until + SLACK_S:
                deployment.cool_down(until - now, now, f"shared:{data.get('reason', '')}",
                                     needs_probe=bool(data.get("needs_probe")))
                self.applied += 1
                logs.event(_log, "applied another gateway's cooldown", deployment=name,
                           seconds=round(until - now, 3), reason=data.get("reason"))
