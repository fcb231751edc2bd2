"""A bare aiohttp app on asyncpg: the yardstick of GET /api/v1/foo and /api/v1/users on PostgreSQL.

Same paths, statements and answers as our server with `database.url` set, nothing else: no
middleware, no validation, no sub-apps; an asyncpg pool configured as ours (same size, and a
read's connection goes back without asyncpg's reset query, as our reads' do). Started by
`python -m bench.databases`:

    python bench/baseline_pg_app.py --port 8081 --database-url postgresql://...
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import AsyncIterator

import asyncpg
import orjson
import uvloop
from aiohttp import web

POOL_KEY = web.AppKey("pool", asyncpg.Pool)

# The statements our routes send (the model writes them; placeholders already numbered).
COUNT_USERS_SQL = 'SELECT COUNT(*) FROM "users"'
LIST_USERS_SQL = 'SELECT "id", "name", "created_at", "updated_at" FROM "users" ORDER BY "id" ASC LIMIT $1 OFFSET $2'

routes = web.RouteTableDef()


def json_response(data: object) -> web.Response:
    # orjson, as our server and the SQLite baseline answer.
    return web.Response(body=orjson.dumps(data), content_type="application/json")


@routes.get("/healthz")
async def get_healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


@routes.get("/api/v1/foo")
async def get_foo(request: web.Request) -> web.Response:
    count = await request.app[POOL_KEY].fetchval(COUNT_USERS_SQL)
    return json_response({"hello": "world", "count": count, "version": 1})


@routes.get("/api/v1/users")
async def get_users(request: web.Request) -> web.Response:
    limit = int(request.query.get("limit", 20))
    offset = int(request.query.get("offset", 0))
    pool = request.app[POOL_KEY]
    total = await pool.fetchval(COUNT_USERS_SQL)
    items = [dict(row) for row in await pool.fetch(LIST_USERS_SQL, limit, offset)]
    return json_response({"items": items, "total": total, "limit": limit, "offset": offset})


async def no_reset(conn: asyncpg.Connection) -> None:
    """Reads only: nothing to reset (asyncpg still rolls back an open transaction itself)."""


def create_baseline_app(database_url: str, min_size: int, max_size: int) -> web.Application:
    async def pool_ctx(app: web.Application) -> AsyncIterator[None]:
        app[POOL_KEY] = await asyncpg.create_pool(database_url, min_size=min_size, max_size=max_size, reset=no_reset)
        yield
        await app[POOL_KEY].close()

    app = web.Application()
    app.cleanup_ctx.append(pool_ctx)
    app.add_routes(routes)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--pool-min-size", type=int, default=1)
    parser.add_argument("--pool-max-size", type=int, default=10)
    args = parser.parse_args()
    loop = uvloop.new_event_loop()
    asyncio.set_event_loop(loop)
    app = create_baseline_app(args.database_url, args.pool_min_size, args.pool_max_size)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=None, loop=loop, shutdown_timeout=2)


if __name__ == "__main__":
    main()
