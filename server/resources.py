"""Every resource the app and the workers open: `make_*` builds one, `*_ctx` pairs its open and close in the app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from server.auth.grants import RevocationListener, TokenGrants
from server.auth.limiter import RateLimiter
from server.cache.store import Generations, ResponseCache
from server.config import Config
from server.keys import (
    CACHE_KEY,
    CONFIG_KEY,
    DB_KEY,
    GENERATIONS_KEY,
    GRANTS_KEY,
    HTTP_KEY,
    QUEUES_KEY,
    RATE_LIMITER_KEY,
    REDIS_KEY,
    REPORTER_KEY,
    REVOCATIONS_KEY,
)
from server.metrics import PUBLISH_INTERVAL, process_metrics, setup_process_metrics
from server.models.backends import make_database as make_configured_database
from server.models.database import Database
from server.models.migrate import prepare_database
from server.redis_clients import async_client, cache_target, queue_target
from server.services.honeybadger.sender import HoneybadgerReporter, reporter_observer
from server.services.queues import JobQueues, build_queues

log = logging.getLogger(__name__)


async def metrics_ctx(app: web.Application) -> AsyncIterator[None]:
    """This process's metrics, and the task publishing what requests count (every
    PUBLISH_INTERVAL; a last time on shutdown). A process started by `python -m server` has set
    the metrics up already; here for an app built by other code (tests, `make dev`). The files
    outlive the app: what this process counted still counts in the system's sums."""
    metrics = await asyncio.to_thread(setup_process_metrics, app[CONFIG_KEY])
    if metrics is None:
        yield
        return

    async def publish_every() -> None:
        while True:
            await asyncio.sleep(PUBLISH_INTERVAL)
            metrics.publish()

    task = asyncio.create_task(publish_every(), name="metrics-publish")
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        metrics.publish()


def make_database(config: Config) -> Database:
    """The Database of `config` (PostgreSQL when database.url is set, else SQLite), not yet open;
    its write waits go to the metrics."""
    metrics = process_metrics()
    return make_configured_database(
        config.database, on_write_wait=metrics.observe_write_wait if metrics is not None else None
    )


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    db = make_database(app[CONFIG_KEY])
    await db.open()
    try:
        # Raises SchemaError (database too new, or migrations pending with auto_migrate off): no start.
        report = await prepare_database(db, auto_migrate=app[CONFIG_KEY].database.auto_migrate)
        for label in report.applied:
            log.info("applied migration %s to %s", label, db.label)
        app[DB_KEY] = db
        yield
    finally:
        await db.close()


def make_redis(config: Config, *, socket_timeout: float | None = None) -> Redis:
    """The app's client. Connecting is bounded here; each use bounds its commands with
    `asyncio.timeout(config.redis.socket_timeout)` (the cache, /readyz, the internal pages):
    redis-py's socket_timeout would start a task per command (docs/decisions.md, "redis-py: per-command timeouts")."""
    return async_client(
        queue_target(config.redis),
        socket_timeout=socket_timeout,
        socket_connect_timeout=config.redis.connect_timeout,
        health_check_interval=30,
    )


async def redis_ctx(app: web.Application) -> AsyncIterator[None]:
    # Lazy: no connection is made here, so the app starts (and says "not ready") with Redis down.
    client = make_redis(app[CONFIG_KEY])
    app[REDIS_KEY] = client
    try:
        yield
    finally:
        await client.aclose()


def make_cache_redis(config: Config) -> Redis:
    """The cache's own client: `cache.redis_url` (or `cache.master_name` behind the sentinels),
    else the queue's Redis (a separate instance may evict entries under maxmemory without touching
    the queues)."""
    return async_client(
        cache_target(config) or queue_target(config.redis),
        socket_connect_timeout=config.redis.connect_timeout,
        health_check_interval=30,
    )


async def cache_ctx(app: web.Application) -> AsyncIterator[None]:
    """The response cache on a Redis client of its own (lazy: nothing connects here)."""
    config = app[CONFIG_KEY]
    client = make_cache_redis(config)
    app[CACHE_KEY] = cache = ResponseCache(client, config.cache, timeout=config.redis.socket_timeout)
    app[GENERATIONS_KEY] = generations = Generations(app[DB_KEY])
    try:
        yield
    finally:
        await generations.close()
        await cache.close()
        await client.aclose()


async def access_ctx(app: web.Application) -> AsyncIterator[None]:
    """The token cache with its revocation listener, and the rate limiter (after database_ctx and
    redis_ctx): both answer from this process or Redis, never from the database per request."""
    config = app[CONFIG_KEY]
    grants = TokenGrants(app[DB_KEY], config.auth)
    app[GRANTS_KEY] = grants
    app[RATE_LIMITER_KEY] = limiter = RateLimiter(
        app[REDIS_KEY],
        prefix=config.rate_limit.prefix,
        timeout=config.redis.socket_timeout,
        retry_interval=config.rate_limit.retry_interval,
    )
    listener = RevocationListener(app[REDIS_KEY], grants.forget)
    app[REVOCATIONS_KEY] = listener
    listener.start()
    grants.start()
    try:
        yield
    finally:
        await listener.stop()
        await limiter.close()
        await grants.close()  # last-used times still pending, while the database is open


def make_http_session(config: Config) -> aiohttp.ClientSession:
    """The outbound HTTP session; call inside a loop."""
    return aiohttp.ClientSession(raise_for_status=False)


async def http_ctx(app: web.Application) -> AsyncIterator[None]:
    session = make_http_session(app[CONFIG_KEY])
    app[HTTP_KEY] = session
    try:
        yield
    finally:
        await session.close()


async def queues_ctx(app: web.Application) -> AsyncIterator[None]:
    # Clients of their own, bounded like the app's: an enqueue with Redis down answers 503 fast.
    queues = build_queues(app[CONFIG_KEY], worker=False)
    app[QUEUES_KEY] = queues
    # Connect in the background (start-up does not wait, and goes on with Redis down): a process
    # holding a connection is one the supervised Redis waits for when everything stops, so a
    # request in flight then can still enqueue (server/supervision.py, redis_shim).
    warm = asyncio.create_task(_connect_queues(queues, app[CONFIG_KEY].redis.connect_timeout))
    try:
        yield
    finally:
        warm.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await warm
        await queues.disconnect()


async def _connect_queues(queues: JobQueues, timeout: float) -> None:
    for queue in queues.values():
        try:
            async with asyncio.timeout(timeout):
                await queue.redis.ping()  # type: ignore[misc]  # redis-py: "awaitable or value"
        except Exception as exc:  # Redis down: the first enqueue will say so (503)
            log.info("queue %s not reachable at start-up (%r)", queue.name, exc)


async def reporter_ctx(app: web.Application) -> AsyncIterator[None]:
    """The error reporter: unhandled request errors and the embedded worker's failures go to it."""
    reporter = HoneybadgerReporter(app[CONFIG_KEY].honeybadger, observer=reporter_observer())
    reporter.start()
    app[REPORTER_KEY] = reporter
    try:
        yield
    finally:
        await reporter.aclose()


@dataclass(slots=True)
class WorkerResources:
    """What jobs use, the same kinds the web app opens: the database, Redis, an HTTP session."""

    db: Database
    redis: Redis
    http: aiohttp.ClientSession


async def open_resources(config: Config) -> WorkerResources:
    """A worker process's resources, made as the app's are; close them with close_resources."""
    db = make_database(config)
    await db.open()
    # Off the request path, every command bounded by redis-py itself is simplest.
    redis = make_redis(config, socket_timeout=config.redis.socket_timeout)
    return WorkerResources(db=db, redis=redis, http=make_http_session(config))


async def close_resources(resources: WorkerResources) -> None:
    await resources.http.close()
    await resources.redis.aclose()
    await resources.db.close()
