"""A bare aiohttp app doing each benchmarked route's work with no middleware: the bench's yardstick.

Same paths and answers as our server, same event loop (uvloop), the same JSON library for bodies
(orjson), nothing else: no request ids, no problem details, no validation, no cache layer.
Started by `python -m bench`:

    python bench/baseline_app.py --port 8081 --db bench.db --redis-url redis://127.0.0.1:6379/0

With `--contract-floor` it also does, in one middleware written as plainly as it can be, the
least the contract asks of every request whatever its route: an X-Request-ID (a well-formed one
echoed, else a new one), `X-Content-Type-Options: nosniff`, the Host check, errors as problem
details, and a count and latency bucket per route and status for the metrics. Every server
keeping the contract does this work on every request, so this "floor" shows how much of the gap
between ours and the bare app is the contract's fixed work, and how much is ours.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import os
import re
import time
from collections.abc import AsyncIterator

import aiosqlite
import orjson
import uvloop
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from redis.asyncio import Redis

DB_KEY = web.AppKey("db", aiosqlite.Connection)
REDIS_KEY = web.AppKey("redis", Redis)
BAZ_KEY = web.AppKey("baz_key", str)

# The same statements our routes run (GET /api/v1/foo and GET /api/v1/users?limit=20).
COUNT_USERS_SQL = "SELECT COUNT(*) FROM users"
LIST_USERS_SQL = "SELECT id, name, created_at, updated_at FROM users ORDER BY id LIMIT ? OFFSET ?"

routes = web.RouteTableDef()


def json_response(data: object) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")


@routes.get("/healthz")
async def get_healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/api/v1/foo")
async def get_foo(request: web.Request) -> web.Response:
    async with request.app[DB_KEY].execute(COUNT_USERS_SQL) as cursor:
        (count,) = await cursor.fetchone()
    return json_response({"hello": "world", "count": count, "version": 1})


@routes.post("/api/v1/bar")
async def post_bar(request: web.Request) -> web.Response:
    body = orjson.loads(await request.read())  # parsed, not validated
    world = body["world"]
    return json_response({"hello": "world", "count": len(world), "data": [item["color"] for item in world]})


@routes.get("/api/v1/baz")
async def get_baz(request: web.Request) -> web.Response:
    cached = await request.app[REDIS_KEY].get(request.app[BAZ_KEY])
    if cached is None:
        raise web.HTTPServiceUnavailable(text="bench did not prime the baseline's baz key")
    return web.Response(body=cached, content_type="application/json")


@routes.get("/api/v1/users")
async def get_users(request: web.Request) -> web.Response:
    limit = int(request.query.get("limit", 20))
    offset = int(request.query.get("offset", 0))
    db = request.app[DB_KEY]
    async with db.execute(LIST_USERS_SQL, (limit, offset)) as cursor:
        columns = [c[0] for c in cursor.description]
        items = [dict(zip(columns, row, strict=False)) for row in await cursor.fetchall()]
    async with db.execute(COUNT_USERS_SQL) as cursor:
        (total,) = await cursor.fetchone()
    return json_response({"items": items, "total": total, "limit": limit, "offset": offset})


_VALID_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_LATENCY_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, float("inf"))
LOOPBACK = frozenset({"localhost", "127.0.0.1", "::1"})


def contract_floor(allowed_hosts: frozenset[str] = LOOPBACK) -> Middleware:
    """The contract's per-request minimum as one middleware (see the module's docstring)."""
    prefix, counter = os.urandom(8).hex() + "-", itertools.count(1)
    seen_hosts: set[str] = set()
    counts: dict[tuple[str, int], list[float]] = {}  # what a metrics endpoint would publish

    def problem(status: int, title: str, rid: str) -> web.Response:
        body = {"type": "about:blank", "title": title, "status": status, "detail": title, "request_id": rid}
        return web.Response(body=orjson.dumps(body), status=status, content_type="application/problem+json")

    @web.middleware
    async def floor(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        rid = request.headers.get("X-Request-ID")
        if rid is None or not _VALID_ID.fullmatch(rid):
            rid = f"{prefix}{next(counter)}"
        host = request.headers.get("Host", "")
        try:
            if host not in seen_hosts:
                if host.rpartition(":")[0] not in allowed_hosts and host not in allowed_hosts:
                    raise web.HTTPBadRequest(reason="Host not allowed")
                seen_hosts.add(host)
            response = await handler(request)
        except web.HTTPException as exc:
            response = problem(exc.status, exc.reason, rid)
        except Exception:
            response = problem(500, "Internal Server Error", rid)
        response.headers["X-Request-ID"] = rid
        response.headers["X-Content-Type-Options"] = "nosniff"
        resource = request.match_info.route.resource
        key = (resource.canonical if resource is not None else "<unmatched>", response.status)
        pending = counts.get(key)
        if pending is None:
            pending = counts[key] = [0.0] * (len(_LATENCY_BOUNDS) + 1)
        elapsed = time.perf_counter() - started
        pending[bisect.bisect_left(_LATENCY_BOUNDS, elapsed)] += 1
        pending[-1] += elapsed
        return response

    return floor


def create_baseline_app(db_path: str, redis_url: str, baz_key: str, *, floor: bool = False) -> web.Application:
    async def resources_ctx(app: web.Application) -> AsyncIterator[None]:
        app[DB_KEY] = await aiosqlite.connect(db_path)
        app[REDIS_KEY] = Redis.from_url(redis_url)
        yield
        await app[REDIS_KEY].aclose()
        await app[DB_KEY].close()

    app = web.Application(middlewares=[contract_floor()] if floor else [])
    app[BAZ_KEY] = baz_key
    app.cleanup_ctx.append(resources_ctx)
    app.add_routes(routes)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True, help="the seeded SQLite file our server uses too")
    parser.add_argument("--redis-url", required=True)
    parser.add_argument("--baz-key", default="bench:baseline:baz", help="the Redis key GET /api/v1/baz reads")
    parser.add_argument("--contract-floor", action="store_true", help="add the contract's per-request minimum")
    args = parser.parse_args()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    app = create_baseline_app(args.db, args.redis_url, args.baz_key, floor=args.contract_floor)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None, loop=loop, shutdown_timeout=2)


if __name__ == "__main__":
    main()
