"""GET /openapi.json, GET /docs and GET /docs/ui: the API's OpenAPI 3.1 document, the same rendered
as HTML with no JavaScript, and Swagger UI (try it out) on it."""

from __future__ import annotations

import json
from importlib import metadata
from typing import Any

import aiohttp_jinja2
from aiohttp import web
from openapi_ui_bundles import swagger_ui

from server.auth.policy import SCOPES, Rate, default_rate, needs_token
from server.config import Config
from server.errors import NotFound
from server.keys import CONFIG_KEY, OPENAPI_KEY
from server.models.api_token import TOKEN_PREFIX
from server.routing.meta import meta_of
from server.routing.openapi import AccessOf, OperationAccess, RouteLike, build_openapi, problem_response
from server.routing.stamps import describe, path_schema
from server.routing.versions import describe_routes

routes = web.RouteTableDef()

TITLE = "aiohttp API server"
DESCRIPTION = (
    "Every route of every API version and the service pages. Request schemas are the JSON Schemas "
    "(2020-12) the server validates with. Errors are RFC 9457 problem details (`Problem`); a path "
    "answers 405 `MethodNotAllowed` with an `Allow` header to a method it does not serve. Any "
    "request whose `Host` header names a host outside `server.allowed_hosts` answers 400."
)
PAGE_SCHEMA = {"type": "string", "contentMediaType": "text/html"}
SWAGGER_UI_ASSETS = "/docs/ui/assets"
# The files of the openapi-ui-bundles package the page uses (Swagger UI 5), by name: a route of
# its own rather than a static folder, so the document describes it and nothing else is served.
SWAGGER_UI_FILES = ("swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "favicon-16x16.png")
# The page's only script of ours, served as a file: the policy below allows no inline script.
# validatorUrl null: Swagger UI would otherwise send the document to validator.swagger.io.
SWAGGER_UI_INIT_JS = """\
"use strict";
(function () {
  var el = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: el.dataset.openapi,
    domNode: el,
    deepLinking: true,
    persistAuthorization: true,
    displayRequestDuration: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
})();
"""
# What the interactive page may load and call: this server only. Swagger UI sets inline styles,
# and renders the embedded SVG icons and images as data: URLs.
SWAGGER_UI_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def setup_docs(app: web.Application) -> None:
    """Serve /openapi.json, /docs and /docs/ui on `app` (the root app: the document covers its sub-apps)."""
    app[OPENAPI_KEY] = {}
    app.add_routes(routes)


def package_version() -> str:
    try:
        return metadata.version("aiohttp-api-server")
    except metadata.PackageNotFoundError:
        return "0.0.0"


SECURITY_DESCRIPTION = (
    f"An API token (`{TOKEN_PREFIX}...`, made with `python -m server token create`) sent as "
    "`Authorization: Bearer <token>`. An operation's security lists the scopes it needs; one "
    "that also lists an empty requirement serves anonymous calls too. The scopes: "
    + "; ".join(f"`{name}`: {what}" for name, what in SCOPES.items())
    + "."
)


def api_access(config: Config) -> AccessOf:
    """Per API operation, what the auth and rate-limit middlewares enforce under `config`."""
    default: Rate | None = default_rate(config.rate_limit) if config.rate_limit.enabled else None

    def access(route: RouteLike, method: str, handler: Any) -> OperationAccess | None:
        if route.version is None:
            return None  # the service pages: neither tokens nor limits
        declared = meta_of(handler)
        scopes = declared.scopes if declared is not None else frozenset()
        read_only = declared is not None and declared.read_only
        own_rate = declared.rate_limit if declared is not None else None
        rate = (own_rate or default) if config.rate_limit.enabled else None
        return OperationAccess(
            token_required=needs_token(scopes, read_only, method, public_reads=config.auth.public_reads),
            scopes=tuple(sorted(scopes)),
            rate_policy=None if rate is None else rate.policy_header(),
        )

    return access


def openapi_document(app: web.Application) -> dict[str, Any]:
    """The app's document, built once: the router is frozen once the app serves."""
    cache = app[OPENAPI_KEY]
    if "document" not in cache:
        document = build_openapi(
            describe_routes(app),
            title=TITLE,
            version=package_version(),
            description=DESCRIPTION,
            access=api_access(app[CONFIG_KEY]),
            security_description=SECURITY_DESCRIPTION,
        )
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


def _access_text(operation: dict[str, Any]) -> str | None:
    """One line on who may call an operation, from its `security` requirements."""
    requirements = operation.get("security")
    if requirements is None:
        return None
    if {} in requirements:
        return "Public: no token needed (a token sent must be valid)."
    scopes = sorted({scope for requirement in requirements for names in requirement.values() for scope in names})
    if scopes:
        return f"Needs a bearer token with the scope {', '.join(scopes)}."
    return "Needs a bearer token (any scope)."


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
                    "access": _access_text(operation),
                    "rate_limit": operation.get("x-rate-limit"),
                }
            )
    scheme = components.get("securitySchemes", {}).get("bearerAuth")
    return {
        "security": scheme["description"] if scheme else None,
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


@routes.get("/docs/ui", name="docs-ui")
@describe(
    summary="Swagger UI on this document: try the routes from the browser (no asset from another host)",
    responses={
        200: {"description": "The interactive documentation page", "schema": PAGE_SCHEMA, "content_type": "text/html"}
    },
)
async def get_docs_ui(request: web.Request) -> web.Response:
    router = request.app.router
    context = {
        "title": TITLE,
        "assets": SWAGGER_UI_ASSETS,
        "init": str(router["docs-ui-init"].url_for()),
        "openapi": str(router["openapi"].url_for()),
        "docs": str(router["docs"].url_for()),
        "home": "/",
    }
    response = aiohttp_jinja2.render_template("docs_ui.html", request, context)
    response.headers["Content-Security-Policy"] = SWAGGER_UI_CSP
    return response


@routes.get("/docs/ui/init.js", name="docs-ui-init")
@describe(
    summary="The script that starts Swagger UI on /docs/ui",
    responses={
        200: {"description": "JavaScript", "schema": {"type": "string"}, "content_type": "application/javascript"}
    },
)
async def get_docs_ui_init(request: web.Request) -> web.Response:
    return web.Response(text=SWAGGER_UI_INIT_JS, content_type="application/javascript")


@routes.get(SWAGGER_UI_ASSETS + "/{name}", name="docs-ui-assets")
@path_schema({"type": "object", "properties": {"name": {"enum": list(SWAGGER_UI_FILES)}}, "required": ["name"]})
@describe(
    summary="Swagger UI's files, from the openapi-ui-bundles package",
    responses={
        200: {"description": "The file (JavaScript, CSS or PNG)", "schema": {"type": "string"}, "content_type": "*/*"},
        404: problem_response(404),
    },
)
async def get_docs_ui_asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    if name not in SWAGGER_UI_FILES:  # (validation runs on the API versions only; checked here)
        raise NotFound(f"no file {name!r} in Swagger UI's assets")
    return web.FileResponse(swagger_ui.static_path / name, headers={"Cache-Control": "public, max-age=86400"})
