"""Every typed application and request key, in one place.

The value types are imported for the type checker only: at run time this module imports
aiohttp and the config, so any module may import it without pulling in the rest.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from server.config import Config

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from server.auth.grants import RevocationListener, TokenGrants
    from server.auth.limiter import RateLimiter
    from server.cache.store import Generations, ResponseCache
    from server.models.database import Database
    from server.models.faults import StorageFaults
    from server.services.honeybadger.sender import HoneybadgerReporter
    from server.services.queues import JobQueues

# Enqueues the slow job a /baz miss starts; returns its key (None: nothing enqueued).
# Raises ServiceUnavailable when the queue cannot take it.
SlowJobEnqueuer = Callable[[web.Request], Awaitable[str | None]]

CONFIG_KEY = web.AppKey("config", Config)
DB_KEY: web.AppKey[Database] = web.AppKey("db")
REDIS_KEY: web.AppKey[Redis] = web.AppKey("redis")
# Storage faults (database locked, full, read-only) answered with 503, counted by kind.
STORAGE_FAULTS_KEY: web.AppKey[StorageFaults] = web.AppKey("storage_faults")
HTTP_KEY = web.AppKey("http", aiohttp.ClientSession)
# The error reporter (also when reporting is off: it then drops what it is given).
REPORTER_KEY: web.AppKey[HoneybadgerReporter] = web.AppKey("error_reporter")
# The response cache (server/cache/store.py), on a Redis client of its own.
CACHE_KEY: web.AppKey[ResponseCache] = web.AppKey("response_cache")
# The cache namespaces' generations, read from the database (server/cache/store.py).
GENERATIONS_KEY: web.AppKey[Generations] = web.AppKey("cache_generations")
SLOW_JOB_ENQUEUER_KEY: web.AppKey[SlowJobEnqueuer] = web.AppKey("slow_job_enqueuer")
# The web app's queues by priority name; enqueue through server.workers.enqueue.enqueue().
QUEUES_KEY: web.AppKey[JobQueues] = web.AppKey("queues")
# On a sub-app that serves one API version as a whole: its number (routing/versions.py api_version_of).
API_VERSION_KEY = web.AppKey("api_version", int)
# On the root app: the API version each versioned route's resource serves (routing/versions.py).
API_ROUTES_KEY: web.AppKey[dict[web.AbstractResource, int]] = web.AppKey("api_routes")
# The OpenAPI document, built on the first request that needs it (the routes are final by then).
OPENAPI_KEY: web.AppKey[dict[str, Any]] = web.AppKey("openapi")
# API access: the token cache (and its revocation listener) and the rate limiter of this
# process, set up after DB_KEY and REDIS_KEY.
GRANTS_KEY: web.AppKey[TokenGrants] = web.AppKey("token_grants")
REVOCATIONS_KEY: web.AppKey[RevocationListener] = web.AppKey("token_revocations")
RATE_LIMITER_KEY: web.AppKey[RateLimiter] = web.AppKey("rate_limiter")
# On SAQ's dashboard sub-app: its app.js, patched to work under a prefix.
SAQ_APP_JS_KEY = web.AppKey("saq_app_js", bytearray)

REQUEST_ID_KEY = web.RequestKey("request_id", str)
# Filled by the validation middleware from the route's schemas, already checked and coerced.
BODY_KEY = web.RequestKey("body", object)
QUERY_KEY: web.RequestKey[dict[str, Any]] = web.RequestKey("query")
PATH_KEY: web.RequestKey[dict[str, Any]] = web.RequestKey("path")
# Who sent the request: the Grant of its valid token, None (anonymous), or the Unauthorized error
# its Authorization header earned. Worked out once per request by middlewares/bearer.identify.
IDENTITY_KEY: web.RequestKey[object] = web.RequestKey("identity")
