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
from server.controllers import docs, pages
from server.controllers.versions import mount_api_versions
from server.keys import CONFIG_KEY, DB_KEY, HTTP_KEY, REDIS_KEY
from server.middlewares.cache import cache, cache_ctx
from server.middlewares.errors import errors
from server.middlewares.request_id import request_id
from server.middlewares.validation import validation
from server.models.database import Database
from server.services.honeybadger import honeybadger_ctx
from server.models.migrate import prepare_database

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


async def database_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CONFIG_KEY].database
    db = Database(cfg.path, busy_timeout_ms=cfg.busy_timeout_ms, read_connections=cfg.read_connections)
    await db.open()
    try:
        # Raises SchemaError (database too new, or migrations pending with auto_migrate off): no start.
        report = await prepare_database(db, auto_migrate=cfg.auto_migrate)
        for label in report.applied:
            log.info("applied migration %s to %s", label, db.path)
        app[DB_KEY] = db
        yield
    finally:
        await db.close()


def make_redis(config: Config) -> Redis:
    """A client whose every command is bounded, so a hung Redis cannot hang a request."""
    cfg = config.redis
    return Redis.from_url(
        cfg.url,
        socket_timeout=cfg.socket_timeout,
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


async def http_ctx(app: web.Application) -> AsyncIterator[None]:
    session = aiohttp.ClientSession(raise_for_status=False)
    app[HTTP_KEY] = session
    try:
        yield
    finally:
        await session.close()


def create_app(config: Config) -> web.Application:
    """Build the application for `config`. Synchronous and free of I/O: resources open on start-up."""
    app = web.Application(
        middlewares=[request_id, errors],
        client_max_size=config.server.max_body_bytes,
    )
    app[CONFIG_KEY] = config
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=jinja2.select_autoescape(["html"]),
    )
    # The error reporter opens first and closes last: failures while the others close (an
    # embedded worker's last jobs) are still reported.
    app.cleanup_ctx.extend([honeybadger_ctx, database_ctx, redis_ctx, cache_ctx, http_ctx])
    app.add_routes(pages.routes)
    docs.setup_docs(app)
    # cache before validation: a hit skips validating the request it answers (see cache.py).
    mount_api_versions(app, middlewares=[cache, validation])
    return app
