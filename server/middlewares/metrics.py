"""Request metrics: count, latency and in-flight requests by route template, method and status."""

from __future__ import annotations

import asyncio
import time

from aiohttp import web
from aiohttp.typedefs import Handler

from server.metrics import process_metrics, route_label

# Any other method (aiohttp accepts any token) is counted as OTHER: labels stay a closed set.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# nginx's code for a client that went away before the answer.
CLIENT_CLOSED = 499


@web.middleware
async def http_metrics(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The outermost middleware, so it times everything the app does for a request. The
    metrics are the process's (set up by the app's metrics_ctx on start-up); what is counted
    here reaches the files when they are published (server/metrics.py)."""
    metrics = process_metrics()
    if metrics is None:
        return await handler(request)
    start = time.perf_counter()
    metrics.in_flight += 1
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:  # redirects travel as exceptions
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        metrics.in_flight -= 1
        method = request.method
        metrics.observe_request(
            route_label(request.match_info.route.resource),
            method if method in KNOWN_METHODS else "OTHER",
            status,
            time.perf_counter() - start,
        )
