"""Request validation: per-route JSON Schemas for the body, query and path, checked before the handler.

Handlers are stamped by decorators (`body_schema`, `query_schema`, `path_schema`); one middleware
reads the stamps from `request.match_info.handler`, so decorator order does not matter and
class-based views work (stamp their methods). Schemas are compiled once, when decorated.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.typedefs import Handler
from jsonschema import Draft202012Validator, FormatChecker

from server.helpers.errors import InvalidInput, NotFound, UnsupportedMediaType, ValidationFailed
from server.keys import BODY_KEY, PATH_KEY, QUERY_KEY

H = TypeVar("H", bound=Callable[..., Any])

STAMP = "__request_schemas__"


class CompiledSchema:
    """A JSON Schema compiled once: the schema itself (for OpenAPI) and its validator."""

    __slots__ = ("schema", "validator")

    def __init__(self, schema: Mapping[str, Any]) -> None:
        Draft202012Validator.check_schema(schema)
        self.schema = schema
        self.validator = Draft202012Validator(schema, format_checker=FormatChecker())

    def errors(self, instance: Any) -> list[tuple[list[str | int], str]]:
        """Every violation as (path, message), sorted by path; empty when valid."""
        found = [
            (list(e.absolute_path), e.message) for e in self.validator.iter_errors(instance)
        ]
        return sorted(found, key=lambda item: [str(p) for p in item[0]])


def json_pointer(path: list[str | int]) -> str:
    """RFC 6901 pointer for a path into a JSON document ('' is the root)."""
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def _stamp(kind: str, schema: Mapping[str, Any]) -> Callable[[H], H]:
    compiled = CompiledSchema(schema)

    def stamp(handler: H) -> H:
        schemas = dict(getattr(handler, STAMP, {}))
        schemas[kind] = compiled
        setattr(handler, STAMP, schemas)
        return handler

    return stamp


def body_schema(schema: Mapping[str, Any]) -> Callable[[H], H]:
    """Validate the JSON body against `schema`; the handler reads it from `request[BODY_KEY]`."""
    return _stamp("body", schema)


def query_schema(schema: Mapping[str, Any]) -> Callable[[H], H]:
    """Validate query parameters (coerced to the schema's types); read them from `request[QUERY_KEY]`."""
    return _stamp("query", schema)


def path_schema(schema: Mapping[str, Any]) -> Callable[[H], H]:
    """Validate path parameters (coerced); a violation answers 404; read them from `request[PATH_KEY]`."""
    return _stamp("path", schema)


def route_handler(request: web.Request) -> Any:
    """The registered handler of this request, or the method of a class-based view."""
    handler = request.match_info.handler
    if isinstance(handler, type) and issubclass(handler, web.View):
        return getattr(handler, request.method.lower(), None)
    return handler


def request_schemas(handler: Any) -> dict[str, CompiledSchema]:
    return getattr(handler, STAMP, {}) if handler is not None else {}


def _coerce_value(raw: str, schema: Mapping[str, Any]) -> Any:
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
    for kind in kinds:
        try:
            if kind == "integer":
                return int(raw)
            if kind == "number":
                return float(raw)
        except ValueError:
            continue
        if kind == "boolean" and raw.lower() in ("true", "false", "1", "0"):
            return raw.lower() in ("true", "1")
    return raw


def coerce_params(params: Mapping[str, str], schema: Mapping[str, Any]) -> dict[str, Any]:
    """Strings from a URL turned into the types the schema declares (when they parse)."""
    props = schema.get("properties", {})
    out: dict[str, Any] = {}
    for name in params:
        prop = props.get(name, {})
        if prop.get("type") == "array":
            values = params.getall(name) if hasattr(params, "getall") else [params[name]]  # type: ignore[attr-defined]
            out[name] = [_coerce_value(v, prop.get("items", {})) for v in values]
        else:
            out[name] = _coerce_value(params[name], prop)
    return out


def _param_errors(errors: list[tuple[list[str | int], str]]) -> list[dict[str, str]]:
    items = []
    for path, message in errors:
        items.append({"parameter": str(path[0]) if path else "", "detail": message})
    return items


def _hook(request: web.Request, handler: Any) -> Callable[[web.Request, ValidationFailed], Any] | None:
    """`<method>_schema_validation_error` on the view class, else on the handler's module."""
    name = f"{request.method.lower()}_schema_validation_error"
    registered = request.match_info.handler
    if isinstance(registered, type):
        hook = getattr(registered, name, None)
        if hook is not None:
            return hook
    module = sys.modules.get(getattr(handler, "__module__", ""), None)
    return getattr(module, name, None)


def is_json_content_type(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


async def read_json_body(request: web.Request) -> Any:
    """The parsed JSON body; raises UnsupportedMediaType (415) or InvalidInput (400). 413 propagates."""
    if not is_json_content_type(request.content_type):
        raise UnsupportedMediaType(
            f"expected a JSON body (Content-Type: application/json), got {request.content_type!r}"
        )
    raw = await request.read()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"the body is not valid JSON: {exc}") from None


@web.middleware
async def validation(request: web.Request, handler: Handler) -> web.StreamResponse:
    target = route_handler(request)
    schemas = request_schemas(target)
    if not schemas:
        return await handler(request)

    path = schemas.get("path")
    if path is not None:
        values = coerce_params(request.match_info, path.schema)
        errors = path.errors(values)
        if errors:
            raise NotFound(f"no such resource: {errors[0][1]}")
        request[PATH_KEY] = values

    query = schemas.get("query")
    if query is not None:
        values = coerce_params(request.query, query.schema)
        errors = query.errors(values)
        if errors:
            raise InvalidInput("invalid query parameters", errors=_param_errors(errors))
        request[QUERY_KEY] = values

    body = schemas.get("body")
    if body is not None:
        document = await read_json_body(request)
        errors = body.errors(document)
        if errors:
            failure = ValidationFailed(
                "the request body does not match the schema",
                errors=[{"pointer": json_pointer(p), "detail": m} for p, m in errors],
            )
            hook = _hook(request, target)
            if hook is not None:
                return await hook(request, failure)
            raise failure
        request[BODY_KEY] = document

    return await handler(request)
