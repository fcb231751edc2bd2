"""One stamp per handler: the RouteMeta route decorators write and validation, cache and OpenAPI read."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web

from server.cache.policy import CachePolicy
from server.errors import ValidationFailed

if TYPE_CHECKING:
    from server.routing.schemas import CompiledSchema

# Answers a body that fails its schema instead of the default 422: called as (request, error),
# returns a response, an awaitable of one, or None for the default.
InvalidHook = Callable[[web.Request, ValidationFailed], Any]

STAMP = "__route_meta__"
# Set on a composed handler chain (routing/chain.py): the handler as it was registered.
REGISTERED = "__route_handler__"


@dataclass(frozen=True, slots=True)
class RouteDoc:
    """What a handler says about itself for OpenAPI beyond its schemas (`@describe`)."""

    summary: str | None = None
    description: str | None = None
    responses: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    hidden: bool = False


@dataclass(slots=True)
class RouteMeta:
    """Everything declared about one handler; each decorator fills one field."""

    body: CompiledSchema | None = None
    query: CompiledSchema | None = None
    path: CompiledSchema | None = None
    # For `body` failures; explicit: `@body_schema(S, on_invalid=hook)`, or see `view_hook`.
    on_invalid: InvalidHook | None = None
    cache: CachePolicy | None = None
    doc: RouteDoc | None = None
    # An internal page a scraper may also open with its bearer token (`metrics.token`).
    scraper_token: bool = False
    # A field a layer reads goes here, with the stamp that sets it (see routing/chain.py).

    def schemas(self) -> dict[str, CompiledSchema]:
        """The declared schemas by kind ("path", "query", "body"), in the order they are checked."""
        found = {"path": self.path, "query": self.query, "body": self.body}
        return {kind: schema for kind, schema in found.items() if schema is not None}


def meta(handler: Any) -> RouteMeta:
    """The handler's RouteMeta, created on first use (decorators call this)."""
    existing = getattr(handler, STAMP, None)
    if existing is None:
        existing = RouteMeta()
        setattr(handler, STAMP, existing)
    return existing


def meta_of(handler: Any) -> RouteMeta | None:
    """The handler's RouteMeta, or None when nothing was declared (readers call this)."""
    return getattr(handler, STAMP, None) if handler is not None else None


def schemas_of(handler: Any) -> dict[str, CompiledSchema]:
    """The schemas declared on a handler, by kind (empty when none)."""
    route = meta_of(handler)
    return route.schemas() if route is not None else {}


def doc_of(handler: Any) -> RouteDoc:
    """What a handler says of itself for OpenAPI (an empty RouteDoc when nothing)."""
    route = meta_of(handler)
    return route.doc if route is not None and route.doc is not None else RouteDoc()


def registered(handler: Any) -> Any:
    """The handler as registered (a function or web.View class), also when it runs composed."""
    return getattr(handler, REGISTERED, handler)


def method_handler(handler: Any, method: str) -> Any:
    """`handler` itself, or for a class-based view its method for `method` (None if it has none)."""
    handler = registered(handler)
    if isinstance(handler, type) and issubclass(handler, web.View):
        return getattr(handler, method.lower(), None)
    return handler


def meta_for(request: web.Request) -> RouteMeta | None:
    """The RouteMeta of the handler serving this request (the registered one: a middleware
    receives a partial), or of the class-based view's method; None when nothing was declared."""
    return meta_of(method_handler(request.match_info.handler, request.method))
