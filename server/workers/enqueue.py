"""Enqueueing from the web app: at a priority, carrying the request id and trace context,
ServiceUnavailable when Redis is down."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from typing import Any

from aiohttp import web
from aiohttp.helpers import ChainMapProxy
from redis.exceptions import RedisError
from saq.job import Job

from server.errors import ServiceUnavailable
from server.keys import CONFIG_KEY, QUEUES_KEY
from server.log_context import current_request_id, current_traceparent
from server.metrics import process_metrics
from server.services.queues import job_defaults

log = logging.getLogger(__name__)

# How long a client is asked to wait when the queue's Redis is unreachable.
RETRY_AFTER_SECONDS = 5

AppLike = web.Application | ChainMapProxy  # an app, or a handler's request.config_dict


def _unavailable(action: str, exc: BaseException) -> ServiceUnavailable:
    log.warning("job queue unavailable (%s): %r", action, exc)
    return ServiceUnavailable("The job queue is unavailable; try again shortly.", retry_after=RETRY_AFTER_SECONDS)


async def enqueue(app: AppLike, function: str, *, priority: str = "default", **kwargs: Any) -> Job:
    """Queue `function` on the `priority` queue ("high", "default", "low") and return its Job.

    `kwargs` are the function's arguments, except SAQ Job fields (timeout, retries, retry_delay,
    retry_backoff, scheduled, key, heartbeat, ttl, meta), which override the configured defaults.
    The id of the request being handled travels in `job.meta["request_id"]`, its W3C trace
    context (a valid incoming `traceparent`) in `job.meta["traceparent"]`. Enqueueing an
    existing key returns that job. Raises ServiceUnavailable (503, Retry-After) when Redis
    cannot be reached, UnknownPriority (a ValueError) for an unconfigured priority.
    """
    queue = app[QUEUES_KEY].for_priority(priority)
    job_kwargs = {**job_defaults(app[CONFIG_KEY]), **kwargs}
    meta = dict(job_kwargs.pop("meta", None) or {})
    request_id = current_request_id.get()
    if request_id != "-":
        meta.setdefault("request_id", request_id)
    traceparent = current_traceparent.get()
    if traceparent is not None:
        meta.setdefault("traceparent", traceparent)
    if meta:
        job_kwargs["meta"] = meta
    try:
        job = await queue.enqueue(function, **job_kwargs)
        if job is not None:
            metrics = process_metrics()
            if metrics is not None:
                metrics.count_enqueued(queue.name, function)
        elif "key" in job_kwargs:  # that key is already queued or running
            job = await queue.job(job_kwargs["key"])
    except (TimeoutError, RedisError, OSError) as exc:
        raise _unavailable("enqueue", exc) from None
    if job is None:
        raise _unavailable("enqueue", LookupError(f"job {job_kwargs.get('key')} vanished"))
    return job


# Prefix of the Redis keys that remember which job stands for a key during its window.
ONCE_PREFIX = "enqueue-once"


async def enqueue_once(
    app: AppLike, function: str, *, once_key: str, ttl: int, priority: str = "default", **kwargs: Any
) -> Job:
    """Like `enqueue`, but at most one job of `function` per `once_key` per `ttl` seconds, across
    every process: the first caller of a window picks an unguessable job key (remembered in
    Redis, SET NX with the window as expiry), later callers get that same job.

    Raises what `enqueue` raises.
    """
    queue = app[QUEUES_KEY].for_priority(priority)
    digest = hashlib.sha256(once_key.encode()).hexdigest()[:32]  # any length of key in, bounded out
    marker = f"{ONCE_PREFIX}:{function}:{digest}"
    try:
        async with asyncio.timeout(app[CONFIG_KEY].redis.socket_timeout):
            async with queue.redis.pipeline(transaction=False) as pipe:
                pipe.set(marker, uuid.uuid4().hex, nx=True, ex=max(1, ttl))
                pipe.get(marker)
                _, key = await pipe.execute()
    except (TimeoutError, RedisError, OSError) as exc:
        raise _unavailable("enqueue", exc) from None
    if key is None:  # expired between the two commands: a window of its own
        key = uuid.uuid4().hex.encode()
    return await enqueue(app, function, priority=priority, key=key.decode(), **kwargs)


async def find_job(app: AppLike, key: str) -> Job | None:
    """The job with this key on any queue, or None; raises ServiceUnavailable when Redis is down."""
    try:
        return await app[QUEUES_KEY].find(key)
    except (TimeoutError, RedisError, OSError) as exc:
        raise _unavailable("find", exc) from None
