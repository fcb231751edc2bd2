"""What aiohttp's dispatch costs per request in each shape: flat routes or sub-apps, middlewares or layers.

    taskset -c 0 .venv/bin/python -m bench.micro.routing [--requests 20000] [--repeat 7]

No sockets and no wrk: each shape's app handles a mocked request (`Application._handle`:
resolution, middlewares, handler, the JSON answer built but not written), and the best of
`--repeat` rounds (round-robin over the shapes) is printed in microseconds per request. The
handler is foo's answer without the database: the figures are the framework's and our share.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from server.middlewares.errors import request_id_and_errors
from server.routing.versions import api_version

PAYLOAD = {"hello": "world", "count": 1000, "version": 1}


async def foo_json(request: web.Request) -> web.Response:
    return web.json_response({"hello": "world", "count": 1000, "version": api_version(request)})


async def foo_bare(request: web.Request) -> web.Response:
    return web.json_response(PAYLOAD)


async def foo_orjson(request: web.Request) -> web.Response:
    return web.Response(body=orjson.dumps(PAYLOAD), content_type="application/json")


def subapps(handler: Any, middlewares: list[Any], versions: int = 2) -> web.Application:
    from server.keys import API_VERSION_KEY

    app = web.Application(middlewares=middlewares)
    app.router.add_get("/healthz", foo_bare)
    for version in range(1, versions + 1):
        sub = web.Application()
        sub[API_VERSION_KEY] = version
        for name in ("foo", "fail", "bar", "baz", "users", "users/{id}", "jobs/{key}"):
            sub.router.add_get(f"/{name}", handler if name == "foo" else foo_bare)
        app.add_subapp(f"/api/v{version}", sub)
    return app


def flat(handler: Any, middlewares: list[Any], versions: int = 2) -> web.Application:
    app = web.Application(middlewares=middlewares)
    app.router.add_get("/healthz", foo_bare)
    for version in range(1, versions + 1):
        for name in ("foo", "fail", "bar", "baz", "users", "users/{id}", "jobs/{key}"):
            app.router.add_get(f"/api/v{version}/{name}", handler if name == "foo" else foo_bare)
    return app


SHAPES: dict[str, Callable[[], web.Application]] = {
    "flat, no middleware (bare baseline)": lambda: flat(foo_bare, []),
    "flat, no middleware, orjson answer": lambda: flat(foo_orjson, []),
    "flat, request id + errors": lambda: flat(foo_bare, [request_id_and_errors]),
    "sub-apps, request id + errors": lambda: subapps(foo_json, [request_id_and_errors]),
    "sub-apps, no middleware": lambda: subapps(foo_json, []),
}


async def main(requests: int, repeat: int) -> None:
    apps = {name: build() for name, build in SHAPES.items()}
    for app in apps.values():
        app.freeze()
        await app.startup()
    # One request object per shape, handled again and again: a mocked request costs milliseconds.
    mocked = {name: make_mocked_request("GET", "/api/v1/foo", app=app) for name, app in apps.items()}
    best = dict.fromkeys(apps, float("inf"))
    for _ in range(repeat):  # round-robin over the shapes, so drift of the machine hits all alike
        for name, app in apps.items():
            handle: Callable[[web.Request], Awaitable[web.StreamResponse]] = app._handle
            request = mocked[name]
            started = time.perf_counter()
            for _ in range(requests):
                await handle(request)
            best[name] = min(best[name], (time.perf_counter() - started) / requests * 1e6)
    for name, us in best.items():
        print(f"{name:<40} {us:6.2f} us per request")
    encode = min(_time(lambda: json.dumps(PAYLOAD).encode(), 50_000) for _ in range(5))
    fast = min(_time(lambda: orjson.dumps(PAYLOAD), 50_000) for _ in range(5))
    print(f"{'json.dumps + encode / orjson.dumps':<40} {encode:6.2f} / {fast:.2f} us")


def _time(fn: Callable[[], object], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    import uvloop

    uvloop.run(main(args.requests, args.repeat))
