"""A test sub-app: function handlers with every kind of schema, a class-based view with hooks."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from server.errors import ValidationFailed
from server.keys import BODY_KEY, PATH_KEY, QUERY_KEY
from server.routing.chain import Layer, chained
from server.routing.stamps import body_schema, describe, path_schema, query_schema

PREFIX = "/sample"

routes = web.RouteTableDef()

LIST_ITEMS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["kind"],
    "properties": {
        "kind": {"enum": ["a", "b"], "description": "Which items"},
        "limit": {"type": "integer", "minimum": 1, "maximum": 100},
        "offset": {"type": "integer", "minimum": 0},
        "ratio": {"type": "number", "maximum": 1},
        "flag": {"type": "boolean"},
        "tag": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 3},
    },
}

ITEM_PATH_SCHEMA = {
    "type": "object",
    "required": ["item_id"],
    "properties": {"item_id": {"type": "integer", "minimum": 1, "maximum": 2**63 - 1}},
}

NOTE_SCHEMA = {
    "$defs": {"day": {"type": "string", "format": "date"}},
    "type": "object",
    "additionalProperties": False,
    "required": ["text"],
    "properties": {
        "text": {"type": "string", "minLength": 1, "maxLength": 20},
        "when": {"$ref": "#/$defs/day"},
        "id": {"type": "string", "format": "uuid"},
        "stars": {"type": "integer", "minimum": 0, "maximum": 5},
    },
}


NUMBERS_SCHEMA = {"type": "array", "items": {"type": "integer"}}


@routes.post("/numbers", name="sample-numbers")
@body_schema(NUMBERS_SCHEMA)
async def post_numbers(request: web.Request) -> web.Response:
    """A list of integers, without a hook: the default 422 answers a bad one."""
    return web.json_response({"count": len(request[BODY_KEY])})


@routes.get("/items", name="sample-items")
@query_schema(LIST_ITEMS_SCHEMA)
async def list_items(request: web.Request) -> web.Response:
    return web.json_response(request[QUERY_KEY])


@routes.get("/items/{item_id}", name="sample-item")
@path_schema(ITEM_PATH_SCHEMA)
async def get_item(request: web.Request) -> web.Response:
    return web.json_response(request[PATH_KEY])


@routes.post("/notes", name="sample-notes")
@body_schema(NOTE_SCHEMA)
@describe(summary="Echo a note", responses={201: "The note"})
async def post_note(request: web.Request) -> web.Response:
    return web.json_response(request[BODY_KEY], status=201)


def put_schema_validation_error(request: web.Request, error: ValidationFailed) -> None:
    """A hook that declines: the default 422 answers."""
    return None


@routes.put("/notes", name="sample-notes-put")
@body_schema(NOTE_SCHEMA, on_invalid=put_schema_validation_error)
async def put_note(request: web.Request) -> web.Response:
    return web.json_response(request[BODY_KEY])


@routes.view("/views/{name}", name="sample-view")
class NoteView(web.View):
    """A class-based view: each method has its own schema and, for some, its own hook."""

    async def get(self) -> web.Response:
        """Say which view this is"""
        return web.json_response({"view": self.request.match_info["name"]})

    @body_schema(NOTE_SCHEMA)
    async def post(self) -> web.Response:
        """Echo a note (hook: an instance method)"""
        return web.json_response({"note": self.request[BODY_KEY]}, status=201)

    async def post_schema_validation_error(self, error: ValidationFailed) -> web.Response:
        return web.json_response(
            {"hook": "instance", "view": self.request.match_info["name"], "errors": error.errors},
            status=422,
        )

    @body_schema(NOTE_SCHEMA)
    async def patch(self) -> web.Response:
        """Echo a note (hook: a staticmethod)"""
        return web.json_response({"note": self.request[BODY_KEY]})

    @staticmethod
    async def patch_schema_validation_error(request: web.Request, error: ValidationFailed) -> web.Response:
        return web.json_response({"hook": "static", "count": len(error.errors or [])}, status=422)

    @body_schema(NOTE_SCHEMA)
    async def put(self) -> web.Response:
        """No hook on the class: the default 422 answers"""
        return web.json_response({"note": self.request[BODY_KEY]})


def build_sample_app(layers: Sequence[Layer]) -> web.Application:
    """The sub-app, its routes composed with `layers` (the API versions': `api_layers(config)`)."""
    app = web.Application()
    app.add_routes(chained(routes, layers))
    return app
