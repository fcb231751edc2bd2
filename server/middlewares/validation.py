"""Request validation: the layer that checks the schemas a route declared (routing/stamps.py) before its handler.

Composed at start-up into the chain of each route that declares a schema (routing/chain.py), so
a route without one pays nothing; decorator order does not matter and class-based views work
(stamp their methods). A body failing its schema is answered by the route's `on_invalid` hook
when it declares one (see `invalid_hook`), else by the default 422.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import hdrs, web

from server.errors import InvalidInput, NotFound, UnsupportedMediaType, ValidationFailed
from server.json_codec import JSON_CONTENT_TYPE, loads_body
from server.keys import BODY_KEY, PATH_KEY, QUERY_KEY
from server.routing.chain import Handler, Layer, Route
from server.routing.meta import InvalidHook, RouteMeta, registered
from server.routing.schemas import CompiledSchema, Violation, json_pointer, shorten

_INTEGER = re.compile(r"-?[0-9]+")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?")
# Digits of an integer whose schema declares no bound: 64-bit values (what SQLite stores).
_UNBOUNDED_DIGITS = len(str(2**63))


class OutOfRange(ValueError):
    """A number with more digits than its schema's bounds allow: refused before int() (which
    raises past 4,300 digits and costs quadratic time before that)."""


def _bound(schema: Mapping[str, Any], *names: str) -> float | None:
    for name in names:
        value = schema.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    return None


def _digits_allowed(schema: Mapping[str, Any]) -> int:
    """The most digits a number within the schema's bounds can have (64-bit when unbounded)."""
    low = _bound(schema, "minimum", "exclusiveMinimum")
    high = _bound(schema, "maximum", "exclusiveMaximum")
    if low is None or high is None:
        return _UNBOUNDED_DIGITS
    return max(len(str(int(abs(low)))), len(str(int(abs(high)))))


def _parse_integer(raw: str, schema: Mapping[str, Any]) -> int:
    """`raw` (already matching _INTEGER) as an int; raises OutOfRange past the schema's digits."""
    sign = "-" if raw.startswith("-") else ""
    digits = raw[len(sign) :].lstrip("0") or "0"
    if len(digits) > _digits_allowed(schema):
        low = _bound(schema, "minimum", "exclusiveMinimum")
        high = _bound(schema, "maximum", "exclusiveMaximum")
        where = f"outside {low}..{high}" if low is not None and high is not None else "beyond 64 bits"
        raise OutOfRange(f"a number of {len(digits)} digits is {where}")
    return int(sign + digits)


def _coerce_value(raw: str, schema: Mapping[str, Any]) -> Any:
    """`raw` as the schema's type when it parses (else `raw` itself); raises OutOfRange."""
    # Strict ASCII grammars: int() alone would take "1_000", " 7 " and other digits scripts.
    kinds = schema.get("type")
    kinds = [kinds] if isinstance(kinds, str) else list(kinds or [])
    for kind in kinds:
        if kind == "integer" and _INTEGER.fullmatch(raw):
            return _parse_integer(raw, schema)
        if kind == "number" and _NUMBER.fullmatch(raw):
            if _INTEGER.fullmatch(raw):
                return _parse_integer(raw, schema)
            value = float(raw)
            if math.isfinite(value):
                return value
        if kind == "boolean" and raw in ("true", "false"):
            return raw == "true"
    return raw


def coerce_params(params: Mapping[str, str], schema: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """Strings from a URL turned into the types the schema declares (when they parse), and a
    `{"parameter", "detail"}` item for each number too long for its schema's bounds."""
    props = schema.get("properties", {})
    out: dict[str, Any] = {}
    unparsed: list[dict[str, str]] = []
    for name in params:
        if name in out:
            continue  # a repeated parameter: the first value counts (arrays take them all)
        prop = props.get(name, {})
        try:
            if prop.get("type") == "array":
                getall = getattr(params, "getall", None)  # a MultiDict: every value of a repeated name
                values = getall(name) if getall is not None else [params[name]]
                out[name] = [_coerce_value(v, prop.get("items", {})) for v in values]
            else:
                out[name] = _coerce_value(params[name], prop)
        except OutOfRange as exc:
            unparsed.append({"parameter": name, "detail": str(exc)})
            out[name] = None
    return out, unparsed


def _param_errors(compiled: CompiledSchema, values: Mapping[str, Any], errors: list[Violation]) -> list[dict[str, str]]:
    """`{"parameter", "detail"}` items; errors at the root are pinned to the parameter they concern."""
    declared = compiled.schema.get("properties", {})
    required = compiled.schema.get("required", [])
    items = []
    for path, message in errors:
        if path:
            items.append({"parameter": str(path[0]), "detail": message})
            continue
        missing = [name for name in required if name not in values and repr(name) in message]
        unknown = [name for name in values if name not in declared and repr(name) in message]
        for name in missing or unknown or [""]:
            items.append({"parameter": name, "detail": message})
    return items


def invalid_hook(request: web.Request, route: RouteMeta) -> InvalidHook | None:
    """The hook that answers a body failing its schema instead of the default 422, if any.

    - declared with the schema: `@body_schema(S, on_invalid=hook)`, called as `hook(request, error)`;
    - on a class-based view, a method named `<method>_schema_validation_error` on the view class:
      an instance method `(self, error)` (the view is built for the request, so `self.request`
      is there) or a staticmethod/classmethod `(request, error)`.
    `error` is the `ValidationFailed` the default answer would be built from (`.detail`,
    `.errors`). A hook returns a response (or an awaitable of one), or None for the default.
    """
    if route.on_invalid is not None:
        return route.on_invalid
    view_class = registered(request.match_info.handler)
    if not isinstance(view_class, type):
        return None
    name = f"{request.method.lower()}_schema_validation_error"
    attr = inspect.getattr_static(view_class, name, None)
    if isinstance(attr, (staticmethod, classmethod)):
        hook: InvalidHook = getattr(view_class, name)
        return hook
    if attr is None:
        return None

    def call_on_view(request: web.Request, error: ValidationFailed) -> Any:
        return getattr(view_class(request), name)(error)

    return call_on_view


def is_json_content_type(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def has_lone_surrogate(document: Any) -> bool:
    """True when a string of the document holds half a UTF-16 pair (legal JSON, unusable text)."""
    stack = [document]
    while stack:  # iterative: a deep document must not exhaust the recursion limit here
        node = stack.pop()
        if isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(node, dict):
            stack.extend(node)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def parse_json(raw: bytes) -> Any:
    """The JSON document in `raw`; raises InvalidInput (400)."""
    try:
        document = loads_body(raw)  # strict UTF-8, no NaN or Infinity (server/json_codec.py)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(f"the body is not valid JSON: {shorten(str(exc))}") from None
    except RecursionError:
        raise InvalidInput("the body is not valid JSON: nested too deeply") from None
    # Past strict decoding a lone surrogate can only arrive escaped; such a string breaks any later
    # encoding (SQLite, logs, Redis) into a 500, so it is refused here. Most bodies skip the walk.
    if (b"\\ud" in raw or b"\\uD" in raw) and has_lone_surrogate(document):
        raise InvalidInput("the body is not valid JSON: a string holds an unpaired UTF-16 surrogate")
    return document


async def read_raw_json_body(request: web.Request) -> bytes:
    """The body of a JSON request, unparsed.

    Raises UnsupportedMediaType (415); aiohttp's 413 propagates.
    """
    # The common header exactly as clients send it skips parsing it (aiohttp's content_type parses
    # parameters too); anything else is parsed.
    if request.headers.get(hdrs.CONTENT_TYPE) != JSON_CONTENT_TYPE and not is_json_content_type(request.content_type):
        raise UnsupportedMediaType(
            f"expected a JSON body (Content-Type: application/json), got {request.content_type!r}"
        )
    return await request.read()


async def read_json_body(request: web.Request) -> Any:
    """The parsed JSON body.

    Raises UnsupportedMediaType (415) or InvalidInput (400); aiohttp's 413 propagates.
    """
    return parse_json(await read_raw_json_body(request))


def validation_layer(max_violations: int) -> Layer:
    """The layer checking the schemas a route declares before its handler (None for a route that
    declares none), listing at most `max_violations` violations (server.max_violations).

    Path parameters failing their schema answer 404, query parameters 400, a body 400/413/415 when
    it cannot be read as JSON and 422 (or the route's `on_invalid` hook) when it fails its schema.
    """

    def validation(route: Route, handler: Handler) -> Handler | None:
        declared = route.meta
        path, query, body = declared.path, declared.query, declared.body
        if path is None and query is None and body is None:
            return None
        # Most requests of a route with optional parameters send none: decided once here.
        no_query_is_valid = query is not None and query.is_valid({})

        async def validated(request: web.Request) -> web.StreamResponse:
            if path is not None:
                request[PATH_KEY] = _checked_path(request, path)
            if query is not None:
                if no_query_is_valid and not request.rel_url.raw_query_string:
                    request[QUERY_KEY] = {}
                else:
                    request[QUERY_KEY] = _checked_query(request, query, max_violations)
            if body is not None:
                # The parse costs what it costs (40-80 ms of loop time for 1 MiB, valid or not);
                # listing the violations costs a few of their count, whatever the document's size
                # (routing/lazy_errors.py).
                document = parse_json(await read_raw_json_body(request))
                if not body.is_valid(document):
                    found, truncated = body.violations(document, max_violations)
                    return await _invalid_body(request, declared, found, truncated)
                request[BODY_KEY] = document
            return await handler(request)

        return validated

    return validation


def _checked_path(request: web.Request, path: CompiledSchema) -> dict[str, Any]:
    """The path parameters, coerced; raises NotFound (404) when they fail their schema."""
    values, unparsed = coerce_params(request.match_info, path.schema)
    if unparsed:
        raise NotFound(f"no such resource: {unparsed[0]['detail']}")
    if not path.is_valid(values):
        found, _ = path.violations(values, 1)
        raise NotFound(f"no such resource: {found[0][1] if found else 'invalid path'}")
    return values


def _checked_query(request: web.Request, query: CompiledSchema, limit: int) -> dict[str, Any]:
    """The query parameters, coerced; raises InvalidInput (400) when they fail their schema."""
    values, unparsed = coerce_params(request.query, query.schema)
    if unparsed:
        raise InvalidInput("invalid query parameters", errors=unparsed[:limit], errors_truncated=len(unparsed) > limit)
    if not query.is_valid(values):
        found, truncated = query.violations(values, limit)
        raise InvalidInput(
            "invalid query parameters",
            errors=_param_errors(query, values, found),
            errors_truncated=truncated,
        )
    return values


async def _invalid_body(
    request: web.Request, declared: RouteMeta, found: list[Violation], truncated: bool
) -> web.StreamResponse:
    """The route's hook's answer to a body failing its schema; raises ValidationFailed (422) without one."""
    failure = ValidationFailed(
        "the request body does not match the schema",
        errors=[{"pointer": json_pointer(p), "detail": m} for p, m in found],
        errors_truncated=truncated,
    )
    hook = invalid_hook(request, declared)
    if hook is not None:
        answer = hook(request, failure)
        if inspect.isawaitable(answer):
            answer = await answer
        if answer is not None:
            return answer  # type: ignore[no-any-return]
    raise failure
