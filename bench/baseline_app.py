"""A bare aiohttp app doing each benchmarked route's work with no middleware: the bench's yardstick.

Same paths and answers as our server, same event loop (uvloop), the same JSON library for bodies
(orjson), nothing else: no request ids, no problem details, no validation, no cache layer.
Started by `python -m bench`:

    python bench/baseline_app.py --port 8081 --db bench.db --redis-url redis://127.0.0.1:6379/0
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import aiosqlite
import orjson
import uvloop
from aiohttp import web
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


def create_baseline_app(db_path: str, redis_url: str, baz_key: str) -> web.Application:
    async def resources_ctx(app: web.Application) -> AsyncIterator[None]:
        app[DB_KEY] = await aiosqlite.connect(db_path)
        app[REDIS_KEY] = Redis.from_url(redis_url)
        yield
        await app[REDIS_KEY].aclose()
        await app[DB_KEY].close()

    app = web.Application()
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
    args = parser.parse_args()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    app = create_baseline_app(args.db, args.redis_url, args.baz_key)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None, loop=loop, shutdown_timeout=2)


if __name__ == "__main__":
    main()
