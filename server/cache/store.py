"""The Redis side of the response cache: entries, namespace generations, locks, outages.

Keys of one namespace share a Redis Cluster hash tag, so one script may touch them all:

    <prefix>:{<ns>}:e:g<gen>:<request key>     an entry (see Entry.encode)
    <prefix>:{<ns>}:lock:g<gen>:<request key>  held (SET NX PX) by the one request computing it
    <prefix>:{<ns>}:index                      sorted set of the namespace's entry keys, by expiry
    <prefix>:refresh:<client>                  how many `no-cache` refreshes a client made lately

`<gen>` is the namespace's generation, kept in the database (table cache_generations) and
bumped in the same transaction as every write that invalidates the namespace. A request reads
it before looking up its entry, so once a write has committed no process, whatever its view of
Redis, finds an entry computed before it: read-your-writes holds across processes even when
Redis cannot be told (an invalidation that times out). Deleting the old generation's entries
is only housekeeping; they would expire with their TTL anyway. See docs/decisions.md,
"Read-your-writes across processes".

Both reads of a hit, the generation and the entry, are shared by the requests of a process that
wait at the same time (server/batching.py): one database read and one Redis MGET per round trip,
each started after every request it answers arrived, so sharing never serves an older answer.
(An MGET may name several namespaces: one Redis or a Sentinel-watched master, as the client is.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

from server.batching import Batcher
from server.config import CacheConfig
from server.outage import Outage

log = logging.getLogger(__name__)

# What a failing Redis may raise through redis-py: its own errors (connection, timeout, ...)
# and, in rare paths, the OS or asyncio ones underneath.
REDIS_ERRORS: tuple[type[BaseException], ...] = (RedisError, OSError, TimeoutError)

# KEYS: entry, lock, index. ARGV: entry value, ttl ms, expiry ms, now ms, lock token.
# Stores the entry, indexes it, trims expired index members; drops our lock.
_STORE_LUA = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', ARGV[4])
if ARGV[5] ~= '' and redis.call('GET', KEYS[2]) == ARGV[5] then
  redis.call('DEL', KEYS[2])
end
return 1
"""
_UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# KEYS: index. Entry keys come from the index (same hash slot).
_INVALIDATE_LUA = """
local entries = redis.call('ZRANGE', KEYS[1], 0, -1)
for i = 1, #entries, 500 do
  redis.call('UNLINK', unpack(entries, i, math.min(i + 499, #entries)))
end
redis.call('DEL', KEYS[1])
return #entries
"""

READ_GENERATION_SQL = "SELECT generation FROM cache_generations WHERE namespace = ?"
READ_GENERATIONS_SQL = "SELECT namespace, generation FROM cache_generations WHERE namespace IN ({})"
BUMP_GENERATION_SQL = (
    "INSERT INTO cache_generations (namespace, generation) VALUES (?, 1) "
    "ON CONFLICT (namespace) DO UPDATE SET generation = cache_generations.generation + 1"
)


class GenerationStore(Protocol):
    """What the generations need of the database (server.models.database.Database has it)."""

    async def fetchval(self, sql: str, params: Any = ...) -> Any: ...
    async def fetchall(self, sql: str, params: Any = ...) -> Any: ...
    async def execute(self, sql: str, params: Any = ...) -> Any: ...


async def read_generation(db: GenerationStore, namespace: str) -> int:
    """The namespace's generation (0 before its first invalidation)."""
    return int(await db.fetchval(READ_GENERATION_SQL, (namespace,)) or 0)


class Generations:
    """The namespaces' generations, read for many requests at once (see the module docstring)."""

    def __init__(self, db: GenerationStore) -> None:
        self._db = db
        self._batch: Batcher[str, int] = Batcher(self._read)

    async def get(self, namespace: str) -> int:
        """`namespace`'s generation, read after this call began; raises what the database raises."""
        return await self._batch.ask(namespace)

    @property
    def reads(self) -> tuple[int, int]:
        """(database reads made, generations asked for) since the process started."""
        return self._batch.round_trips, self._batch.asked

    async def _read(self, namespaces: Sequence[str]) -> list[int]:
        wanted = list(dict.fromkeys(namespaces))
        if len(wanted) == 1:  # the common case: one namespace, the primary-key read
            return [await read_generation(self._db, wanted[0])] * len(namespaces)
        placeholders = ", ".join("?" * len(wanted))
        rows = await self._db.fetchall(READ_GENERATIONS_SQL.format(placeholders), tuple(wanted))
        found = {row[0]: int(row[1]) for row in rows}
        return [found.get(namespace, 0) for namespace in namespaces]

    async def close(self) -> None:
        """Wait for the read under way (call before the database closes)."""
        await self._batch.close()


async def bump_generation(db: GenerationStore, namespace: str) -> None:
    """Start a new generation of `namespace`: no entry stored before is read again. Inside the
    caller's transaction (Database.transaction() nests), it commits with the write."""
    await db.execute(BUMP_GENERATION_SQL, (namespace,))


def new_token() -> str:
    return secrets.token_hex(8)


def namespace_base(prefix: str, namespace: str) -> str:
    return f"{prefix}:{{{namespace}}}"


async def invalidate(redis: Redis, prefix: str, namespace: str) -> int:
    """Delete every stored entry of `namespace` (housekeeping: a bumped generation already hides
    them); how many there were."""
    base = namespace_base(prefix, namespace)
    script = redis.register_script(_INVALIDATE_LUA)
    return int(await script(keys=[f"{base}:index"]))


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


class ResponseCache:
    """Reads and writes cached answers in Redis; the async methods may raise one of REDIS_ERRORS."""

    def __init__(self, redis: Redis, config: CacheConfig, timeout: float) -> None:
        self.redis = redis
        # Every round trip is bounded here with asyncio.timeout (a timer). redis-py's own
        # socket_timeout would wrap each command's write in asyncio.wait_for, a new task per
        # command, on the hot path of every cache hit.
        self.timeout = timeout
        # Lookups of concurrent requests: one MGET (server/batching.py), one timer per round trip.
        self._lookups: Batcher[str, bytes | None] = Batcher(self._mget, timeout=timeout)
        self.config = config
        self.prefix = config.prefix
        self.outage = Outage(
            config.retry_interval,
            log=log,
            down="response cache unavailable (%s: %s); answering from handlers (X-Cache: BYPASS) until Redis is back",
            back="response cache available again after %.1f s",
        )
        self.lock_ms = max(1, int(config.lock_timeout * 1000))
        self._store = redis.register_script(_STORE_LUA)
        self._unlock = redis.register_script(_UNLOCK_LUA)

    def entry_key(self, namespace: str, request_key: str) -> str:
        """`request_key` already carries the generation (`g<gen>:...`)."""
        return f"{self.prefix}:{{{namespace}}}:e:{request_key}"

    async def get(self, entry_key: str) -> bytes | None:
        """The stored entry, looked up after this call began; raises one of REDIS_ERRORS."""
        return await self._lookups.ask(entry_key)

    async def _mget(self, keys: Sequence[str]) -> list[bytes | None]:
        wanted = list(dict.fromkeys(keys))
        if len(wanted) == 1:
            return [await self.redis.get(wanted[0])] * len(keys)
        found = dict(zip(wanted, await self.redis.mget(wanted), strict=True))
        return [found[key] for key in keys]

    async def close(self) -> None:
        """Wait for the lookup under way (call before the Redis client closes)."""
        await self._lookups.close()

    async def lock(self, namespace: str, request_key: str) -> str | None:
        """A token when this request now holds the key's lock, else None."""
        base = namespace_base(self.prefix, namespace)
        mine = new_token()
        async with asyncio.timeout(self.timeout):
            acquired = await self.redis.set(f"{base}:lock:{request_key}", mine, nx=True, px=self.lock_ms)
        return mine if acquired else None

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

    async def store(self, namespace: str, request_key: str, entry: Entry, lock_token: str | None) -> None:
        """Write the entry and release the lock (when held), in one round trip."""
        base = namespace_base(self.prefix, namespace)
        now_ms = int(time.time() * 1000)
        ttl_ms = entry.ttl * 1000
        async with asyncio.timeout(self.timeout):
            await self._store(
                keys=[f"{base}:e:{request_key}", f"{base}:lock:{request_key}", f"{base}:index"],
                args=[entry.encode(), ttl_ms, now_ms + ttl_ms, now_ms, lock_token or ""],
            )

    async def invalidate(self, namespace: str) -> int:
        async with asyncio.timeout(self.timeout):
            return await invalidate(self.redis, self.prefix, namespace)

    async def refresh_allowed(self, client: str) -> bool:
        """Whether `client` may have one more `no-cache` refresh: at most cache.refresh_budget
        per cache.refresh_window seconds, counted in Redis (so across every process)."""
        budget = self.config.refresh_budget
        if budget <= 0:
            return False
        key = f"{self.prefix}:refresh:{client}"
        async with asyncio.timeout(self.timeout), self.redis.pipeline(transaction=False) as pipe:
            pipe.incr(key)
            pipe.expire(key, self.config.refresh_window, nx=True)
            used, _ = await pipe.execute()
        return int(used) <= budget

    async def drop(self, namespace: str) -> bool:
        """Delete the namespace's stored entries if Redis answers (True); never raises."""
        if not self.outage.usable():
            return False
        try:
            await self.invalidate(namespace)
        except REDIS_ERRORS as exc:
            self.outage.failed(exc)
            return False
        self.outage.succeeded()
        return True
