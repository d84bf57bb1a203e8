"""A key's shared rate-limit counters in Redis/Valkey: :class:`RedisCounters` implements
:class:`ailb.accounting.counters.SharedCounters`.

Each take and each release is one Lua script, atomic on the server, that mirrors
:func:`ailb.accounting.counters.take` / :func:`~ailb.accounting.counters.release` line by line
(a property test holds them to the same answers). The clock is the server's ``TIME``, read
inside the script: one clock for every gateway, whatever their own clocks say. (Writes after
``TIME`` need effects replication: the default since Redis 5, the only mode in Redis 7 and
Valkey.) The script only decides and stores; the outcome, the refusal's message and headers
are built here by the pure functions from the state the script returns.

Per key, two Redis keys with the same hash tag (one cluster slot): a hash holding the RPM and
TPM buckets (``rpm_cap``, ``rpm_rate``, ``rpm_tokens``, ``rpm_at``, the same for ``tpm_``), and
a sorted set of the open leases scored by when they end. Both expire after twice the longest of
a minute and ``lease_s`` without a take or a release: by then every lease has ended and every
bucket is full, which is what a missing key means. Numbers cross as ``%.17g`` text, which
round-trips a double exactly (a Lua number returned to the client would be cut to an integer).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ailb.accounting import counters as rules
from ailb.accounting.counters import Counters, Taken
from ailb.accounting.reservations import KeyLimits, Refusal
from ailb.errors import InternalError
from ailb.limits.bucket import TokenBucket
from ailb.shared.redis import Redis

_COMMON = """
local function fmt(x) return string.format('%.17g', x) end
local function clock(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
-- TokenBucket.at: refilled up to now (a time before the last update changes nothing)
local function at(b, now)
  if now <= b.at then return b end
  return {cap = b.cap, rate = b.rate, tokens = math.min(b.cap, b.tokens + (now - b.at) * b.rate),
          at = now}
end
local function stored(prefix)
  local f = redis.call('HMGET', KEYS[1], prefix .. 'cap', prefix .. 'rate', prefix .. 'tokens',
                       prefix .. 'at')
  if not f[1] then return nil end
  return {cap = tonumber(f[1]), rate = tonumber(f[2]), tokens = tonumber(f[3]),
          at = tonumber(f[4])}
end
local function store(prefix, b)
  if b then
    redis.call('HSET', KEYS[1], prefix .. 'cap', fmt(b.cap), prefix .. 'rate', fmt(b.rate),
               prefix .. 'tokens', fmt(b.tokens), prefix .. 'at', fmt(b.at))
  else
    redis.call('HDEL', KEYS[1], prefix .. 'cap', prefix .. 'rate', prefix .. 'tokens',
               prefix .. 'at')
  end
end
local function out(b)
  if not b then return {} end
  return {fmt(b.cap), fmt(b.rate), fmt(b.tokens), fmt(b.at)}
end
"""

# KEYS: hash, leases. ARGV: rpm, tpm, parallel ('' = no limit), tokens, lease, lease_s, ttl_ms,
# now ('' = the server's TIME). Reply: {verdict, now, rpm, tpm, leases} where verdict is 'ok' or
# the limit that refused, rpm/tpm are the buckets after the step ({} = none) and leases the
# open ones after it as {id, ends, ...}.
_TAKE = _COMMON + """
local now = clock(ARGV[8])
local tokens = tonumber(ARGV[4])
-- reservations._bucket: no limit, no bucket; new or a changed limit, a full one
local function current(prefix, arg)
  if arg == '' then return nil end
  local limit = tonumber(arg)
  local b = stored(prefix)
  if b == nil or b.cap ~= limit then
    return {cap = limit, rate = limit / 60.0, tokens = limit, at = now}
  end
  return at(b, now)
end
local rpm = current('rpm_', ARGV[1])
local tpm = current('tpm_', ARGV[2])
local after = '(' .. fmt(now)  -- a lease is open while it ends after now
-- reservations.limit_refusal, in its order
local verdict = 'ok'
if tpm and tokens > tpm.cap then
  verdict = 'tpm'  -- TokenBucket.fits: more than the whole bucket is never taken
elseif ARGV[3] ~= '' and redis.call('ZCOUNT', KEYS[2], after, '+inf') >= tonumber(ARGV[3]) then
  verdict = 'parallel'
elseif rpm and rpm.tokens < 1 then
  verdict = 'rpm'
elseif tpm and tpm.tokens < tokens then
  verdict = 'tpm'  -- TokenBucket.can_take
end
if verdict == 'ok' then
  if rpm then rpm.tokens = rpm.tokens - 1 end
  if tpm then tpm.tokens = tpm.tokens - tokens end
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', fmt(now))
  redis.call('ZADD', KEYS[2], fmt(now + tonumber(ARGV[6])), ARGV[5])
  store('rpm_', rpm)
  store('tpm_', tpm)
  redis.call('PEXPIRE', KEYS[1], ARGV[7])
  redis.call('PEXPIRE', KEYS[2], ARGV[7])
end
-- taken: the leases as stored now; refused: nothing was written (ended leases stay stored, so
-- a release of one still gives back, as in Python), the open ones are what the refusal counts
local leases = redis.call('ZRANGEBYSCORE', KEYS[2], verdict == 'ok' and '-inf' or after, '+inf',
                          'WITHSCORES')
return {verdict, fmt(now), out(rpm), out(tpm), leases}
"""

# KEYS: hash, leases. ARGV: lease, unused_tokens, cancel ('1'/'0'), now. Reply: 1 if
# the lease was open (as stored, ended or not: counters.release), else 0 and nothing changed.
_RELEASE = _COMMON + """
if not redis.call('ZSCORE', KEYS[2], ARGV[1]) then return 0 end
local now = clock(ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[1])
local function give_back(b, amount)  -- TokenBucket.give_back
  if not b then return nil end
  b = at(b, now)
  return {cap = b.cap, rate = b.rate, tokens = math.min(b.cap, b.tokens + math.max(0, amount)),
          at = b.at}
end
store('tpm_', give_back(stored('tpm_'), tonumber(ARGV[2])))
if ARGV[3] == '1' then store('rpm_', give_back(stored('rpm_'), 1)) end
return 1  -- the TTL stays the take's: it knows lease_s, a release does not
"""

# KEYS: hash, leases. Reply: {rpm, tpm, leases} as stored (nothing refilled, nothing dropped).
_READ = _COMMON + """
return {out(stored('rpm_')), out(stored('tpm_')),
        redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '+inf', 'WITHSCORES')}
"""


def _keys(key_id: str) -> list[str]:
    tag = "{" + key_id + "}"  # one cluster slot for both
    return [f"ailb:rl:{tag}", f"ailb:rl:{tag}:leases"]


def _limit(value: int | None) -> str:
    return "" if value is None else str(value)


def _at(now: float | None) -> str:
    return "" if now is None else repr(float(now))


def _bucket(raw: Sequence[bytes]) -> TokenBucket | None:
    return TokenBucket(*(float(v) for v in raw)) if raw else None


def _leases(raw: Sequence[bytes]) -> dict[str, float]:
    return {raw[i].decode(): float(raw[i + 1]) for i in range(0, len(raw), 2)}


class RedisCounters:
    """:class:`~ailb.accounting.counters.SharedCounters` on Redis/Valkey. Every call is one
    round trip and may raise StoreUnavailable."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._take = redis.script(_TAKE)
        self._release = redis.script(_RELEASE)
        self._read = redis.script(_READ)

    @staticmethod
    def _ttl_ms(lease_s: float) -> int:
        return int(2 * max(60.0, lease_s) * 1000)

    async def take(self, key_id: str, limits: KeyLimits, tokens: int, lease: str,
                   lease_s: float, *, now: float | None = None) -> Taken | Refusal:
        """:func:`ailb.accounting.counters.take` on the key's counters at the server's time
        (``now``: a fixed time instead, for tests). Raises StoreUnavailable; InternalError if
        the script and the Python rules disagree (a bug)."""
        reply: Any = await self._redis.run(self._take, _keys(key_id), [
            _limit(limits.rpm), _limit(limits.tpm), _limit(limits.parallel), tokens, lease,
            repr(float(lease_s)), self._ttl_ms(lease_s), _at(now)])
        verdict, at = reply[0].decode(), float(reply[1])
        state = Counters(_bucket(reply[2]), _bucket(reply[3]), _leases(reply[4]))
        if verdict == "ok":
            return Taken(lease, state)
        refused = rules.refusal(state, limits, tokens, at)
        if refused is None or refused.limit != verdict:
            raise InternalError()  # the Lua and counters.take disagree: the property test's job
        return refused

    async def release(self, key_id: str, lease: str, unused_tokens: int, cancel: bool, *,
                      now: float | None = None) -> None:
        """:func:`ailb.accounting.counters.release` on the key's counters (an unknown lease
        changes nothing). Raises StoreUnavailable."""
        await self._redis.run(self._release, _keys(key_id), [
            lease, unused_tokens, "1" if cancel else "0", _at(now)])

    async def read(self, key_id: str) -> Counters:
        """The key's counters as stored (not refilled; ended leases not dropped). Raises
        StoreUnavailable."""
        reply: Any = await self._redis.run(self._read, _keys(key_id), [])
        return Counters(_bucket(reply[0]), _bucket(reply[1]), _leases(reply[2]))
