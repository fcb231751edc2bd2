"""Each route's handler chain, composed once at start-up from its RouteMeta: a route pays only for what it declares.

A *layer* is a function `layer(route, handler)`. Given what a route declares (`route.meta`, its
method and path) and the handler it would wrap, it returns a new async handler that does its work
around `handler`, or None when the route declares nothing the layer serves: that route then pays
nothing for it, not even a frame. `chained(routes, layers)` (the API versions use it through
`routing.versions`) registers each route with the layers that apply to it, outermost first, like
a middleware list. An unstamped route is registered bare: it costs its handler plus the one
middleware every request passes (request id and problem details).

Adding a per-route feature (as `scopes` and `rate_limit` were: middlewares/bearer.py, rate_limit.py):

1. a field on `RouteMeta` (routing/meta.py) and a stamp that sets it (routing/stamps.py);
2. a layer in middlewares/ that returns None where the field is unset (and where the route
   needs nothing by default), else a handler doing the check and calling the next one;
3. its place in the list `create_app` gives the API versions (`API_LAYERS` order: rate limits,
   auth, cache, validation).

What every request needs, matched or not (request ids, problem details, metrics that count 404s),
stays a middleware: middlewares keep aiohttp's semantics and see every request, including those
no route matches, while a layer sees only the requests of the routes it wraps.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from aiohttp import hdrs, web

from server.routing.meta import REGISTERED, STAMP, RouteMeta, meta_of

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


T = TypeVar("T")


class AppResource(Generic[T]):
    """An app resource a layer reads on every request, looked up on the first and kept:
    `request.config_dict` builds a new ChainMapProxy on each access, which costs more than
    most checks a layer makes. A chain belongs to one app (create_app composes it), so does
    what it keeps."""

    __slots__ = ("_key", "_value")

    def __init__(self, key: web.AppKey[T]) -> None:
        self._key = key
        self._value: T | None = None

    def __call__(self, request: web.Request) -> T:
        if self._value is None:
            self._value = request.config_dict[self._key]
        return self._value


@dataclass(frozen=True, slots=True)
class Route:
    """What a layer knows of the route it may wrap: its method ("*" for any), path and RouteMeta."""

    method: str
    path: str
    meta: RouteMeta


class Layer(Protocol):
    """`(route, handler) -> handler | None`: wrap `handler` for this route, or None to stay out."""

    def __call__(self, route: Route, handler: Handler, /) -> Handler | None: ...


def compose(route: Route, handler: Handler, layers: Sequence[Layer]) -> Handler:
    """`handler` wrapped in each layer that applies to `route` (the first layer outermost)."""
    for layer in reversed(layers):
        wrapped = layer(route, handler)
        if wrapped is not None:
            handler = wrapped
    return handler


def _compose_function(method: str, path: str, handler: Handler, layers: Sequence[Layer]) -> Handler:
    route_meta = meta_of(handler)
    chain = compose(Route(method, path, route_meta or RouteMeta()), handler, layers)
    if chain is handler:
        return handler
    # Readers of the stamp (OpenAPI, the route listing, error reports) find it on the chain as on
    # the handler, and the registered handler behind it.
    setattr(chain, STAMP, route_meta)
    setattr(chain, REGISTERED, handler)
    return chain


def _compose_view(path: str, view: type[web.View], layers: Sequence[Layer]) -> Any:
    """A view's chain: one per method that some layer wraps, picked by the request's method."""

    async def call_view(request: web.Request) -> web.StreamResponse:
        return await view(request)

    chains: dict[str, Handler] = {}
    for method in sorted(hdrs.METH_ALL):
        function = getattr(view, method.lower(), None)
        if function is None:
            continue
        chain = compose(Route(method, path, meta_of(function) or RouteMeta()), call_view, layers)
        if chain is not call_view:
            chains[method] = chain
    if not chains:
        return view

    async def view_chain(request: web.Request) -> web.StreamResponse:
        return await chains.get(request.method, call_view)(request)

    setattr(view_chain, REGISTERED, view)
    return view_chain


def chained(routes: Iterable[web.RouteDef], layers: Sequence[Layer]) -> list[web.RouteDef]:
    """The route definitions with each handler composed with the layers that apply to it."""
    out = []
    for route in routes:
        handler: Any = route.handler
        if isinstance(handler, type) and issubclass(handler, web.View):
            composed = _compose_view(route.path, handler, layers)
        else:
            composed = _compose_function(route.method, route.path, handler, layers)
        out.append(web.RouteDef(route.method, route.path, composed, route.kwargs))
    return out
