"""GET /openapi.json and GET /docs: the API's OpenAPI 3.1 document, and the same rendered as HTML."""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

import aiohttp_jinja2
from aiohttp import web

from server.keys import OPENAPI_KEY
from server.routing.openapi import build_openapi
from server.routing.stamps import describe
from server.routing.versions import describe_routes

routes = web.RouteTableDef()

TITLE = "aiohttp API server"
DESCRIPTION = (
    "Every route of every API version and the service pages. Request schemas are the JSON Schemas "
    "(2020-12) the server validates with. Errors are RFC 9457 problem details (`Problem`); a path "
    "answers 405 `MethodNotAllowed` with an `Allow` header to a method it does not serve."
)
PAGE_SCHEMA = {"type": "string", "contentMediaType": "text/html"}


def setup_docs(app: web.Application) -> None:
    """Serve /openapi.json and /docs on `app` (the root app: the document covers its sub-apps)."""
    app[OPENAPI_KEY] = {}
    app.add_routes(routes)


def package_version() -> str:
    try:
        return metadata.version("aiohttp-api-server")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def openapi_document(app: web.Application) -> dict[str, Any]:
    """The app's document, built once: the router is frozen once the app serves."""
    cache = app[OPENAPI_KEY]
    if "document" not in cache:
        document = build_openapi(describe_routes(app), title=TITLE, version=package_version(), description=DESCRIPTION)
        cache["json"] = json.dumps(document, indent=1).encode()
        cache["document"] = document
    built: dict[str, Any] = cache["document"]
    return built


@routes.get("/openapi.json", name="openapi")
@describe(
    summary="This document: OpenAPI 3.1 of every public route",
    responses={200: {"description": "The OpenAPI document", "schema": {"type": "object"}}},
)
async def get_openapi(request: web.Request) -> web.Response:
    openapi_document(request.app)
    return web.Response(body=request.app[OPENAPI_KEY]["json"], content_type="application/json")


def _pretty(schema: Any) -> str:
    return json.dumps(schema, indent=2, ensure_ascii=False)


def _ref_name(schema: Any) -> str | None:
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    return ref.rsplit("/", 1)[1] if isinstance(ref, str) and ref.startswith("#/components/") else None


def docs_context(document: dict[str, Any]) -> dict[str, Any]:
    """What templates/docs.html shows, derived from the document alone."""
    components = document["components"]
    groups: dict[str, list[dict[str, Any]]] = {tag["name"]: [] for tag in document["tags"]}
    for path, item in document["paths"].items():
        for method, operation in item.items():
            responses = []
            for code, response in operation["responses"].items():
                name = _ref_name(response)
                if name is not None:
                    response = {**components["responses"][name], "component": name}
                contents = [
                    {
                        "type": media_type,
                        "ref": _ref_name(media.get("schema")),
                        "schema": None if _ref_name(media.get("schema")) else _pretty(media.get("schema")),
                    }
                    for media_type, media in response.get("content", {}).items()
                ]
                responses.append(
                    {
                        "code": code,
                        "description": response.get("description", ""),
                        "component": response.get("component"),
                        "contents": contents,
                    }
                )
            body = None
            if "requestBody" in operation:
                schema = operation["requestBody"]["content"]["application/json"]["schema"]
                name = _ref_name(schema)
                body = {"ref": name, "schema": _pretty(components["schemas"][name] if name else schema)}
            groups.setdefault(operation["tags"][0], []).append(
                {
                    "id": operation["operationId"],
                    "method": method.upper(),
                    "path": path,
                    "summary": operation.get("summary", ""),
                    "description": operation.get("description", ""),
                    "parameters": [{**p, "schema": _pretty(p["schema"])} for p in operation.get("parameters", [])],
                    "body": body,
                    "responses": responses,
                }
            )
    return {
        "info": document["info"],
        "openapi": document["openapi"],
        "groups": [{"tag": tag, "operations": ops} for tag, ops in groups.items() if ops],
        "schemas": [{"name": name, "schema": _pretty(schema)} for name, schema in components["schemas"].items()],
    }


@routes.get("/docs", name="docs")
@describe(
    summary="This document rendered as HTML, usable offline",
    responses={200: {"description": "The documentation page", "schema": PAGE_SCHEMA, "content_type": "text/html"}},
)
async def get_docs(request: web.Request) -> web.Response:
    cache = request.app[OPENAPI_KEY]
    if "docs" not in cache:
        cache["docs"] = docs_context(openapi_document(request.app))
    return aiohttp_jinja2.render_template("docs.html", request, cache["docs"])
