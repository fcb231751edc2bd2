"""The application factory: builds the aiohttp app from a Config, opening nothing until it starts."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import aiohttp_jinja2
import jinja2
from aiohttp import web
from redis.asyncio import Redis

from server.config import Config
from server.controllers import baz, docs, pages
from server.controllers.internal import mount_internal
from server.controllers.versions import mount_api_versions
from server.keys import (
    CONFIG_KEY, DB_KEY, HONEYBADGER_KEY, HTTP_KEY, QUEUES_KEY, REDIS_KEY, SLOW_JOB_ENQUEUER_KEY,
)
from server.middlewares.cache import cache, cache_ctx
from server.middlewares.errors import errors
from server.middlewares.request_id import request_id
from server.middlewares.validation import validation
from server.models.backends import make_database as make_configured_database
from server.models.database import Database
from server.services.honeybadger import honeybadger_ctx
from server.models.migrate import prepare_database
from server.workers.queues import build_queues
from server.workers.runner import WorkerGroup
from server.workers.settings import WorkerResources

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


def make_database(config: Config) -> Database:
    """The Database of `config`, not yet open (the web app and the workers both use this)."""
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
    redis-py's socket_timeout would start a task per command (asyncio.wait_for on every write)."""
    cfg = config.redis
    return Redis.from_url(
        cfg.url,
        socket_timeout=socket_timeout,
        socket_connect_timeout=cfg.connect_timeout,
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


def make_http_session(config: Config) -> aiohttp.ClientSession:
    """The outbound HTTP session (the web app and the workers both use this); call inside a loop."""
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


async def embedded_worker_ctx(app: web.Application) -> AsyncIterator[None]:
    """Workers for every queue inside this process (queue.embedded_worker), using the app's resources.

    They leave signals to aiohttp; on shutdown running jobs get queue.shutdown_grace, then are requeued.
    """
    config = app[CONFIG_KEY]
    resources = WorkerResources(db=app[DB_KEY], redis=app[REDIS_KEY], http=app[HTTP_KEY])
    group = WorkerGroup.for_queues(
        config, config.queue.names, resources=resources,
        reporter=app[HONEYBADGER_KEY].report_job_failure,
    )
    await group.start()
    try:
        yield
    finally:
        await group.stop()


def create_app(config: Config) -> web.Application:
    """Build the application for `config`. Synchronous and free of I/O: resources open on start-up."""
    app = web.Application(
        middlewares=[request_id, errors],
        client_max_size=config.server.max_body_bytes,
    )
    app[CONFIG_KEY] = config
    # baz's seam to the queue (tests may swap it for an enqueuer of their own).
    app[SLOW_JOB_ENQUEUER_KEY] = baz.queue_slow_job
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=jinja2.select_autoescape(["html"]),
    )
    # The error reporter opens first and closes last: failures while the others close (an
    # embedded worker's last jobs) are still reported.
    app.cleanup_ctx.extend([honeybadger_ctx, database_ctx, redis_ctx, cache_ctx, http_ctx, queues_ctx])
    if config.queue.embedded_worker:
        app.cleanup_ctx.append(embedded_worker_ctx)  # last: stops first, while the resources are open
    app.add_routes(pages.routes)
    docs.setup_docs(app)
    mount_internal(app, config)
    # cache before validation: a hit skips validating the request it answers (see cache.py).
    mount_api_versions(app, middlewares=[cache, validation])
    return app
