"""The internal pages behind Basic auth: SAQ's dashboard at /internal/saq/, the failed jobs, circus status."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from aiohttp.typedefs import Handler
from redis.exceptions import RedisError
from saq.web import aiohttp as saq_web
from saq.web.common import STATIC_PATH, render

from server.config import Config
from server.errors import NotFound, ServiceUnavailable
from server.keys import CONFIG_KEY, QUEUES_KEY, REDIS_KEY, SAQ_APP_JS_KEY
from server.metrics import CONTENT_TYPE, ExtraGauge, process_metrics
from server.metrics import render as render_metrics
from server.middlewares.auth import INTERNAL_PREFIX, internal_auth, under_prefix
from server.middlewares.security import security_headers
from server.routing.stamps import accepts_scraper_token
from server.services.circus_status import CircusUnavailable, read_circus_status
from server.services.queues import build_queues
from server.workers.failures import recent_failures

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

SAQ_PREFIX = "/internal/saq"
# SAQ's app.js links a job's queue from the site root; under a prefix that link must carry it.
_APP_JS_FIX = ('href: "/queues/" + job.queue', 'href: root_path + "/queues/" + job.queue')


@routes.get("/internal/jobs/failed", name="failed-jobs")
@aiohttp_jinja2.template("failed_jobs.html")
async def get_failed_jobs(request: web.Request) -> dict[str, Any]:
    config = request.config_dict[CONFIG_KEY]
    try:
        async with asyncio.timeout(config.redis.socket_timeout):
            entries = await recent_failures(request.config_dict[REDIS_KEY], config.queue.failed_keep)
    except (RedisError, TimeoutError) as exc:
        log.warning("failed jobs unavailable: %r", exc)
        raise ServiceUnavailable("Redis is unavailable; try again shortly.") from None
    for entry in entries:
        at = entry.get("at")
        entry["at_text"] = (
            datetime.fromtimestamp(at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
            if isinstance(at, (int, float))
            else "?"
        )
    return {"entries": entries, "keep": config.queue.failed_keep}


def _uptime_text(seconds: float) -> str:
    whole = int(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h {minutes}m"
    if hours:
        return f"{hours}h {minutes}m {secs}s"
    return f"{minutes}m {secs}s" if minutes else f"{secs}s"


@routes.get("/internal/status", name="circus-status")
@aiohttp_jinja2.template("status.html")
async def get_status(request: web.Request) -> dict[str, Any]:
    """circusd's watchers and processes; a plain 200 page saying so when circusd does not answer
    (the app runs without circus, e.g. `python -m server serve`)."""
    circus = request.config_dict[CONFIG_KEY].circus
    try:
        watchers = await read_circus_status(circus.endpoint, circus.timeout)
    except (CircusUnavailable, TimeoutError) as exc:
        log.info("internal status: %s", exc)
        return {"endpoint": circus.endpoint, "watchers": None, "uptime": _uptime_text}
    return {"endpoint": circus.endpoint, "watchers": watchers, "uptime": _uptime_text}


# What a queue's depth counts, by SAQ's list names: waiting to run, running, and every job not
# finished (waiting, running, scheduled for later or waiting for a retry).
QUEUE_DEPTH_KINDS = ("queued", "active", "incomplete")


async def queue_depths(request: web.Request) -> list[ExtraGauge]:
    """Each queue's depth, read from Redis now; nothing when Redis does not answer in time."""
    config = request.config_dict[CONFIG_KEY]
    queues = request.config_dict.get(QUEUES_KEY)
    if not queues:
        return []
    pairs = [(name, kind) for name in queues for kind in QUEUE_DEPTH_KINDS]
    try:
        async with asyncio.timeout(config.redis.socket_timeout):
            counts = await asyncio.gather(*(queues[name].count(kind) for name, kind in pairs))  # type: ignore[arg-type]
    except (RedisError, OSError, TimeoutError) as exc:
        log.warning("metrics: queue depths unavailable: %r", exc)
        return []
    return [
        ExtraGauge(
            "job_queue_depth",
            "Jobs in each queue by state: queued (waiting), active (running), incomplete (not finished, "
            "scheduled ones included). Read from Redis at scrape time.",
            ("queue", "state"),
            [(pair, float(count)) for pair, count in zip(pairs, counts, strict=True)],
        )
    ]


@routes.get("/internal/metrics", name="metrics")
@accepts_scraper_token
async def get_metrics(request: web.Request) -> web.Response:
    """Prometheus text format: every process's metrics summed, and the queues' depths."""
    metrics = process_metrics()
    if metrics is None or not request.config_dict[CONFIG_KEY].metrics.enabled:
        raise NotFound("Metrics are off (metrics.enabled).")
    extra = await queue_depths(request)
    metrics.publish()  # this process's figures up to this request
    # Reading every process's files is disk work: off the event loop.
    body = await asyncio.to_thread(render_metrics, metrics, extra)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE, "Cache-Control": "no-store"})


@web.middleware
async def dashboard_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An unknown queue or job is a 404 and Redis down a 503, not the 500 SAQ's handlers would raise."""
    try:
        queue_name = request.match_info.get("queue")
        if queue_name is not None:
            queue = request.app[saq_web.QUEUES_KEY].get(queue_name)
            if queue is None:
                raise NotFound(f"no queue named {queue_name!r}")
            job_key = request.match_info.get("job")
            if job_key is not None and await queue.job(job_key) is None:
                raise NotFound(f"no job {job_key!r} on queue {queue_name!r}")
        return await handler(request)
    except RedisError as exc:
        log.warning("dashboard: Redis unavailable: %r", exc)
        raise ServiceUnavailable("Redis is unavailable; try again shortly.") from None


def saq_dashboard(config: Config, prefix: str = SAQ_PREFIX) -> web.Application:
    """SAQ's web UI as a sub-app to mount at `prefix`, with its own queue objects.

    SAQ's handlers serve the JSON API and static files; the HTML is rendered here with the
    prefix as root_path (SAQ renders it for the site root; docs/decisions.md, "SAQ: the
    dashboard under a prefix"). The queues are the dashboard's own: whoever holds a queue
    closes its Redis client on disconnect.
    """
    app = web.Application(middlewares=[dashboard_errors])
    app[saq_web.QUEUES_KEY] = {}
    html = render(root_path=prefix)

    async def view(request: web.Request) -> web.Response:
        return web.Response(text=html, content_type="text/html")

    async def app_js(request: web.Request) -> web.Response:
        return web.Response(body=bytes(request.app[SAQ_APP_JS_KEY]), content_type="application/javascript")

    async def dashboard_ctx(sub: web.Application) -> AsyncIterator[None]:
        queues = build_queues(config, worker=False)
        sub[saq_web.QUEUES_KEY].update(queues)
        script = await asyncio.to_thread((STATIC_PATH / "app.js").read_text, "utf-8")
        sub[SAQ_APP_JS_KEY][:] = script.replace(*_APP_JS_FIX).encode()
        try:
            yield
        finally:
            sub[saq_web.QUEUES_KEY].clear()
            await queues.disconnect()

    app[SAQ_APP_JS_KEY] = bytearray()
    app.cleanup_ctx.append(dashboard_ctx)
    app.add_routes(
        [
            # Before the static route, which would serve the original.
            web.get("/static/app.js", app_js, name="saq-app-js"),
            web.static("/static", STATIC_PATH, name="saq-static"),
            web.get("/api/queues/{queue}/jobs/{job}", saq_web.jobs, name="saq-api-job"),
            web.post("/api/queues/{queue}/jobs/{job}/retry", saq_web.retry, name="saq-api-job-retry"),
            web.post("/api/queues/{queue}/jobs/{job}/abort", saq_web.abort, name="saq-api-job-abort"),
            web.get("/api/queues", saq_web.queues_, name="saq-api-queues"),
            web.get("/api/queues/{queue}", saq_web.queues_, name="saq-api-queue"),
            web.get("/", view, name="saq-index"),
            web.get("/queues/{queue}", view, name="saq-queue"),
            web.get("/queues/{queue}/jobs/{job}", view, name="saq-job"),
            web.get("/health", saq_web.health, name="saq-health"),
        ]
    )
    return app


def mount_internal(app: web.Application, config: Config) -> None:
    """Mount /internal as a sub-app behind Basic auth: the pages of `routes` (declared with their
    full paths) and SAQ's dashboard, the latter only when a password is set (it opens Redis
    clients). Auth lives on the sub-app so that no other request pays for it."""
    internal = web.Application(middlewares=[internal_auth])
    internal.on_response_prepare.append(security_headers)  # files and answers prepared by handlers
    for route in routes:
        assert isinstance(route, web.RouteDef) and under_prefix(route.path, INTERNAL_PREFIX), route
        path = route.path[len(INTERNAL_PREFIX) :] or "/"
        internal.router.add_route(route.method, path, route.handler, **route.kwargs)
    if config.internal.password:
        internal.add_subapp(SAQ_PREFIX[len(INTERNAL_PREFIX) :], saq_dashboard(config))
    app.add_subapp(INTERNAL_PREFIX, internal)
