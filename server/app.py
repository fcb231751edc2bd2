"""The application factory: builds the aiohttp app from a Config, opening nothing until it starts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from server.config import Config
from server.controllers import baz, docs, pages
from server.controllers.internal import mount_internal
from server.controllers.versions import version_tables
from server.keys import (
    CONFIG_KEY,
    DB_KEY,
    HTTP_KEY,
    REDIS_KEY,
    REPORTER_KEY,
    SLOW_JOB_ENQUEUER_KEY,
    STORAGE_FAULTS_KEY,
)
from server.middlewares.bearer import bearer_layer
from server.middlewares.cache import cache_layer
from server.middlewares.cors import cors
from server.middlewares.errors import every_request
from server.middlewares.rate_limit import rate_limit_layer
from server.middlewares.security import host_check
from server.middlewares.validation import validation_layer
from server.models.faults import StorageFaults
from server.resources import (
    WorkerResources,
    access_ctx,
    cache_ctx,
    database_ctx,
    http_ctx,
    metrics_ctx,
    queues_ctx,
    redis_ctx,
    reporter_ctx,
)
from server.routing.chain import Layer
from server.routing.versions import mount_api_versions
from server.workers.reporting import job_failure_reporter
from server.workers.runner import WorkerGroup

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates"


async def embedded_worker_ctx(app: web.Application) -> AsyncIterator[None]:
    """Workers for every queue inside this process (queue.embedded_worker), using the app's resources.

    They leave signals to aiohttp; on shutdown running jobs get queue.shutdown_grace, then are requeued.
    """
    config = app[CONFIG_KEY]
    resources = WorkerResources(db=app[DB_KEY], redis=app[REDIS_KEY], http=app[HTTP_KEY])
    group = WorkerGroup.for_queues(
        config,
        config.queue.names,
        resources=resources,
        reporter=job_failure_reporter(app[REPORTER_KEY]),
    )
    await group.start()
    try:
        yield
    finally:
        await group.stop()


def api_layers(config: Config) -> list[Layer]:
    """The per-route layers of the API versions, outermost first (see routing/chain.py).

    Each wraps only the routes that declare what it serves. Rate limits first (they also count
    requests that fail authentication), then tokens and scopes, so that a cached answer only ever
    reaches a client allowed to see it; the cache before validation: a hit skips validating the
    request it answers (see middlewares/cache.py).
    """
    layers: list[Layer] = [bearer_layer(config.auth), cache_layer, validation_layer(config.server.max_violations)]
    if config.rate_limit.enabled:
        layers.insert(0, rate_limit_layer(config.rate_limit))
    return layers


def create_app(config: Config) -> web.Application:
    """Build the application for `config`. Synchronous and free of I/O: resources open on start-up."""
    # The one middleware every request passes (request id, trace context, Host check, problem
    # details, metrics); what only some routes need is composed per route from its stamps (api_layers).
    middlewares = [every_request(host_check(config), count=config.metrics.enabled)]
    cross_origin = cors(config.cors)  # None unless cors.allow_origins names some
    if cross_origin is not None:
        middlewares.append(cross_origin)  # inside: the Host check and request ids apply to preflights too
    app = web.Application(middlewares=middlewares, client_max_size=config.server.max_body_bytes)
    app[CONFIG_KEY] = config
    app[STORAGE_FAULTS_KEY] = StorageFaults()
    # baz's seam to the queue (tests may swap it for an enqueuer of their own).
    app[SLOW_JOB_ENQUEUER_KEY] = baz.queue_slow_job
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=jinja2.select_autoescape(["html"]),
    )
    # The metrics first (the others report to them). The error reporter opens next and closes
    # last but one: failures while the others close (an embedded worker's last jobs) are reported.
    app.cleanup_ctx.extend(
        [metrics_ctx, reporter_ctx, database_ctx, redis_ctx, cache_ctx, access_ctx, http_ctx, queues_ctx]
    )
    if config.queue.embedded_worker:
        app.cleanup_ctx.append(embedded_worker_ctx)  # last: stops first, while the resources are open
    app.add_routes(pages.routes)
    docs.setup_docs(app)
    mount_internal(app, config)
    mount_api_versions(app, version_tables(), api_layers(config))
    return app
