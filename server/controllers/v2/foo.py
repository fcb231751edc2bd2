"""GET /api/v2/foo: v1's answer plus links (v2 may add fields, never remove v1's)."""

from __future__ import annotations

from aiohttp import web

from server.controllers.foo import FOO_QUERY_SCHEMA, FOO_RESPONSES, foo_payload
from server.json_codec import json_response
from server.routing.stamps import describe, query_schema

routes = web.RouteTableDef()


@routes.get("/foo", name="foo")
@query_schema(FOO_QUERY_SCHEMA)
@describe(responses=FOO_RESPONSES)
async def get_foo(request: web.Request) -> web.Response:
    payload = await foo_payload(request)
    payload["links"] = {"self": str(request.rel_url.with_query(None))}
    return json_response(payload)
