"""Rate limits shared by every process: GCRA in one Redis Lua script, failing open when Redis is down.

GCRA (the generic cell rate algorithm) keeps one number per client and limit, the theoretical
arrival time of its next request; a request is allowed when that time is less than `burst`
intervals ahead of now. It behaves as a token bucket of `burst` refilled at the rate, takes one
round trip, and reads the clock of Redis, so processes with different clocks agree.
Knows nothing of HTTP: it takes a key and a Rate, and answers a Decision. Why GCRA and failing
open: docs/decisions.md, "Rate limits: GCRA in one Lua script".
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from server.auth.policy import Rate

log = logging.getLogger(__name__)

REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

# KEYS[1]: the bucket. ARGV: interval (seconds between requests at the rate), burst.
# Returns {allowed 0/1, remaining, retry after (s), reset after (s)}; floats travel as strings.
# The offset keeps seconds small enough for microseconds to survive Lua's "%.14g".
GCRA_SCRIPT = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = (tonumber(clock[1]) - 1700000000) + tonumber(clock[2]) / 1000000
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local diff = now - (new_tat - interval * burst)
if diff < 0 then
  return {0, 0, tostring(-diff), tostring(tat - now)}
end
redis.call('SET', KEYS[1], tostring(new_tat), 'EX', math.max(1, math.ceil(new_tat - now)))
return {1, math.floor(diff / interval), '0', tostring(new_tat - now)}
"""


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    # Requests the client may still send at once.
    remaining: int
    # Seconds until a request would be allowed (0 when this one was).
    retry_after: float
    # Seconds until the client's allowance is whole again.
    reset_after: float


class RateLimiter:
    """Counts requests against Rates in Redis. `hit` answers None (no decision: let the request
    through) while Redis fails; the outage is logged once, and Redis is left alone for
    `retry_interval` seconds after each failure so that requests do not wait on it."""

    def __init__(self, redis: Redis, *, prefix: str, timeout: float, retry_interval: float) -> None:
        self._script = redis.register_script(GCRA_SCRIPT)
        self._redis = redis
        self._prefix = prefix
        self._timeout = timeout
        self._retry_interval = retry_interval
        self._retry_at = 0.0
        self.down_since: float | None = None
        # Requests let through without a decision (Redis down), since the process started.
        self.failed_open = 0

    async def hit(self, key: str, rate: Rate) -> Decision | None:
        """Count one request of `key` against `rate`; None when Redis cannot tell."""
        if self.down_since is not None and time.monotonic() < self._retry_at:
            self.failed_open += 1
            return None
        try:
            async with asyncio.timeout(self._timeout):
                allowed, remaining, retry_after, reset_after = await self._script(
                    keys=[f"{self._prefix}:{rate.name}:{key}"],
                    args=[rate.interval, rate.burst],
                    client=self._redis,
                )
        except REDIS_ERRORS as exc:
            self._failed(exc)
            return None
        if self.down_since is not None:
            log.info("rate limiting on again: Redis answers after %.1f s", time.monotonic() - self.down_since)
            self.down_since = None
        return Decision(bool(allowed), int(remaining), float(retry_after), float(reset_after))

    def _failed(self, exc: BaseException) -> None:
        self.failed_open += 1
        now = time.monotonic()
        self._retry_at = now + self._retry_interval
        if self.down_since is None:
            self.down_since = now
            log.warning(
                "rate limiting off: Redis fails (%s: %s); requests pass unlimited until it answers",
                type(exc).__name__,
                exc,
            )
