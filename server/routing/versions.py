"""API versions: each version's route tables registered on the root app under /api/v<N>, each route composed
with the layers it declares (routing/chain.py); the version a request is served by; the route listing.

Flat, not one sub-app per version: a sub-app costs every request its prefix resolution and one
more middleware frame aiohttp adds per app (measured: about 5 us a request of the 40-50 a whole
request costs; docs/decisions.md, "Per-route chains, flat routes, one middleware"). What a sub-app gave is kept by
hand: the version is bound to each route's resource (`api_version`), and route names carry the
version (`v2:foo`; `url_for` finds the version's own route).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from yarl import URL

from server.keys import API_ROUTES_KEY, API_VERSION_KEY
from server.routing.chain import Layer, chained
from server.routing.meta import registered


@dataclass(frozen=True, slots=True)
class RouteInfo:
    version: int | None
    method: str
    path: str
    name: str | None
    handler: object


def versioned_name(version: int, name: str) -> str:
    """The name a version's route is registered under: `v2:user-detail`."""
    return f"v{version}:{name}"


def api_version_of(request: web.Request) -> int | None:
    """The API version serving this request; None outside the versioned API.

    A route mounted by `mount_api_versions` has its version bound to its resource; a sub-app of
    its own may declare one for all its routes with API_VERSION_KEY (tests do).
    """
    app = request.app
    version = app.get(API_VERSION_KEY)
    if version is None:
        owners = app.get(API_ROUTES_KEY)
        resource = request.match_info.route.resource
        if owners is not None and resource is not None:
            version = owners.get(resource)
    return version


def api_version(request: web.Request) -> int:
    """The API version serving this request (for handlers of the versioned API)."""
    version = api_version_of(request)
    if version is None:
        raise LookupError(f"{request.path} is not served by a version of the API")
    return version


def url_for(request: web.Request, name: str, **parts: str) -> URL:
    """The URL of route `name` of the version serving this request (a sub-app's own when it has one)."""
    router = request.app.router
    version = api_version_of(request)
    if version is not None and request.app.get(API_VERSION_KEY) is None:
        name = versioned_name(version, name)
    return router[name].url_for(**parts)


def merged_routes(tables: Iterable[web.RouteTableDef]) -> list[web.RouteDef]:
    """Route definitions where a later table's (method, path) replaces an earlier one's."""
    merged: dict[tuple[str, str], web.RouteDef] = {}
    for table in tables:
        for route in table:
            if not isinstance(route, web.RouteDef):
                raise TypeError(f"only plain routes are versioned, got {route!r}")
            merged[(route.method, route.path)] = route
    return list(merged.values())


def mount_api_versions(
    app: web.Application,
    versions: Mapping[int, Sequence[web.RouteTableDef]],
    layers: Sequence[Layer] = (),
) -> None:
    """Register /api/v<N> for every version: its tables merged in order (a later route replaces an
    earlier one), each route composed with the `layers` that apply to it."""
    owners: dict[web.AbstractResource, int] = {}
    for version in sorted(versions):
        prefix = f"/api/v{version}"
        for route in chained(merged_routes(versions[version]), layers):
            kwargs: dict[str, Any] = dict(route.kwargs)
            if kwargs.get("name"):
                kwargs["name"] = versioned_name(version, kwargs["name"])
            for added in web.RouteDef(route.method, prefix + route.path, route.handler, kwargs).register(app.router):
                assert added.resource is not None
                owners[added.resource] = version
    app[API_ROUTES_KEY] = owners


def describe_routes(app: web.Application) -> list[RouteInfo]:
    """Every route of the app and of each API version, for the index page, the CLI and OpenAPI."""
    infos: list[RouteInfo] = []
    owners = app.get(API_ROUTES_KEY, {})
    for route in app.router.routes():  # sub-app resources carry their mount prefix already
        if route.method == "HEAD" or route.resource is None:
            continue
        version = owners.get(route.resource)
        name = route.name
        if version is not None and name is not None:
            name = name.removeprefix(versioned_name(version, ""))
        handler = registered(route.handler)  # as declared, not its composed chain
        infos.append(RouteInfo(version, route.method, route.resource.canonical, name, handler))
    return infos
