"""Per-route chains: a route pays only for the layers it declares; middlewares still see every request."""

from __future__ import annotations

import os
import re

from aiohttp import web
from support import assert_problem

from server.app import api_layers, create_app
from server.controllers.bar import post_bar
from server.controllers.fail import get_fail
from server.middlewares.request_id import new_request_id
from server.routing.chain import Route, chained
from server.routing.meta import meta, meta_for, registered
from server.routing.stamps import describe


def api_route(app: web.Application, path: str, method: str = "GET") -> web.AbstractRoute:
    return next(r for r in app.router.routes() if r.method == method and r.resource.canonical == path)


async def test_an_unstamped_route_is_registered_bare(config):
    app = create_app(config)
    # No layer applies to fail (it declares no schema, no cache): aiohttp calls the function itself.
    assert api_route(app, "/api/v1/fail").handler is get_fail
    # bar declares a body schema: its chain is composed, and still carries the stamp and the handler.
    chain = api_route(app, "/api/v1/bar", "POST").handler
    assert chain is not post_bar
    assert registered(chain) is post_bar
    assert meta(chain) is meta(post_bar)


def tagged(name: str):
    """A layer that adds its name to X-Layers on the routes whose `@describe(tags=...)` name it."""

    def layer(route: Route, handler):
        if route.meta.doc is None or name not in route.meta.doc.tags:
            return None

        async def tag(request: web.Request) -> web.StreamResponse:
            response = await handler(request)
            response.headers["X-Layers"] = f"{name},{response.headers.get('X-Layers', '')}".rstrip(",")
            return response

        return tag

    return layer


async def test_layers_wrap_only_the_routes_that_declare_them_in_order(aiohttp_client, config):
    seen: list[str] = []

    @web.middleware
    async def user_middleware(request: web.Request, handler):
        seen.append(request.path)
        return await handler(request)

    async def plain(request: web.Request) -> web.Response:
        assert meta_for(request) is None
        return web.json_response({"plain": True})

    @describe(tags=["outer", "inner"])
    async def fancy(request: web.Request) -> web.Response:
        assert meta_for(request) is meta(fancy)
        return web.json_response({"fancy": True})

    app = create_app(config)
    app.middlewares.append(user_middleware)
    sub = web.Application()
    sub.add_routes(chained([web.get("/plain", plain), web.get("/fancy", fancy)], [tagged("outer"), tagged("inner")]))
    app.add_subapp("/t", sub)
    client = await aiohttp_client(app)

    resp = await client.get("/t/plain")
    assert resp.status == 200 and "X-Layers" not in resp.headers
    resp = await client.get("/t/fancy")
    assert resp.status == 200
    assert resp.headers["X-Layers"] == "outer,inner"  # the first layer is the outermost
    # A middleware a user adds sees every request, routed or not, and the answer keeps the contract.
    resp = await client.get("/t/nope")
    assert_problem(resp, await resp.json(), 404)
    assert seen == ["/t/plain", "/t/fancy", "/t/nope"]


async def test_class_based_views_get_a_chain_per_method(sample_client):
    # The view's post is stamped (validated), its get is not: both answer as declared.
    resp = await sample_client.get("/sample/views/v1")
    assert resp.status == 200
    resp = await sample_client.post("/sample/views/v1", json={"text": ""})
    assert resp.status == 422
    assert (await resp.json())["hook"] == "instance"


def test_the_api_layers_are_cache_then_validation(config):
    assert [layer.__name__ for layer in api_layers(config)] == ["cache_layer", "validation"]


def test_generated_request_ids_are_unique_and_within_the_contract():
    ids = {new_request_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(re.fullmatch(r"[A-Za-z0-9._-]{1,128}", rid) for rid in ids)


def test_a_forked_process_draws_new_request_ids():
    read, write = os.pipe()
    parent = new_request_id()
    pid = os.fork()
    if pid == 0:  # the child: report one id and leave at once
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 256).decode()
    os.close(read)
    os.close(write)
    assert child.split("-")[0] != parent.split("-")[0]


async def test_api_versions_are_routes_of_the_root_app_with_their_version_bound(client):
    app = client.server.app
    assert not [r for r in app.router.resources() if isinstance(r, web.PrefixedSubAppResource) and "api" in r.canonical]
    assert (await (await client.get("/api/v2/foo")).json())["version"] == 2
    # Route names carry the version; url_for in a handler finds its own version's route.
    assert str(app.router["v2:user-detail"].url_for(user_id="7")) == "/api/v2/users/7"
