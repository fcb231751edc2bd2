"""Every resource the app and the workers open: `make_*` builds one, `*_ctx` pairs its open and close in the app."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from server.cache.store import ResponseCache
from server.config import Config
from server.keys import CACHE_KEY, CONFIG_KEY, DB_KEY, HTTP_KEY, QUEUES_KEY, REDIS_KEY, REPORTER_KEY
from server.models.backends import make_database as make_configured_database
from server.models.database import Database
from server.models.migrate import prepare_database
from server.redis_clients import async_client, cache_target, queue_target
from server.services.honeybadger.sender import HoneybadgerReporter
from server.services.queues import build_queues

log = logging.getLogger(__name__)


def make_database(config: Config) -> Database:
    """The Database of `config` (PostgreSQL when database.url is set, else SQLite), not yet open."""
    return make_configured_database(config.database)


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


async def cache_ctx(app: web.Application) -> AsyncIterator[None]:
    """The response cache: on the app's Redis client (after redis_ctx), or on a client of the
    cache's own Redis when one is configured (cache.redis_url, cache.master_name)."""
    config = app[CONFIG_KEY]
    target = cache_target(config)
    own = None
    if target is not None:
        own = async_client(target, socket_connect_timeout=config.redis.connect_timeout, health_check_interval=30)
    app[CACHE_KEY] = ResponseCache(own or app[REDIS_KEY], config.cache, timeout=config.redis.socket_timeout)
    try:
        yield
    finally:
        if own is not None:
            await own.aclose()


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
    try:
        yield
    finally:
        await queues.disconnect()


async def reporter_ctx(app: web.Application) -> AsyncIterator[None]:
    """The error reporter: unhandled request errors and the embedded worker's failures go to it."""
    reporter = HoneybadgerReporter(app[CONFIG_KEY].honeybadger)
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
