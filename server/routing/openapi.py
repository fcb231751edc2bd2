"""OpenAPI 3.1 built from the route tables and the very schemas stamped on handlers for validation."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from server.errors import PROBLEM_CONTENT_TYPE
from server.routing.meta import RouteDoc, doc_of, meta_of, method_handler, schemas_of

OPENAPI_VERSION = "3.1.0"
# Operator pages (dashboards) stay out of the public document.
PRIVATE_PREFIXES = ("/internal",)
# Methods OpenAPI knows, in the order a class-based view's operations are listed.
OPERATION_METHODS = ("GET", "PUT", "POST", "DELETE", "OPTIONS", "HEAD", "PATCH", "TRACE")

_PATH_PARAM = re.compile(r"\{([^}]+)\}")
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")


class RouteLike(Protocol):
    """What the builder needs of a route (`versions.RouteInfo` has it)."""

    @property
    def version(self) -> int | None: ...
    @property
    def method(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def handler(self) -> object: ...


@dataclass(frozen=True, slots=True)
class OperationAccess:
    """Who may call an operation and how often, as the auth and rate-limit middlewares enforce it."""

    # False: anonymous calls are served too (a token, when sent, must still be valid).
    token_required: bool
    scopes: tuple[str, ...] = ()
    # The `RateLimit-Policy` value of its rate limit, or None when it has none.
    rate_policy: str | None = None


# (route, method, handler) -> its access, or None for a route without any (the service pages).
AccessOf = Callable[[RouteLike, str, Any], OperationAccess | None]

BEARER_SCHEME = "bearerAuth"


def route_operations(route: RouteLike) -> Iterator[tuple[str, Any]]:
    """(method, handler) for each operation a route serves: a class-based view serves several."""
    handler = route.handler
    if route.method == "*":
        if isinstance(handler, type) and issubclass(handler, web.View):
            for method in OPERATION_METHODS:
                target = method_handler(handler, method)
                if target is not None:
                    yield method, target
        return  # a catch-all function handler has no operations we can name
    if route.method in OPERATION_METHODS:
        yield route.method, handler


def is_public(route: RouteLike) -> bool:
    return not route.path.startswith(PRIVATE_PREFIXES)


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details; `errors` lists the violations where there are several.",
    "required": ["type", "title", "status", "detail", "request_id"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "detail": {"type": "string"},
        "request_id": {"type": ["string", "null"]},
        "errors_truncated": {
            "const": True,
            "description": "Present when `errors` lists only the first `server.max_violations` violations",
        },
        "errors": {
            "type": "array",
            "items": {
                "anyOf": [
                    {
                        "type": "object",
                        "description": "A violation in the body",
                        "required": ["pointer", "detail"],
                        "properties": {
                            "pointer": {"type": "string", "description": "RFC 6901 JSON Pointer, '' for the root"},
                            "detail": {"type": "string"},
                        },
                    },
                    {
                        "type": "object",
                        "description": "A bad query or path parameter",
                        "required": ["parameter", "detail"],
                        "properties": {"parameter": {"type": "string"}, "detail": {"type": "string"}},
                    },
                ]
            },
        },
    },
}

# Status -> (component name, description) of every problem answer the server gives.
ERROR_RESPONSES: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "The body is not valid JSON, or a query parameter is invalid"),
    401: (
        "Unauthorized",
        "No bearer token where the route needs one, or one that is malformed, unknown, "
        "revoked or expired; `WWW-Authenticate: Bearer` says which",
    ),
    403: ("Forbidden", "The token lacks a scope the route needs (`WWW-Authenticate` names it)"),
    404: ("NotFound", "No such resource (an unknown id, or a path parameter out of range)"),
    405: ("MethodNotAllowed", "The path does not serve this method; `Allow` lists those it does"),
    413: ("PayloadTooLarge", "The body is larger than `server.max_body_bytes`"),
    415: ("UnsupportedMediaType", "The body was not sent as `application/json`"),
    422: ("ValidationFailed", "The body does not match the schema; `errors` has a JSON pointer per violation"),
    429: ("TooManyRequests", "Over the client's rate limit; retry after `Retry-After` seconds"),
    500: ("InternalServerError", "The server failed; the answer says nothing of why"),
    502: ("BadGateway", "An upstream service answered badly or not at all"),
    503: ("ServiceUnavailable", "A dependency is down; retry after `Retry-After` seconds"),
    504: ("GatewayTimeout", "An upstream service did not answer in time"),
}


# The IETF httpapi ratelimit-headers draft's fields, on every answer of a rate-limited route.
RATE_LIMIT_HEADERS: dict[str, Any] = {
    "RateLimit-Policy": {"schema": {"type": "string"}, "description": 'The limit: `"<name>";q=<quota>;w=<window s>`'},
    "RateLimit": {
        "schema": {"type": "string"},
        "description": 'What is left: `"<name>";r=<remaining>;t=<seconds until whole again>`',
    },
}


def problem_response(status: int) -> dict[str, str]:
    """A reference to the shared problem-details answer for `status`, for `describe(responses=...)`.

    Raises KeyError for a status without one (see ERROR_RESPONSES).
    """
    return {"$ref": f"#/components/responses/{ERROR_RESPONSES[status][0]}"}


def _error_response_components() -> dict[str, Any]:
    components: dict[str, Any] = {}
    for status, (name, description) in ERROR_RESPONSES.items():
        response: dict[str, Any] = {
            "description": description,
            "content": {PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
        if status == 405:
            response["headers"] = {"Allow": {"schema": {"type": "string"}, "description": "The methods served"}}
        if status in (401, 403):
            response["headers"] = {
                "WWW-Authenticate": {"schema": {"type": "string"}, "description": "The RFC 6750 Bearer challenge"}
            }
        if status == 429:
            response["headers"] = {"Retry-After": {"schema": {"type": "integer"}}, **RATE_LIMIT_HEADERS}
        if status == 503:
            response["headers"] = {"Retry-After": {"schema": {"type": "integer"}}}
        components[name] = response
    return components


def _rebase_refs(node: Any, base: str) -> Any:
    """A copy of `node` whose local `$ref`s ("#/...") point inside `base` instead of the document root."""
    if isinstance(node, Mapping):
        return {
            key: base + value[1:]
            if key == "$ref" and isinstance(value, str) and value.startswith("#")
            else _rebase_refs(value, base)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_rebase_refs(item, base) for item in node]
    return node


class _Schemas:
    """components/schemas: each distinct schema once, under a unique name, referenced by $ref."""

    def __init__(self) -> None:
        self.by_name: dict[str, Any] = {"Problem": PROBLEM_SCHEMA}
        self._names: dict[int, str] = {id(PROBLEM_SCHEMA): "Problem"}

    def ref(self, schema: Mapping[str, Any], hint: str) -> dict[str, str]:
        name = self._names.get(id(schema))
        if name is None:
            title = schema.get("title")
            candidates = [_UNSAFE_NAME.sub("_", title)] if isinstance(title, str) and title else []
            candidates.append(_UNSAFE_NAME.sub("_", hint))
            name = next((c for c in candidates if c not in self.by_name), None)
            if name is None:
                number = 2
                while f"{candidates[-1]}.{number}" in self.by_name:
                    number += 1
                name = f"{candidates[-1]}.{number}"
            base = f"#/components/schemas/{name}"
            # A schema with its own $id resolves its refs against it; the rest need rebasing.
            self.by_name[name] = schema if "$id" in schema else _rebase_refs(schema, base)
            self._names[id(schema)] = name
        return {"$ref": f"#/components/schemas/{name}"}


def _handler_hint(handler: Any) -> str:
    module = getattr(handler, "__module__", "") or ""
    module = module.removeprefix("server.controllers.")
    return f"{module}.{getattr(handler, '__qualname__', type(handler).__name__)}"


def _operation_id(method: str, path: str, taken: set[str]) -> str:
    base = method.lower() + "_" + "_".join(re.findall(r"[A-Za-z0-9]+", path))
    base = base.rstrip("_") if base != f"{method.lower()}_" else f"{method.lower()}_root"
    candidate, number = base, 2
    while candidate in taken:
        candidate, number = f"{base}_{number}", number + 1
    taken.add(candidate)
    return candidate


def _summary(handler: Any, stamp: RouteDoc) -> str | None:
    if stamp.summary:
        return stamp.summary
    doc = _docstring(handler)
    return doc.splitlines()[0].strip() if doc else None


def _docstring(handler: Any) -> str | None:
    doc = getattr(handler, "__doc__", None)
    return doc.strip() if isinstance(doc, str) and doc.strip() else None


def _parameters(path: str, handler_schemas: Mapping[str, Any], schemas: _Schemas, hint: str) -> list[dict[str, Any]]:
    params: list[dict[str, Any]] = []
    for kind, location in (("path", "path"), ("query", "query")):
        compiled = handler_schemas.get(kind)
        if compiled is None:
            continue
        ref = schemas.ref(compiled.schema, f"{hint}.{kind}")["$ref"]
        component = schemas.by_name[ref.rsplit("/", 1)[1]]
        required = set(component.get("required", []))
        for name, prop in component.get("properties", {}).items():
            if location == "path" and f"{{{name}}}" not in path:
                continue
            param: dict[str, Any] = {
                "name": name,
                "in": location,
                "required": location == "path" or name in required,
                "schema": prop,
            }
            if isinstance(prop, Mapping) and isinstance(prop.get("description"), str):
                param["description"] = prop["description"]
            params.append(param)
    # Path parameters the path schema does not declare are still parameters: plain strings.
    declared = {p["name"] for p in params if p["in"] == "path"}
    for name in _PATH_PARAM.findall(path):
        if name not in declared:
            params.append({"name": name, "in": "path", "required": True, "schema": {"type": "string"}})
    return params


def _media_with_ref(media: Mapping[str, Any], schemas: _Schemas, hint: str) -> dict[str, Any]:
    media = dict(media)
    schema = media.get("schema")
    if isinstance(schema, Mapping) and "$ref" not in schema:
        media["schema"] = schemas.ref(schema, hint)
    return media


def _operation(
    method: str,
    route: RouteLike,
    handler: Any,
    schemas: _Schemas,
    taken: set[str],
    access: OperationAccess | None = None,
) -> dict[str, Any]:
    stamp = doc_of(handler)
    stamped = schemas_of(handler)
    hint = _handler_hint(handler)
    tags = [f"v{route.version}" if route.version is not None else "pages", *stamp.tags]
    operation: dict[str, Any] = {"operationId": _operation_id(method, route.path, taken), "tags": tags}
    summary = _summary(handler, stamp)
    if summary:
        operation["summary"] = summary
    if stamp.description:
        operation["description"] = stamp.description

    parameters = _parameters(route.path, stamped, schemas, hint)
    if parameters:
        operation["parameters"] = parameters

    responses: dict[str, Any] = {}
    errors = {500}
    if "body" in stamped:
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schemas.ref(stamped["body"].schema, f"{hint}.body")}},
        }
        errors |= {400, 413, 415, 422}
    if "query" in stamped:
        errors.add(400)
    if _PATH_PARAM.search(route.path):
        errors.add(404)
    route_meta = meta_of(handler)
    if route_meta is not None and route_meta.cache is not None:
        # A cached route refuses undeclared query parameters, and reads the namespace's
        # generation from the database before Redis (a storage fault is a 503).
        errors |= {400, 503}
    if access is not None:
        # Any call may send a token, and a bad one is refused even where none is needed.
        errors.add(401)
        if access.scopes:
            errors.add(403)
        if access.rate_policy is not None:
            errors.add(429)
            operation["x-rate-limit"] = access.rate_policy
        if access.token_required:
            operation["security"] = [{BEARER_SCHEME: list(access.scopes)}]
        else:
            operation["security"] = [{}, {BEARER_SCHEME: []}]  # anonymous, or any valid token
    for status in sorted(errors):
        responses[str(status)] = problem_response(status)
    for code, stamped_response in stamp.responses.items():
        response = dict(stamped_response)  # the stamp is shared by every build: copy, never change
        if "content" in response:
            response["content"] = {
                media_type: _media_with_ref(media, schemas, f"{hint}.{code}")
                for media_type, media in response["content"].items()
            }
        responses[code] = response
    if not any(code.startswith("2") for code in responses):
        # Without a stamp we only know a GET's success code for sure.
        responses["200" if method == "GET" else "2XX"] = {"description": "Success"}
    operation["responses"] = dict(sorted(responses.items()))
    return operation


def build_openapi(
    routes: Iterable[RouteLike],
    *,
    title: str,
    version: str,
    description: str = "",
    access: AccessOf | None = None,
    security_description: str = "",
) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every public operation of `routes` (see `describe_routes`).

    `access` says, per operation, who may call it and its rate limit (the `security`
    requirements, with scopes, and the 401/403/429 answers); without it nothing is said.
    """
    schemas = _Schemas()
    taken: set[str] = set()
    paths: dict[str, dict[str, Any]] = {}
    versions: set[int] = set()
    secured = False
    for route in routes:
        if not is_public(route):
            continue
        for method, handler in route_operations(route):
            if doc_of(handler).hidden:
                continue
            rules = access(route, method, handler) if access is not None else None
            secured = secured or rules is not None
            paths.setdefault(route.path, {})[method.lower()] = _operation(method, route, handler, schemas, taken, rules)
            if route.version is not None:
                versions.add(route.version)
    tags = [{"name": f"v{v}", "description": f"API version {v}, under /api/v{v}"} for v in sorted(versions)]
    tags.append({"name": "pages", "description": "Service pages outside the versioned API"})
    components: dict[str, Any] = {"schemas": schemas.by_name, "responses": _error_response_components()}
    if secured:
        components["securitySchemes"] = {
            BEARER_SCHEME: {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "opaque token",
                "description": security_description or "An API token: `Authorization: Bearer <token>`",
            }
        }
    return {
        "openapi": OPENAPI_VERSION,
        "info": {"title": title, "version": version, "description": description},
        "tags": tags,
        "paths": paths,
        "components": components,
    }
