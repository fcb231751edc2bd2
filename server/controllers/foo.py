"""GET /foo: the hello-world resource, counting users, served by every API version."""

from __future__ import annotations

from typing import Any

import aiosqlite
from aiohttp import web

from server.controllers.versions_base import api_version
from server.keys import DB_KEY
from server.models.database import Database

routes = web.RouteTableDef()

COUNT_USERS_SQL = "SELECT COUNT(*) FROM users"


async def count_users(db: Database) -> int:
    try:
        return int(await db.fetchval(COUNT_USERS_SQL))
    except aiosqlite.OperationalError:  # no users table before the first migration
        return 0


async def foo_payload(request: web.Request) -> dict[str, Any]:
    count = await count_users(request.config_dict[DB_KEY])
    return {"hello": "world", "count": count, "version": api_version(request)}


@routes.get("/foo", name="foo")
async def get_foo(request: web.Request) -> web.Response:
    return web.json_response(await foo_payload(request))
