"""Which route tables each API version serves: the common tables plus the version's overrides."""

from __future__ import annotations

from aiohttp import web

from server.controllers import bar, baz, fail, foo, jobs, users
from server.controllers.v2 import foo as v2_foo

# Route tables every version serves, in order.
COMMON_ROUTES: tuple[web.RouteTableDef, ...] = (
    foo.routes,
    fail.routes,
    bar.routes,
    baz.routes,
    users.routes,
    jobs.routes,
)

# Per version, tables whose routes replace the common route of the same method and path.
API_VERSIONS: dict[int, tuple[web.RouteTableDef, ...]] = {
    1: (),
    2: (v2_foo.routes,),
}


def version_tables() -> dict[int, tuple[web.RouteTableDef, ...]]:
    """Each version's tables in merge order (for `routing.versions.mount_api_versions`)."""
    return {version: (*COMMON_ROUTES, *overrides) for version, overrides in API_VERSIONS.items()}
