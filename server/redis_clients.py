"""Redis clients of the configured servers: by URL, or the current master through Sentinel.

The queue's Redis is `redis.*`; the cache may have its own (`cache.redis_url`, or a master name
of its own behind the same sentinels), since a cache wants an eviction policy and a queue wants
`noeviction` and an append-only file. Through Sentinel, redis-py's `master_for` gives a normal
client whose connections follow the master across a failover; SAQ takes it like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import redis
import redis.sentinel
from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel

from server.config import Config, RedisConfig


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """One Redis server to connect to, as the config names it."""

    url: str
    password: str = ""  # used when the URL has none
    sentinels: tuple[tuple[str, int], ...] = ()
    master_name: str = ""
    sentinel_password: str = ""

    @property
    def db(self) -> int:
        path = urlsplit(self.url).path.strip("/")
        return int(path) if path.isdigit() else 0

    @property
    def effective_password(self) -> str:
        return unquote(urlsplit(self.url).password or "") or self.password

    def describe(self) -> str:
        """Where it is, for messages and logs (never the password)."""
        if self.sentinels:
            where = ",".join(f"{host}:{port}" for host, port in self.sentinels)
            return f"master {self.master_name!r} of sentinels {where}"
        parts = urlsplit(self.url)
        host = parts.netloc.rpartition("@")[2]
        return urlunsplit(parts._replace(netloc=host))


def _addresses(sentinels: tuple[str, ...]) -> tuple[tuple[str, int], ...]:
    pairs = (item.rpartition(":") for item in sentinels)
    return tuple((host, int(port)) for host, _, port in pairs)


def queue_target(cfg: RedisConfig) -> RedisTarget:
    """The main Redis: the queues, job results, failed jobs, and the cache unless it has its own."""
    return RedisTarget(
        url=cfg.url,
        password=cfg.password,
        sentinels=_addresses(cfg.sentinels),
        master_name=cfg.master_name,
        sentinel_password=cfg.sentinel_password,
    )


def cache_target(config: Config) -> RedisTarget | None:
    """The cache's own Redis, or None when it shares the queue's."""
    main = queue_target(config.redis)
    if config.cache.redis_url:
        return RedisTarget(url=config.cache.redis_url, password=config.redis.password)
    if config.cache.master_name and main.sentinels:
        return RedisTarget(
            url=main.url,
            password=main.password,
            sentinels=main.sentinels,
            master_name=config.cache.master_name,
            sentinel_password=main.sentinel_password,
        )
    return None


class _SentinelClient(Redis):
    """A master's client that also closes its sentinels' connections when closed."""

    # (Not `sentinel`: that is the SENTINEL command's method.)
    watched_by: Sentinel | None = None

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        if self.watched_by is not None:
            for client in self.watched_by.sentinels:
                await client.aclose()


def async_client(target: RedisTarget, **kwargs: Any) -> Redis:
    """An asyncio client; `kwargs` are redis-py's (timeouts, retry, health checks)."""
    auth = target.effective_password or None
    if not target.sentinels:
        client: Redis = Redis.from_url(target.url, password=auth, **kwargs)
        return client
    timeout = kwargs.get("socket_connect_timeout") or kwargs.get("socket_timeout")
    sentinel = Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels),
        sentinel_kwargs={"password": target.sentinel_password or None, "socket_timeout": timeout},
    )
    master = sentinel.master_for(target.master_name, redis_class=_SentinelClient, db=target.db, password=auth, **kwargs)
    assert isinstance(master, _SentinelClient)
    master.watched_by = sentinel
    return master


def sync_client(target: RedisTarget, **kwargs: Any) -> redis.Redis:
    """A blocking client, for the launcher and circus hooks (never on an event loop)."""
    auth = target.effective_password or None
    if not target.sentinels:
        client: redis.Redis = redis.Redis.from_url(target.url, password=auth, **kwargs)
        return client
    timeout = kwargs.get("socket_connect_timeout") or kwargs.get("socket_timeout")
    # redis-py types its synchronous Sentinel loosely; the master's client is a redis.Redis.
    sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(target.sentinels),
        sentinel_kwargs={"password": target.sentinel_password or None, "socket_timeout": timeout},
    )
    master = sentinel.master_for(target.master_name, db=target.db, password=auth, **kwargs)  # type: ignore[no-untyped-call]
    assert isinstance(master, redis.Redis)
    return master
