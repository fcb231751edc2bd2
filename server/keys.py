"""Every typed application and request key, in one place."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from server.config import Config
from server.helpers.response_cache import ResponseCache
from server.models.database import Database
from server.models.faults import StorageFaults
from server.workers.queues import JobQueues

if TYPE_CHECKING:  # the reporter's module imports these keys
    from server.services.honeybadger import HoneybadgerReporter

# Called with (request, exception) for every unhandled error; the error-reporting layer sets it.
ErrorReporter = Callable[[web.Request, BaseException], None]
# Enqueues the slow job a /baz miss starts; returns its key (None: nothing enqueued).
# Raises ServiceUnavailable when the queue cannot take it.
SlowJobEnqueuer = Callable[[web.Request], Awaitable[str | None]]

CONFIG_KEY = web.AppKey("config", Config)
DB_KEY = web.AppKey("db", Database)
REDIS_KEY = web.AppKey("redis", Redis)
# Storage faults (database locked, full, read-only) answered with 503, counted by kind.
STORAGE_FAULTS_KEY = web.AppKey("storage_faults", StorageFaults)
HTTP_KEY = web.AppKey("http", aiohttp.ClientSession)
REPORTER_KEY = web.AppKey("error_reporter", ErrorReporter)
# The Honeybadger reporter (also when reporting is off), for custom notices.
HONEYBADGER_KEY: web.AppKey[HoneybadgerReporter] = web.AppKey("honeybadger")
# The response cache (server/middlewares/cache.py), set up after REDIS_KEY.
CACHE_KEY = web.AppKey("response_cache", ResponseCache)
SLOW_JOB_ENQUEUER_KEY = web.AppKey("slow_job_enqueuer", SlowJobEnqueuer)
# The web app's queues by priority name; enqueue through server.workers.enqueue.enqueue().
QUEUES_KEY = web.AppKey("queues", JobQueues)
# Set on each API version's sub-app: the version number its handlers serve.
API_VERSION_KEY = web.AppKey("api_version", int)

REQUEST_ID_KEY = web.RequestKey("request_id", str)
# Filled by the validation middleware from the route's schemas, already checked and coerced.
BODY_KEY = web.RequestKey("body", object)
QUERY_KEY = web.RequestKey("query", dict)
PATH_KEY = web.RequestKey("path", dict)
# The OpenAPI document, built on the first request that needs it (the routes are final by then).
OPENAPI_KEY = web.AppKey("openapi", dict)
