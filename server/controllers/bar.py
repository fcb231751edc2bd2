"""POST /bar: the seed's schema-validated example, answering schema failures in its own shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from aiohttp import web

from server.errors import ValidationFailed
from server.json_codec import json_response
from server.keys import BODY_KEY
from server.routing.stamps import body_schema, describe

routes = web.RouteTableDef()

POST_BAR_SCHEMA: dict[str, Any] = {
    "title": "Bar",
    "type": "object",
    "required": ["hello", "world"],
    "properties": {
        "hello": {"type": "string"},
        "world": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["color"],
                "properties": {"color": {"type": "string"}, "size": {"type": "number"}},
            },
        },
    },
}

BAR_RESULT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["hello", "count", "data"],
    "properties": {
        "hello": {"const": "world"},
        "count": {"type": "integer", "minimum": 1},
        "data": {"type": "array", "items": {"type": "string"}},
    },
}

BAR_FAILURE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["success", "message", "errors"],
    "properties": {
        "success": {"const": False},
        "message": {"type": "string"},
        "errors_truncated": {
            "const": True,
            "description": "Present when `errors` lists only the first `server.max_violations` violations",
        },
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["pointer", "detail"],
                "properties": {"pointer": {"type": "string"}, "detail": {"type": "string"}},
            },
        },
    },
}


def summarize_bar(body: Mapping[str, Any]) -> dict[str, Any]:
    """The answer to a valid bar body: how many items, and their colors in order."""
    colors = [item["color"] for item in body["world"]]
    return {"hello": "world", "count": len(colors), "data": colors}


async def post_schema_validation_error(request: web.Request, error: ValidationFailed) -> web.Response:
    """The old boilerplate's answer to a body that fails the schema, kept for its clients.

    `error.errors` is already bounded (server.max_violations) and says whether more were cut.
    """
    body: dict[str, Any] = {"success": False, "message": error.detail, "errors": error.errors}
    if error.errors_truncated:
        body["errors_truncated"] = True
    return json_response(body, status=422)


@routes.post("/bar", name="bar")
@body_schema(POST_BAR_SCHEMA, on_invalid=post_schema_validation_error)
@describe(
    summary="Count the items of a world and list their colors",
    responses={
        200: {"description": "The count and the colors, in order", "schema": BAR_RESULT_SCHEMA},
        422: {
            "description": "The body does not match the schema (this route's own shape)",
            "schema": BAR_FAILURE_SCHEMA,
        },
    },
)
async def post_bar(request: web.Request) -> web.Response:
    return json_response(summarize_bar(cast(Mapping[str, Any], request[BODY_KEY])))
