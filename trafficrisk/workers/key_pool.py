"""The LLM API keys, with their limits kept for the whole fleet in Redis.

Each key has requests per minute, tokens per minute and a concurrency cap. Taking a
key is one Lua call that checks and books all three atomically, so any number of
assess threads in any number of processes on any number of machines stay inside
the limits together. A 429 puts the key in a cooldown (the reply's Retry-After, or
a default) that every worker honours; a 401 or 403 disables it until restart with
the keys changed. Low-priority work may use only a share of each key's requests
per minute and concurrency, so that the rest is always there for high-priority
work, which may use all of it.

Keys are known in Redis only by a digest; shown, they are masked to their last four
characters. The Redis client is handed in: this module imports no redis.
"""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

PREFIX = "tr:llmkey:"
# A minute, plus a second: a request is booked here a moment before the provider
# counts it, and clocks differ; a window a little longer never overshoots theirs.
WINDOW_S = 61
DEFAULT_COOLDOWN_S = 10.0

# ARGV: now, low share (1 - reserve for low priority, 1 for high), tokens wanted, request id,
# in-flight lease seconds, then per key: id, rpm, tpm, concurrency. Every call counts against
# a key's whole limits; low-priority calls also against their share of the requests and the
# concurrency. Books the least loaded key with room and returns {key id, 0}, else {"",
# seconds until one may have room}.
_ACQUIRE = """
local now, share, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local request, lease = ARGV[4], tonumber(ARGV[5])
local low = share < 1
local wait, best, best_load = 60, nil, nil
for i = 6, #ARGV, 4 do
  local id, rpm, tpm, cap = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local base = '""" + PREFIX + """' .. id
  if redis.call('EXISTS', base .. ':disabled') == 0 then
    local cooldown = tonumber(redis.call('GET', base .. ':cooldown') or '0')
    if cooldown > now then
      wait = math.min(wait, cooldown - now)
    else
      local cutoff = now - """ + str(WINDOW_S) + """
      redis.call('ZREMRANGEBYSCORE', base .. ':requests', '-inf', cutoff)
      redis.call('ZREMRANGEBYSCORE', base .. ':requests_low', '-inf', cutoff)
      -- The tokens in the window are kept as a running total: summing every booking on
      -- every call would cost Redis time in proportion to the requests in the window.
      local expired, gone = redis.call('ZRANGEBYSCORE', base .. ':tokens', '-inf', cutoff), 0
      for _, member in ipairs(expired) do gone = gone + tonumber(string.match(member, ':(%d+)$')) end
      if gone > 0 then redis.call('DECRBY', base .. ':tokens_total', gone) end
      redis.call('ZREMRANGEBYSCORE', base .. ':tokens', '-inf', cutoff)
      redis.call('ZREMRANGEBYSCORE', base .. ':inflight', '-inf', now)
      redis.call('ZREMRANGEBYSCORE', base .. ':inflight_low', '-inf', now)
      local used, flying = redis.call('ZCARD', base .. ':requests'), redis.call('ZCARD', base .. ':inflight')
      local spent = tonumber(redis.call('GET', base .. ':tokens_total') or '0')
      local fits_rpm, fits_cap = used < rpm, flying < cap
      local rpm_set = ':requests'
      if low then
        if redis.call('ZCARD', base .. ':requests_low') >= math.max(1, math.floor(rpm * share)) then
          fits_rpm, rpm_set = false, ':requests_low'
        end
        if redis.call('ZCARD', base .. ':inflight_low') >= math.max(1, math.floor(cap * share)) then
          fits_cap = false
        end
      end
      local fits_tpm = spent + tokens <= tpm
      if fits_rpm and fits_cap and fits_tpm then
        local load = used / rpm + flying / cap
        if best == nil or load < best_load then best, best_load = id, load end
      elseif not fits_rpm or not fits_tpm then
        local oldest = redis.call('ZRANGE', base .. (fits_rpm and ':requests' or rpm_set), 0, 0, 'WITHSCORES')
        if oldest[2] then wait = math.min(wait, tonumber(oldest[2]) + """ + str(WINDOW_S) + """ - now) end
      else
        wait = math.min(wait, 0.05)
      end
    end
  end
end
if best == nil then return {'', tostring(wait)} end
local base = '""" + PREFIX + """' .. best
redis.call('ZADD', base .. ':requests', now, request)
redis.call('ZADD', base .. ':tokens', now, request .. ':' .. tokens)
redis.call('INCRBY', base .. ':tokens_total', tokens)
redis.call('ZADD', base .. ':inflight', now + lease, request)
local sets = {':requests', ':tokens', ':tokens_total', ':inflight'}
if low then
  redis.call('ZADD', base .. ':requests_low', now, request)
  redis.call('ZADD', base .. ':inflight_low', now + lease, request)
  sets = {':requests', ':tokens', ':tokens_total', ':inflight', ':requests_low', ':inflight_low'}
end
for _, suffix in ipairs(sets) do
  redis.call('EXPIRE', base .. suffix, 120 + math.ceil(lease))
end
return {best, '0'}
"""

# KEYS: in-flight, low in-flight, tokens, tokens total. ARGV: request id, tokens booked, tokens used.
_RELEASE = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local booked = ARGV[1] .. ':' .. ARGV[2]
local at = redis.call('ZSCORE', KEYS[3], booked)
if at then
  redis.call('ZREM', KEYS[3], booked)
  redis.call('ZADD', KEYS[3], at, ARGV[1] .. ':' .. ARGV[3])
  redis.call('INCRBY', KEYS[4], tonumber(ARGV[3]) - tonumber(ARGV[2]))
end
return 1
"""


def key_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def mask(key: str) -> str:
    return f"...{key[-4:]}" if len(key) > 8 else "***"


@dataclass(frozen=True)
class KeyLimits:
    rpm: int
    tpm: int
    concurrency: int


@dataclass(frozen=True)
class Lease:
    """One booked call on one key; give it back with `KeyPool.release`."""

    key: str
    key_id: str
    request: str
    tokens: int


@dataclass(frozen=True)
class KeyState:
    masked: str
    state: str  # "ok", "cooling" or "disabled"
    detail: str
    requests_last_minute: int
    in_flight: int


class NoKeyAvailable(Exception):
    """Every key is disabled, or stayed busy until the deadline."""


class KeyPool:
    def __init__(self, client: Any, keys: Sequence[str], limits: KeyLimits, *, high_reserve: float = 0.0,
                 lease_s: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        if not keys:
            raise ValueError("a key pool needs at least one key")
        self.client = client
        self.keys = {key_id(k): k for k in keys}
        self.limits = limits
        self.high_reserve = high_reserve
        self.lease_s = lease_s
        self.clock = clock  # wall-clock seconds, shared by every machine of the fleet
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)

    def acquire(self, tokens: int, *, high: bool, deadline: float) -> Lease:
        """Book a call of about `tokens` on some key, waiting (until `deadline`, monotonic) for room."""
        share = 1.0 if high else 1.0 - self.high_reserve
        while True:
            request = uuid.uuid4().hex[:16]
            args: list[Any] = [self.clock(), share, tokens, request, self.lease_s]
            for kid in self.keys:
                args += [kid, self.limits.rpm, self.limits.tpm, self.limits.concurrency]
            chosen, wait = self._acquire(args=args)
            chosen = chosen.decode() if isinstance(chosen, bytes) else chosen
            if chosen:
                return Lease(self.keys[chosen], chosen, request, tokens)
            if self.all_disabled():
                raise NoKeyAvailable("every LLM key is disabled")
            left = deadline - time.monotonic()
            if left <= 0:
                raise NoKeyAvailable("rate limited: no key had room in time")
            # Jittered, so that the threads waiting for the same slot do not all ask at once.
            time.sleep(min(max(float(wait), 0.01) * random.uniform(1.0, 1.5), 1.0, left))

    def release(self, lease: Lease, tokens_used: int | None = None) -> None:
        base = PREFIX + lease.key_id
        used = lease.tokens if tokens_used is None else tokens_used
        sets = (":inflight", ":inflight_low", ":tokens", ":tokens_total")
        self._release(keys=[base + suffix for suffix in sets],
                      args=[lease.request, lease.tokens, used])

    def cool_down(self, lease: Lease, seconds: float | None) -> None:
        """The provider said 429: no worker uses this key for `seconds`."""
        until = time.time() + (seconds if seconds is not None else DEFAULT_COOLDOWN_S)
        self.client.set(PREFIX + lease.key_id + ":cooldown", until, ex=int(until - time.time()) + 5)

    def disable(self, lease: Lease, reason: str) -> None:
        """The provider refused the key (401, 403): no worker uses it again."""
        self.client.set(PREFIX + lease.key_id + ":disabled", reason)

    def all_disabled(self) -> bool:
        return all(self.client.exists(PREFIX + kid + ":disabled") for kid in self.keys)

    def states(self) -> list[KeyState]:
        """Each key's state, masked: for the dashboard and the logs."""
        now = time.time()
        states = []
        for kid, key in self.keys.items():
            base = PREFIX + kid
            disabled = self.client.get(base + ":disabled")
            cooldown = float(self.client.get(base + ":cooldown") or 0)
            requests = self.client.zcount(base + ":requests", now - WINDOW_S, "+inf")
            flying = self.client.zcount(base + ":inflight", now, "+inf")
            if disabled is not None:
                state = "disabled"
                detail = disabled.decode() if isinstance(disabled, bytes) else str(disabled)
            elif cooldown > now:
                state, detail = "cooling", f"{cooldown - now:.0f} s left"
            else:
                state, detail = "ok", ""
            states.append(KeyState(mask(key), state, detail, requests, flying))
        return states
