"""API versions: each version is a sub-app built from the common route tables plus its overrides."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Middleware

from server.controllers import bar, baz, fail, foo, jobs, users
from server.controllers.v2 import foo as v2_foo
from server.keys import API_VERSION_KEY

# Route tables every version serves, in order.
COMMON_ROUTES: tuple[web.RouteTableDef, ...] = (
    foo.routes, fail.routes, bar.routes, baz.routes, users.routes, jobs.routes,
)

# Per version, tables whose routes replace the common route of the same method and path.
API_VERSIONS: dict[int, tuple[web.RouteTableDef, ...]] = {
    1: (),
    2: (v2_foo.routes,),
}

API_APPS_KEY = web.AppKey("api_apps", dict)


@dataclass(frozen=True, slots=True)
class RouteInfo:
    version: int | None
    method: str
    path: str
    name: str | None
    handler: object


def merged_routes(tables: Iterable[web.RouteTableDef]) -> list[web.RouteDef]:
    """Route definitions where a later table's (method, path) replaces an earlier one's."""
    merged: dict[tuple[str, str], web.RouteDef] = {}
    for table in tables:
        for route in table:
            if not isinstance(route, web.RouteDef):
                raise TypeError(f"only plain routes are versioned, got {route!r}")
            merged[(route.method, route.path)] = route
    return list(merged.values())


def build_version_app(version: int, middlewares: Sequence[Middleware] = ()) -> web.Application:
    """The sub-app of one API version."""
    app = web.Application(middlewares=list(middlewares))
    app[API_VERSION_KEY] = version
    app.add_routes(merged_routes((*COMMON_ROUTES, *API_VERSIONS[version])))
    return app


def mount_api_versions(app: web.Application, middlewares: Sequence[Middleware] = ()) -> None:
    """Mount /api/v<N> for every version."""
    apps: dict[int, web.Application] = {}
    for version in sorted(API_VERSIONS):
        sub = build_version_app(version, middlewares)
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
