"""Rate limits shared by every process: GCRA in one Redis Lua script, failing open when Redis is down.

GCRA (the generic cell rate algorithm) keeps one number per client and limit, the theoretical
arrival time of its next request; a request is allowed when that time is less than `burst`
intervals ahead of now. It behaves as a token bucket of `burst` refilled at the rate, takes one
round trip, and reads the clock of Redis, so processes with different clocks agree.
Knows nothing of HTTP: it takes a key and a Rate, and answers a Decision. Why GCRA and failing
open: docs/decisions.md, "Rate limits: GCRA in one Lua script".
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, RedisError

from server.auth.policy import Rate
from server.batching import Batcher
from server.outage import Outage

log = logging.getLogger(__name__)

REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

# KEYS[1]: the bucket. ARGV: interval (seconds between requests at the rate), burst.
# Returns "allowed(0/1) remaining retry-after(s) reset-after(s)": one string, because redis-py
# parses a reply in Python line by line, and four items cost about three times one.
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
  return '0 0 ' .. tostring(-diff) .. ' ' .. tostring(tat - now)
end
redis.call('SET', KEYS[1], tostring(new_tat), 'EX', math.max(1, math.ceil(new_tat - now)))
return '1 ' .. tostring(math.floor(diff / interval)) .. ' 0 ' .. tostring(new_tat - now)
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
    `retry_interval` seconds after each failure so that requests do not wait on it.

    The requests of one process that arrive while a round trip is under way go together in the
    next one (server/batching.py), as one pipeline of EVALSHAs: each is still one script run,
    atomic in Redis, but the client pays a quarter of the CPU per request (measured:
    docs/decisions.md, "Rate limits").
    """

    def __init__(self, redis: Redis, *, prefix: str, timeout: float, retry_interval: float) -> None:
        self._redis = redis
        self._sha = hashlib.sha1(GCRA_SCRIPT.encode()).hexdigest()
        self._prefix = prefix
        self._outage = Outage(
            retry_interval,
            log=log,
            down="rate limiting off: Redis fails (%s: %s); requests pass unlimited until it answers",
            back="rate limiting on again: Redis answers after %.1f s",
        )
        self._batch: Batcher[tuple[str, float, int], bytes] = Batcher(self._run, timeout=timeout)
        # Requests let through without a decision (Redis down), since the process started.
        self.failed_open = 0

    @property
    def round_trips(self) -> int:
        """Round trips made to Redis (`decided / round_trips`: the batching)."""
        return self._batch.round_trips

    @property
    def decided(self) -> int:
        """Requests sent to Redis for a decision."""
        return self._batch.asked

    async def hit(self, key: str, rate: Rate) -> Decision | None:
        """Count one request of `key` against `rate`; None when Redis cannot tell."""
        if not self._outage.usable():
            self.failed_open += 1
            return None
        try:
            answer = await self._batch.ask((f"{self._prefix}:{rate.name}:{key}", rate.interval, rate.burst))
            allowed, remaining, retry_after, reset_after = answer.split()
        except REDIS_ERRORS as exc:
            self.failed_open += 1
            self._outage.failed(exc)
            return None
        self._outage.succeeded()
        return Decision(allowed == b"1", int(float(remaining)), float(retry_after), float(reset_after))

    async def close(self) -> None:
        """Wait for the round trip under way (call before the Redis client closes)."""
        await self._batch.close()

    async def _run(self, batch: Sequence[tuple[str, float, int]], *, load: bool = True) -> list[bytes]:
        results: list[Any]
        if len(batch) == 1:  # alone: a pipeline would only add its own cost
            key, interval, burst = batch[0]
            try:
                results = [await self._redis.evalsha(self._sha, 1, key, interval, burst)]  # type: ignore[misc]
            except NoScriptError as exc:
                results = [exc]
        else:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, interval, burst in batch:
                    pipe.evalsha(self._sha, 1, key, interval, burst)
                results = await pipe.execute(raise_on_error=False)
        if load and any(isinstance(r, NoScriptError) for r in results):  # a new Redis: load the script
            await self._redis.script_load(GCRA_SCRIPT)
            return await self._run(batch, load=False)
        for result in results:
            if isinstance(result, Exception):
                raise result
        return results
