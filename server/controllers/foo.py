"""GET /foo: the hello-world resource, counting users, served by every API version.

`?notify=1` also sends a custom notice to Honeybadger (the old boilerplate's example), so that
an operator can check reporting end to end; without the parameter nothing extra happens.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from server.errors import InvalidInput
from server.json_codec import json_response
from server.keys import DB_KEY, REPORTER_KEY
from server.middlewares.reporting import notify_from_request
from server.models.user import User
from server.routing.openapi import problem_response
from server.routing.stamps import describe, query_schema
from server.routing.versions import api_version

routes = web.RouteTableDef()

NOTIFY_VALUES = {"1": True, "true": True, "0": False, "false": False}


def wants_notice(request: web.Request) -> bool:
    """Whether `?notify=` asks for a custom notice; raises InvalidInput for a value we do not know."""
    raw = request.query.get("notify")
    if raw is None:
        return False
    try:
        return NOTIFY_VALUES[raw.lower()]
    except KeyError:
        raise InvalidInput(
            "invalid query parameters",
            errors=[{"parameter": "notify", "detail": f"{raw!r} is not one of 1, true, 0, false"}],
        ) from None


def send_foo_notice(request: web.Request) -> str | None:
    """The old `honeybadger.notify(error_class=..., error_message=...)` example: the notice id, or None."""
    reporter = request.config_dict.get(REPORTER_KEY)
    if reporter is None:
        return None
    return notify_from_request(reporter, request, "FooNotice", "GET foo asked for a test notice", tags=("custom",))


async def foo_payload(request: web.Request) -> dict[str, Any]:
    notify = wants_notice(request)  # before any work: a bad value is a 400
    count = await User.count(request.config_dict[DB_KEY])
    payload: dict[str, Any] = {"hello": "world", "count": count, "version": api_version(request)}
    if notify:
        payload["notice"] = send_foo_notice(request)
    return payload


# What `notify` accepts, as the handler reads it (case-insensitive true/false, 1/0); other
# parameters are ignored. The schema makes the document tell the truth about it.
FOO_QUERY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "notify": {
            "type": "string",
            "pattern": r"^(1|0|[Tt][Rr][Uu][Ee]|[Ff][Aa][Ll][Ss][Ee])(?![\s\S])",
            "description": "1 or true: also send a custom notice to Honeybadger",
        },
    },
}
FOO_RESPONSES: dict[int | str, Any] = {503: problem_response(503)}  # the user count reads the database


@routes.get("/foo", name="foo")
@query_schema(FOO_QUERY_SCHEMA)
@describe(responses=FOO_RESPONSES)
async def get_foo(request: web.Request) -> web.Response:
    return json_response(await foo_payload(request))
