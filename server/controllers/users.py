"""Handlers for /users: list, create, read, partial update, delete."""

from __future__ import annotations

from typing import Any, cast

from aiohttp import web

from server.json_codec import json_response
from server.keys import BODY_KEY, DB_KEY, PATH_KEY, QUERY_KEY
from server.middlewares.cache import invalidating
from server.models.user import User
from server.routing.openapi import problem_response
from server.routing.stamps import body_schema, cached, describe, path_schema, query_schema
from server.routing.versions import url_for

routes = web.RouteTableDef()

# Cached reads of users; every write makes the namespace stale in its own transaction, so no
# process serves a read from before a write that has answered.
USERS_NAMESPACE = "users"

INT64_MAX = 2**63 - 1
DEFAULT_LIMIT, MAX_LIMIT = 20, 100
DEFAULT_ORDER = "id"
# The columns a list may be ordered by, so that a schema-valid `order` is one the model accepts.
_ORDER_TERM = f"[-+]?({'|'.join(User.columns)})"
# (?![\s\S]) rather than $: Python's $ also matches before a final newline, ECMA-262's does not.
ORDER_PATTERN = rf"^{_ORDER_TERM}(,{_ORDER_TERM})*(?![\s\S])"

USER_NAME_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 128}

LIST_USERS_QUERY_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "limit": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": DEFAULT_LIMIT},
        "offset": {"type": "integer", "minimum": 0, "maximum": INT64_MAX, "default": 0},
        "name": {"type": "string"},
        # Comma-separated columns, "-" for descending.
        "order": {
            "type": "string",
            "maxLength": 200,
            "default": DEFAULT_ORDER,
            "pattern": ORDER_PATTERN,
            "description": f"Comma-separated columns ({', '.join(User.columns)}), each optionally after - (descending)",
        },
    },
}

CREATE_USER_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {"name": USER_NAME_SCHEMA},
}

UPDATE_USER_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {"name": USER_NAME_SCHEMA},
}

USER_PATH_SCHEMA = {
    "type": "object",
    "required": ["user_id"],
    "properties": {"user_id": {"type": "integer", "minimum": 1, "maximum": INT64_MAX}},
}

# A write answers 503 when the database is locked, full or read-only.
WRITE_RESPONSES: dict[int | str, Any] = {503: problem_response(503)}

# Digits only, no leading zero: one URL per user (Python's int() would also take "1_0", " 1", "+1").
# At most 19 digits (a 64-bit id): a longer one is an unknown resource, 404 from the router.
USER_PATH = "/users/{user_id:[1-9][0-9]{0,18}}"


@routes.get("/users", name="user-list")
@cached(namespace=USERS_NAMESPACE)
@query_schema(LIST_USERS_QUERY_SCHEMA)
async def list_users(request: web.Request) -> web.Response:
    params = request[QUERY_KEY]
    query = User.query(request.config_dict[DB_KEY])
    if "name" in params:
        query = query.where(name=params["name"])
    # "id" last: a stable order, so pages neither repeat nor skip rows.
    query = query.order_by(*params.get("order", DEFAULT_ORDER).split(","), "id")
    page = await query.page(limit=params.get("limit", DEFAULT_LIMIT), offset=params.get("offset", 0))
    return json_response(page.to_dict())


@routes.post("/users", name="user-create")
@body_schema(CREATE_USER_SCHEMA)
@describe(responses=WRITE_RESPONSES)
async def create_user(request: web.Request) -> web.Response:
    body = cast(dict[str, Any], request[BODY_KEY])
    async with invalidating(request, USERS_NAMESPACE):
        user = await User.create(request.config_dict[DB_KEY], name=body["name"])
    location = url_for(request, "user-detail", user_id=str(user.id))
    return json_response(user.to_dict(), status=201, headers={"Location": str(location)})


@routes.get(USER_PATH, name="user-detail")
@cached(namespace=USERS_NAMESPACE)
@path_schema(USER_PATH_SCHEMA)
async def get_user(request: web.Request) -> web.Response:
    user = await User.find(request.config_dict[DB_KEY], request[PATH_KEY]["user_id"])
    return json_response(user.to_dict())


@routes.patch(USER_PATH, name="user-update")
@path_schema(USER_PATH_SCHEMA)
@describe(responses=WRITE_RESPONSES)
@body_schema(UPDATE_USER_SCHEMA)
async def update_user(request: web.Request) -> web.Response:
    user = await User.find(request.config_dict[DB_KEY], request[PATH_KEY]["user_id"])
    async with invalidating(request, USERS_NAMESPACE):
        await user.update(**cast(dict[str, Any], request[BODY_KEY]))
    return json_response(user.to_dict())


@routes.delete(USER_PATH, name="user-delete")
@path_schema(USER_PATH_SCHEMA)
@describe(responses={204: "Deleted", **WRITE_RESPONSES})
async def delete_user(request: web.Request) -> web.Response:
    user = await User.find(request.config_dict[DB_KEY], request[PATH_KEY]["user_id"])
    async with invalidating(request, USERS_NAMESPACE):
        await user.delete()
    return web.Response(status=204)
