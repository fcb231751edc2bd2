"""Every typed application and request key, in one place."""

from __future__ import annotations

from collections.abc import Callable

import aiohttp
from aiohttp import web
from redis.asyncio import Redis

from server.config import Config
from server.models.database import Database
from server.workers.queues import JobQueues

# Called with (request, exception) for every unhandled error; the error-reporting layer sets it.
ErrorReporter = Callable[[web.Request, BaseException], None]

CONFIG_KEY = web.AppKey("config", Config)
DB_KEY = web.AppKey("db", Database)
REDIS_KEY = web.AppKey("redis", Redis)
HTTP_KEY = web.AppKey("http", aiohttp.ClientSession)
REPORTER_KEY = web.AppKey("error_reporter", ErrorReporter)
# The web app's queues by priority name; enqueue through server.workers.enqueue.enqueue().
QUEUES_KEY = web.AppKey("queues", JobQueues)
# Set on each API version's sub-app: the version number its handlers serve.
API_VERSION_KEY = web.AppKey("api_version", int)

REQUEST_ID_KEY = web.RequestKey("request_id", str)
# Filled by the validation middleware from the route's schemas, already checked and coerced.
BODY_KEY = web.RequestKey("body", object)
QUERY_KEY = web.RequestKey("query", dict)
PATH_KEY = web.RequestKey("path", dict)
