"""Request validation: JSON Schemas stamped on handlers, checked by one middleware before the handler."""

# Decorators (`body_schema`, `query_schema`, `path_schema`) stamp handlers; the middleware reads
# the stamps from `request.match_info.handler`, so decorator order does not matter and class-based
# views work (stamp their methods). See `CompiledSchema` for the two validators and `find_hook`
# for the hooks that may answer a failed body instead of the default 422.

from __future__ import annotations

import inspect
import json
import logging
import math
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, TypeVar

import jsonschema_rs
from aiohttp import web
from aiohttp.typedefs import Handler
from jsonschema import Draft202012Validator

from server.helpers.errors import InvalidInput, NotFound, UnsupportedMediaType, ValidationFailed
from server.helpers.schema_errors import lazy_validator
from server.keys import BODY_KEY, CONFIG_KEY, PATH_KEY, QUERY_KEY

log = logging.getLogger(__name__)

H = TypeVar("H", bound=Callable[..., Any])

STAMP = "__request_schemas__"
KINDS = ("path", "query", "body")

# One violation: the path into the instance (keys and indexes) and a message.
# A message quotes the offending value (a 1 MiB string quotes 1 MiB): kept to this many characters.
MAX_MESSAGE_CHARS = 300
Violation = tuple[list[str | int], str]
ValidationHook = Callable[[web.Request, ValidationFailed], Any]


class CompiledSchema:
    """A JSON Schema compiled once: the schema itself (for OpenAPI) and its validators.

    All are Draft 2020-12 with format checking on. `jsonschema_rs` answers "valid?" on every
    request in under a microsecond; the violations of a document already known to be invalid
    come from a lazy jsonschema walk that skips valid parts (server/helpers/schema_errors.py),
    so listing the first few costs little whatever the document's size. `full` is the plain
    reference validator (the tests compare it with the fast one).
    """

    __slots__ = ("schema", "fast", "full", "lazy")

    # Counts every compilation in the process, so tests can prove requests never compile.
    compilations: ClassVar[int] = 0

    def __init__(self, schema: Mapping[str, Any]) -> None:
        Draft202012Validator.check_schema(schema)  # a broken schema fails at import, not per request
        self.schema = schema
        # offline: a remote $ref must never turn into a blocking download.
        self.fast = jsonschema_rs.Draft202012Validator(schema, validate_formats=True, offline=True)
        self.full = Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)
        self.lazy = lazy_validator(schema)
        CompiledSchema.compilations += 1

    def is_valid(self, instance: Any) -> bool:
        """The yes/no answer, from the compiled Rust validator."""
        return self.fast.is_valid(instance)

    def violations(self, instance: Any, limit: int) -> tuple[list[Violation], bool]:
        """The first `limit` violations as (path, message), in schema order, and whether there
        are more; the rest of the document is not walked. Empty when valid."""
        if self.fast.is_valid(instance):
            return [], False
        found: list[Violation] = []
        for error in self.lazy.iter_errors(instance):
            if len(found) >= limit:
                return found, True
            found.append((list(error.absolute_path), shorten(error.message)))
        if not found:
            # The two disagree (jsonschema's "email" format only looks for an "@"): the fast
            # validator decides, so let it name the violation (its first: its binding lists
            # every violation before yielding one).
            log.warning("jsonschema found no error where jsonschema_rs did; using the latter's")
            try:
                self.fast.validate(instance)
            except jsonschema_rs.ValidationError as exc:
                found = [(list(exc.instance_path), shorten(exc.message))]
        return found, False

    def errors(self, instance: Any) -> list[Violation]:
        """Every violation as (path, message), sorted by path; empty when valid (tests and tools:
        requests list a bounded number with `violations`)."""
        found, _ = self.violations(instance, sys.maxsize)
        return sorted(found, key=lambda item: [str(p) for p in item[0]])


def shorten(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """`message` cut to `limit` characters: a violation's message quotes the offending value."""
    return message if len(message) <= limit else message[: limit - 1] + "\u2026"


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
    """Validate the JSON body against `schema`; the handler reads it from `request[BODY_KEY]`.

    Raises `jsonschema.SchemaError` at decoration time when the schema itself is invalid.
    """
    return _stamp("body", schema)


def query_schema(schema: Mapping[str, Any]) -> Callable[[H], H]:
    """Validate query parameters (coerced to the schema's types); read them from `request[QUERY_KEY]`."""
    return _stamp("query", schema)


def path_schema(schema: Mapping[str, Any]) -> Callable[[H], H]:
    """Validate path parameters (coerced); a violation answers 404; read them from `request[PATH_KEY]`."""
    return _stamp("path", schema)


def route_handler(request: web.Request) -> Any:
    """The registered handler of this request, or the method of a class-based view."""
    return method_handler(request.match_info.handler, request.method)


def method_handler(handler: Any, method: str) -> Any:
    """`handler` itself, or for a class-based view its method for `method` (None if it has none)."""
    if isinstance(handler, type) and issubclass(handler, web.View):
        return getattr(handler, method.lower(), None)
    return handler


def request_schemas(handler: Any) -> dict[str, CompiledSchema]:
    """The schemas stamped on a handler, by kind ("body", "query", "path")."""
    return getattr(handler, STAMP, {}) if handler is not None else {}


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
    digits = raw[len(sign):].lstrip("0") or "0"
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


def coerce_params(
    params: Mapping[str, str], schema: Mapping[str, Any]
) -> tuple[dict[str, Any], list[dict[str, str]]]:
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
                values = params.getall(name) if hasattr(params, "getall") else [params[name]]  # type: ignore[attr-defined]
                out[name] = [_coerce_value(v, prop.get("items", {})) for v in values]
            else:
                out[name] = _coerce_value(params[name], prop)
        except OutOfRange as exc:
            unparsed.append({"parameter": name, "detail": str(exc)})
            out[name] = None
    return out, unparsed


def _param_errors(
    compiled: CompiledSchema, values: Mapping[str, Any], errors: list[Violation]
) -> list[dict[str, str]]:
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


def find_hook(request: web.Request, handler: Any) -> ValidationHook | None:
    """The hook that answers a body failing its schema instead of the default 422, if any.

    - a function handler: `<method>_schema_validation_error(request, error)` in its module;
    - a class-based view: the method of that name on the view class, either an instance method
      `(self, error)` (the view is built for the request, so `self.request` is there) or a
      staticmethod/classmethod `(request, error)`; without one, its module's hook applies.
    `error` is the `ValidationFailed` the default answer would be built from (`.detail`,
    `.errors`). A hook returns a response (or an awaitable of one), or None for the default.
    """
    name = f"{request.method.lower()}_schema_validation_error"
    registered = request.match_info.handler
    if isinstance(registered, type):
        attr = inspect.getattr_static(registered, name, None)
        if isinstance(attr, (staticmethod, classmethod)):
            return getattr(registered, name)
        if attr is not None:
            view_class = registered

            def call_on_view(request: web.Request, error: ValidationFailed) -> Any:
                return getattr(view_class(request), name)(error)

            return call_on_view
    module = sys.modules.get(getattr(handler, "__module__", ""), None)
    return getattr(module, name, None)


def is_json_content_type(content_type: str) -> bool:
    return content_type == "application/json" or (
        content_type.startswith("application/") and content_type.endswith("+json")
    )


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259); Python's parser accepts them by default.
    raise ValueError(f"{name} is not a JSON value")


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


# Built once: json.loads with any keyword argument builds a new decoder on every call.
_JSON_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def parse_json(raw: bytes) -> Any:
    """The JSON document in `raw`; raises InvalidInput (400)."""
    try:
        # Strict UTF-8 (RFC 8259): json.loads(bytes) would let encoded surrogates through.
        document = _JSON_DECODER.decode(raw.decode("utf-8"))
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
    if not is_json_content_type(request.content_type):
        raise UnsupportedMediaType(
            f"expected a JSON body (Content-Type: application/json), got {request.content_type!r}"
        )
    return await request.read()


async def read_json_body(request: web.Request) -> Any:
    """The parsed JSON body.

    Raises UnsupportedMediaType (415) or InvalidInput (400); aiohttp's 413 propagates.
    """
    return parse_json(await read_raw_json_body(request))


def check_body(raw: bytes, compiled: CompiledSchema, limit: int) -> tuple[Any, list[Violation], bool]:
    """(the document, its first `limit` violations, whether there are more); raises InvalidInput."""
    document = parse_json(raw)
    if compiled.is_valid(document):
        return document, [], False
    found, truncated = compiled.violations(document, limit)
    return document, found, truncated


@web.middleware
async def validation(request: web.Request, handler: Handler) -> web.StreamResponse:
    target = route_handler(request)
    schemas = request_schemas(target)
    if not schemas:
        return await handler(request)
    limit = request.config_dict[CONFIG_KEY].server.max_violations

    path = schemas.get("path")
    if path is not None:
        values, unparsed = coerce_params(request.match_info, path.schema)
        if unparsed:
            raise NotFound(f"no such resource: {unparsed[0]['detail']}")
        if not path.is_valid(values):
            found, _ = path.violations(values, 1)
            raise NotFound(f"no such resource: {found[0][1] if found else 'invalid path'}")
        request[PATH_KEY] = values

    query = schemas.get("query")
    if query is not None:
        values, unparsed = coerce_params(request.query, query.schema)
        if unparsed:
            raise InvalidInput("invalid query parameters", errors=unparsed[:limit],
                               errors_truncated=len(unparsed) > limit)
        if not query.is_valid(values):
            found, truncated = query.violations(values, limit)
            raise InvalidInput(
                "invalid query parameters",
                errors=_param_errors(query, values, found), errors_truncated=truncated,
            )
        request[QUERY_KEY] = values

    body = schemas.get("body")
    if body is not None:
        document, found, truncated = check_body(await read_raw_json_body(request), body, limit)
        if found:
            failure = ValidationFailed(
                "the request body does not match the schema",
                errors=[{"pointer": json_pointer(p), "detail": m} for p, m in found],
                errors_truncated=truncated,
            )
            hook = find_hook(request, target)
            if hook is not None:
                answer = hook(request, failure)
                if inspect.isawaitable(answer):
                    answer = await answer
                if answer is not None:
                    return answer
            raise failure
        request[BODY_KEY] = document

    return await handler(request)
