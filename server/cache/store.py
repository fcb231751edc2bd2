"""The Redis side of the response cache: entries, namespace invalidation, locks, outages.

Keys of one namespace share a Redis Cluster hash tag, so one script may touch them all:

    <prefix>:{<ns>}:e:<request key>     an entry (see Entry.encode)
    <prefix>:{<ns>}:lock:<request key>  held (SET NX PX) by the one request computing that entry
    <prefix>:{<ns>}:index               sorted set of the namespace's entry keys, by expiry
    <prefix>:{<ns>}:gen                 a token that changes at every invalidation

A hit is one GET of the entry. Invalidating a namespace deletes its indexed entries and changes
its token, in one script; a request that started computing before that (and may have read old
data) stores its answer only if the token is still the one it read first, so no stale answer
outlives an invalidation. The index drops expired members whenever an entry is stored.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError

from server.config import CacheConfig

log = logging.getLogger(__name__)

# What a failing Redis may raise through redis-py: its own errors (connection, timeout, ...)
# and, in rare paths, the OS or asyncio ones underneath.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

# KEYS: entry, lock, index, gen. ARGV: entry value, ttl ms, expiry ms, now ms, gen read first, lock token.
# Stores only when no invalidation happened since the computation began; always drops our lock.
_STORE_LUA = """
local stored = 0
if (redis.call('GET', KEYS[4]) or '') == ARGV[5] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('ZADD', KEYS[3], ARGV[3], KEYS[1])
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[4])
  stored = 1
end
if ARGV[6] ~= '' and redis.call('GET', KEYS[2]) == ARGV[6] then
  redis.call('DEL', KEYS[2])
end
return stored
"""
_UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# KEYS: gen, index. ARGV: a fresh token. Entry keys come from the index (same hash slot).
_INVALIDATE_LUA = """
redis.call('SET', KEYS[1], ARGV[1])
local entries = redis.call('ZRANGE', KEYS[2], 0, -1)
for i = 1, #entries, 500 do
  redis.call('UNLINK', unpack(entries, i, math.min(i + 499, #entries)))
end
redis.call('DEL', KEYS[2])
return #entries
"""


def new_token() -> str:
    return secrets.token_hex(8)


def namespace_base(prefix: str, namespace: str) -> str:
    return f"{prefix}:{{{namespace}}}"


async def invalidate(redis: Redis, prefix: str, namespace: str) -> int:
    """Delete every entry of `namespace` and fence off computations in flight; how many were deleted."""
    base = namespace_base(prefix, namespace)
    script = redis.register_script(_INVALIDATE_LUA)
    return int(await script(keys=[f"{base}:gen", f"{base}:index"], args=[new_token()]))


@dataclass(slots=True)
class Entry:
    """A stored answer."""

    status: int
    ttl: int
    stored_at: float
    content_type: str
    headers: dict[str, str]
    body: bytes

    def encode(self) -> bytes:
        """b"<status> <ttl> <stored at> <content type>\\n<headers as JSON, or empty>\\n<body>"."""
        head = f"{self.status} {self.ttl} {self.stored_at:.3f} {self.content_type}\n".encode()
        headers = json.dumps(self.headers, separators=(",", ":")).encode() if self.headers else b""
        return b"".join((head, headers, b"\n", self.body))

    @classmethod
    def decode(cls, raw: bytes) -> Entry | None:
        """The entry, or None when it is unreadable (written by an incompatible version)."""
        try:
            head, headers, body = raw.split(b"\n", 2)
            status, ttl, stored_at, content_type = head.decode().split(" ", 3)
            return cls(
                int(status),
                int(ttl),
                float(stored_at),
                content_type,
                json.loads(headers) if headers else {},
                body,
            )
        except ValueError:
            return None


class Outage:
    """Tracks a Redis outage: one warning when it starts, and a pause before trying Redis again."""

    __slots__ = ("down_since", "retry_at", "retry_interval")

    def __init__(self, retry_interval: float) -> None:
        self.retry_interval = retry_interval
        self.down_since: float | None = None
        self.retry_at = 0.0

    def usable(self) -> bool:
        """False while Redis failed less than `retry_interval` ago: skip it instead of waiting on it."""
        return self.down_since is None or time.monotonic() >= self.retry_at

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            log.warning(
                "response cache unavailable (%s: %s); answering from handlers (X-Cache: BYPASS) until Redis is back",
                type(exc).__name__,
                exc,
            )
        else:
            log.debug("response cache still unavailable: %r", exc)
        self.retry_at = now + self.retry_interval

    def succeeded(self) -> None:
        if self.down_since is not None:
            log.info("response cache available again after %.1f s", time.monotonic() - self.down_since)
            self.down_since = None


class ResponseCache:
    """Reads and writes cached answers in Redis; the async methods may raise one of REDIS_ERRORS."""

    def __init__(self, redis: Redis, config: CacheConfig, timeout: float) -> None:
        self.redis = redis
        # Every round trip is bounded here with asyncio.timeout (a timer). redis-py's own
        # socket_timeout would wrap each command's write in asyncio.wait_for, a new task per
        # command, on the hot path of every cache hit.
        self.timeout = timeout
        self.config = config
        self.prefix = config.prefix
        self.outage = Outage(config.retry_interval)
        self.lock_ms = max(1, int(config.lock_timeout * 1000))
        # Namespaces whose invalidation failed during an outage: invalidated before the next read.
        self.pending: set[str] = set()
        self._store = redis.register_script(_STORE_LUA)
        self._unlock = redis.register_script(_UNLOCK_LUA)

    def entry_key(self, namespace: str, request_key: str) -> str:
        return f"{self.prefix}:{{{namespace}}}:e:{request_key}"

    async def get(self, entry_key: str) -> bytes | None:
        async with asyncio.timeout(self.timeout):
            return await self.redis.get(entry_key)  # type: ignore[no-any-return]

    async def lock(self, namespace: str, request_key: str) -> tuple[str | None, str]:
        """(a token when this request now holds the key's lock, else None; the namespace's token)."""
        base = namespace_base(self.prefix, namespace)
        mine = new_token()
        async with asyncio.timeout(self.timeout), self.redis.pipeline(transaction=False) as pipe:
            pipe.set(f"{base}:lock:{request_key}", mine, nx=True, px=self.lock_ms)
            pipe.get(f"{base}:gen")
            acquired, generation = await pipe.execute()
        return (mine if acquired else None), (generation or b"").decode()

    async def poll(self, namespace: str, request_key: str) -> tuple[bytes | None, bool]:
        """(the entry, whether its lock is held), in one round trip."""
        base = namespace_base(self.prefix, namespace)
        async with asyncio.timeout(self.timeout):
            raw, holder = await self.redis.mget(f"{base}:e:{request_key}", f"{base}:lock:{request_key}")
        return raw, holder is not None

    async def unlock(self, namespace: str, request_key: str, token: str) -> None:
        lock_key = f"{namespace_base(self.prefix, namespace)}:lock:{request_key}"
        async with asyncio.timeout(self.timeout):
            await self._unlock(keys=[lock_key], args=[token])

    async def store(
        self, namespace: str, request_key: str, entry: Entry, generation: str, lock_token: str | None
    ) -> bool:
        """Write the entry unless the namespace was invalidated since `generation` was read, and
        release the lock (when held), in one round trip. True when stored."""
        base = namespace_base(self.prefix, namespace)
        now_ms = int(time.time() * 1000)
        ttl_ms = entry.ttl * 1000
        async with asyncio.timeout(self.timeout):
            stored = await self._store(
                keys=[f"{base}:e:{request_key}", f"{base}:lock:{request_key}", f"{base}:index", f"{base}:gen"],
                args=[entry.encode(), ttl_ms, now_ms + ttl_ms, now_ms, generation, lock_token or ""],
            )
        return bool(stored)

    async def invalidate(self, namespace: str) -> int:
        async with asyncio.timeout(self.timeout):
            return await invalidate(self.redis, self.prefix, namespace)

    async def flush_pending(self) -> None:
        """Apply invalidations that failed while Redis was unreachable."""
        for namespace in sorted(self.pending):
            await self.invalidate(namespace)
            self.pending.discard(namespace)

    async def invalidate_or_defer(self, namespace: str) -> bool:
        """Invalidate now (True), or, with Redis unreachable, before this process's next cache read."""
        if self.outage.usable():
            try:
                await self.flush_pending()
                await self.invalidate(namespace)
            except REDIS_ERRORS as exc:
                self.outage.failed(exc)
            else:
                self.outage.succeeded()
                return True
        self.pending.add(namespace)
        return False
