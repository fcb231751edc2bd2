"""GET /baz: a cat fact, cached in Redis, and the slow job it starts on a miss."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from server.json_codec import json_response
from server.keys import CONFIG_KEY, HTTP_KEY, SLOW_JOB_ENQUEUER_KEY
from server.middlewares.cache import request_key
from server.routing.meta import meta_for
from server.routing.openapi import problem_response
from server.routing.stamps import cached, describe
from server.routing.versions import api_version
from server.services.cat_facts import fetch_cat_fact
from server.workers.enqueue import enqueue_once

routes = web.RouteTableDef()

BAZ_NAMESPACE = "baz"
# How long the example job works (the old boilerplate's slow_job slept too).
SLOW_JOB_SECONDS = 2.0


async def queue_slow_job(request: web.Request) -> str:
    """The production enqueuer (create_app sets it): `slow_job` on the default queue, carrying
    the request id, at most one per cache key per cache TTL (however often the answer is
    recomputed: a refresh, the cache down or disabled); raises ServiceUnavailable when Redis is down."""
    route = meta_for(request)
    policy = route.cache if route is not None else None
    assert policy is not None  # get_baz is @cached
    ttl = policy.ttl or request.config_dict[CONFIG_KEY].cache.default_ttl
    job = await enqueue_once(
        request.config_dict,
        "slow_job",
        once_key=request_key(request, policy),
        ttl=ttl,
        seconds=SLOW_JOB_SECONDS,
    )
    return job.key


async def enqueue_slow_job(request: web.Request) -> dict[str, str] | None:
    """Enqueue `slow_job` for this answer: its key and status URL, or None when no queue is wired.

    The seam to the jobs queue: the enqueuer set under SLOW_JOB_ENQUEUER_KEY (the queue's
    cleanup context sets it) returns the job's key and raises ServiceUnavailable (503 with
    Retry-After) when the queue cannot take the job.
    """
    enqueue = request.config_dict.get(SLOW_JOB_ENQUEUER_KEY)
    if enqueue is None:
        return None
    key = await enqueue(request)
    if key is None:
        return None
    return {"key": key, "url": f"/api/v{api_version(request)}/jobs/{key}"}


@routes.get("/baz", name="baz")
@describe(
    summary="A cat fact (cached), and the job its computation started",
    responses={
        502: problem_response(502),
        503: problem_response(503),
        504: problem_response(504),
    },
)
@cached(namespace=BAZ_NAMESPACE)
async def get_baz(request: web.Request) -> web.Response:
    fact = await fetch_cat_fact(request.config_dict[HTTP_KEY], request.config_dict[CONFIG_KEY].cat_facts)
    payload: dict[str, Any] = {"fact": fact.fact}
    job = await enqueue_slow_job(request)
    if job is not None:
        payload["job"] = job
    return json_response(payload)
