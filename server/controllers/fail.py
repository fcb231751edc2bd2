"""GET /fail: raises on purpose, to show an unhandled error becoming a 500 and a report."""

from __future__ import annotations

from aiohttp import web

from server.json_codec import json_response

routes = web.RouteTableDef()


@routes.get("/fail", name="fail")
async def get_fail(request: web.Request) -> web.Response:
    empty: dict[str, str] = {}
    return json_response({"value": empty["missing-key"]})  # KeyError, on purpose
