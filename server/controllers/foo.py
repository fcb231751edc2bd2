"""GET /foo: the hello-world resource, counting users, served by every API version."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from server.controllers.versions_base import api_version
from server.keys import DB_KEY
from server.models.user import User

routes = web.RouteTableDef()


async def foo_payload(request: web.Request) -> dict[str, Any]:
    count = await User.count(request.config_dict[DB_KEY])
    return {"hello": "world", "count": count, "version": api_version(request)}


@routes.get("/foo", name="foo")
async def get_foo(request: web.Request) -> web.Response:
    return web.json_response(await foo_payload(request))
