"""The route decorators: each writes one field of the handler's RouteMeta and returns the handler unchanged.

A decorator only stamps, it never wraps: the order of decorators does not matter, and class-based
views work (decorate their methods).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

from server.cache.policy import make_policy
from server.routing.meta import InvalidHook, RouteDoc, meta
from server.routing.schemas import CompiledSchema

H = TypeVar("H", bound=Callable[..., Any])


def body_schema(schema: Mapping[str, Any], *, on_invalid: InvalidHook | None = None) -> Callable[[H], H]:
    """Validate the JSON body against `schema`; the handler reads it from `request[BODY_KEY]`.

    `on_invalid(request, error)` may answer a failing body instead of the default 422 (see
    `routing.meta.InvalidHook`). Raises `jsonschema.SchemaError` at decoration time when the
    schema itself is invalid.
    """
    compiled = CompiledSchema(schema)

    def stamp(handler: H) -> H:
        route = meta(handler)
        route.body = compiled
        route.on_invalid = on_invalid
        return handler

    return stamp


def query_schema(schema: Mapping[str, Any]) -> Callable[[H], H]:
    """Validate query parameters (coerced to the schema's types); read them from `request[QUERY_KEY]`."""
    compiled = CompiledSchema(schema)

    def stamp(handler: H) -> H:
        meta(handler).query = compiled
        return handler

    return stamp


def path_schema(schema: Mapping[str, Any]) -> Callable[[H], H]:
    """Validate path parameters (coerced); a violation answers 404; read them from `request[PATH_KEY]`."""
    compiled = CompiledSchema(schema)

    def stamp(handler: H) -> H:
        meta(handler).path = compiled
        return handler

    return stamp


def cached(
    ttl: int | None = None,
    *,
    vary_query: bool | Iterable[str] = True,
    vary_headers: Iterable[str] = (),
    namespace: str = "default",
    store_headers: Iterable[str] = (),
    content_type: str = "application/json",
) -> Callable[[H], H]:
    """Cache the route's 200 answers in Redis (served by middlewares/cache.py).

    `ttl` in seconds (None: `cache.default_ttl`); `vary_query` True keys on every parameter
    of the route's query schema and answers 400 to any other (no schema: no parameter), False
    on none, a list of names on those only (others are ignored); `vary_headers` request
    headers that change the answer (also sent as `Vary`); `namespace` groups entries for
    `invalidate_namespace`; `store_headers` answer headers kept besides the defaults;
    `content_type` the media type of the answers stored (others are not).
    Raises ValueError for a bad declaration, when decorating.
    """
    policy = make_policy(
        ttl,
        vary_query=vary_query,
        vary_headers=vary_headers,
        namespace=namespace,
        store_headers=store_headers,
        content_type=content_type,
    )

    def stamp(handler: H) -> H:
        meta(handler).cache = policy
        return handler

    return stamp


def _response_object(spec: str | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(spec, str):
        return {"description": spec}
    if "$ref" in spec:
        return dict(spec)
    response = dict(spec)
    schema = response.pop("schema", None)
    content_type = response.pop("content_type", "application/json")
    response.setdefault("description", "")
    if schema is not None:
        response["content"] = {content_type: {"schema": schema}}
    return response


def describe(
    *,
    summary: str | None = None,
    description: str | None = None,
    responses: Mapping[int | str, str | Mapping[str, Any]] | None = None,
    tags: Iterable[str] = (),
    hidden: bool = False,
) -> Callable[[H], H]:
    """Document a handler for /openapi.json (optional: the schemas say the rest).

    `responses` maps a status code to a description, or to an OpenAPI Response Object in which
    `schema` (and `content_type`, default application/json) may stand for `content`, or to
    `routing.openapi.problem_response(status)`. A code given here replaces the generated answer
    for that code. `hidden` keeps the route out.
    """
    doc = RouteDoc(
        summary=summary,
        description=description,
        responses={str(code): _response_object(spec) for code, spec in (responses or {}).items()},
        tags=tuple(tags),
        hidden=hidden,
    )

    def stamp(handler: H) -> H:
        meta(handler).doc = doc
        return handler

    return stamp


def accepts_scraper_token(handler: H) -> H:
    """Let a scraper's bearer token (`metrics.token`, when set) open this internal page too."""
    meta(handler).scraper_token = True
    return handler
