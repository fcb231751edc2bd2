"""Pages outside the versioned API: the index, liveness and readiness."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from server.controllers.versions import API_VERSIONS
from server.json_codec import json_response
from server.keys import CONFIG_KEY, DB_KEY, REDIS_KEY
from server.routing.stamps import describe
from server.routing.versions import describe_routes

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

READY_CHECK_TIMEOUT = 2.0


@routes.get("/", name="index")
@describe(
    summary="Home page: the API versions and their routes",
    responses={200: {"description": "HTML page", "content": {"text/html": {}}}},
)
@aiohttp_jinja2.template("index.html")
async def get_index(request: web.Request) -> dict[str, Any]:
    infos = describe_routes(request.app)
    versions = [
        {"number": v, "prefix": f"/api/v{v}", "routes": [r for r in infos if r.version == v]}
        for v in sorted(API_VERSIONS)
    ]
    return {"versions": versions, "pages": [r for r in infos if r.version is None]}


@routes.get("/healthz", name="healthz")
@describe(summary="Liveness: 200 while the process runs")
async def get_healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def _check(name: str, probe: Any, timeout: float = READY_CHECK_TIMEOUT) -> tuple[str, str]:
    try:
        await asyncio.wait_for(probe, timeout)
    except Exception as exc:  # any failure of a dependency means "not ready", named below
        log.warning("readiness check %s failed: %r", name, exc)
        return name, f"error: {type(exc).__name__}"
    return name, "ok"


@routes.get("/readyz", name="readyz")
@describe(
    summary="Readiness: checks the database and Redis",
    responses={200: "Every check is ok", 503: "A check failed; `failing` names it (not problem details)"},
)
async def get_readyz(request: web.Request) -> web.Response:
    config = request.config_dict[CONFIG_KEY]
    results = dict(
        await asyncio.gather(
            _check("database", request.config_dict[DB_KEY].ping()),
            # The app's Redis client leaves command timeouts to its users: this one is ours.
            _check("redis", request.config_dict[REDIS_KEY].ping(), config.redis.socket_timeout),
        )
    )
    failing = sorted(name for name, state in results.items() if state != "ok")
    body: dict[str, Any] = {"status": "ok" if not failing else "unavailable", "checks": results}
    if failing:
        body["failing"] = failing
        return json_response(body, status=503, headers={"Retry-After": "5"})
    return json_response(body)
