"""API versions as sub-apps: each mounted at /api/v<N> from its route tables; the route listing every reader uses."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from server.keys import API_APPS_KEY, API_VERSION_KEY


@dataclass(frozen=True, slots=True)
class RouteInfo:
    version: int | None
    method: str
    path: str
    name: str | None
    handler: object


def api_version(request: web.Request) -> int:
    """The API version whose sub-app is serving this request."""
    return request.app[API_VERSION_KEY]


def merged_routes(tables: Iterable[web.RouteTableDef]) -> list[web.RouteDef]:
    """Route definitions where a later table's (method, path) replaces an earlier one's."""
    merged: dict[tuple[str, str], web.RouteDef] = {}
    for table in tables:
        for route in table:
            if not isinstance(route, web.RouteDef):
                raise TypeError(f"only plain routes are versioned, got {route!r}")
            merged[(route.method, route.path)] = route
    return list(merged.values())


def build_version_app(
    version: int, tables: Iterable[web.RouteTableDef], middlewares: Sequence[Middleware] = ()
) -> web.Application:
    """The sub-app of one API version: `tables` merged in order (a later route replaces an earlier one)."""
    app = web.Application(middlewares=list(middlewares))
    app[API_VERSION_KEY] = version
    app.add_routes(merged_routes(tables))
    return app


def mount_api_versions(
    app: web.Application,
    versions: Mapping[int, Sequence[web.RouteTableDef]],
    middlewares: Sequence[Middleware] = (),
) -> None:
    """Mount /api/v<N> for every version, each with its route tables and `middlewares`."""
    apps: dict[int, web.Application] = {}
    for version in sorted(versions):
        sub = build_version_app(version, versions[version], middlewares)
        app.add_subapp(f"/api/v{version}", sub)
        apps[version] = sub
    app[API_APPS_KEY] = apps


def describe_routes(app: web.Application) -> list[RouteInfo]:
    """Every route of the app and of each API version, for the index page, the CLI and OpenAPI."""
    infos: list[RouteInfo] = []
    owner = {
        id(resource): version
        for version, sub in app.get(API_APPS_KEY, {}).items()
        for resource in sub.router.resources()
    }
    for route in app.router.routes():  # sub-app resources carry their mount prefix already
        if route.method == "HEAD" or route.resource is None:
            continue
        version = owner.get(id(route.resource))
        infos.append(RouteInfo(version, route.method, route.resource.canonical, route.name, route.handler))
    return infos
