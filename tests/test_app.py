"""The app factory, the version sub-apps, request ids, problem details and the pages."""

from __future__ import annotations

import logging
import re

import pytest
from aiohttp import web
from support import assert_problem, make_test_config

from server.app import create_app


async def test_create_app_opens_nothing(tmp_path):
    config = make_test_config(database=tmp_path / "sub" / "x.db", redis_url="redis://127.0.0.1:9/0")
    app = create_app(config)
    assert isinstance(app, web.Application)
    assert not (tmp_path / "sub").exists()  # the database opens in cleanup_ctx, not in the factory


async def test_foo_is_served_by_both_versions(client):
    for version in (1, 2):
        resp = await client.get(f"/api/v{version}/foo")
        assert resp.status == 200
        body = await resp.json()
        assert body["hello"] == "world"
        assert body["count"] == 0
        assert body["version"] == version
    v2 = await (await client.get("/api/v2/foo")).json()
    v1 = await (await client.get("/api/v1/foo")).json()
    assert set(v1) <= set(v2)  # v2 adds, never removes


async def test_unknown_version_is_a_404_problem(client):
    resp = await client.get("/api/v3/foo")
    assert_problem(resp, await resp.json(), 404)


async def test_unknown_path_is_a_404_problem(client):
    for path in ("/nope", "/api/v1/nope", "/api/v2/foo/bar"):
        resp = await client.get(path)
        assert_problem(resp, await resp.json(), 404)


async def test_wrong_method_is_a_405_problem_with_allow(client):
    resp = await client.delete("/api/v1/foo")
    body = await resp.json()
    assert_problem(resp, body, 405)
    assert "GET" in resp.headers["Allow"]


async def test_body_over_the_limit_is_413(tmp_path, redis_url, aiohttp_client):
    config = make_test_config(database=tmp_path / "t.db", redis_url=redis_url, server={"max_body_bytes": 1000})
    app = create_app(config)

    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=await request.read())

    app.router.add_post("/echo", echo)  # any handler that reads the body
    client = await aiohttp_client(app)
    small = await client.post("/echo", data=b"x" * 1000)
    assert small.status == 200
    resp = await client.post("/echo", data=b"x" * 1001)
    assert_problem(resp, await resp.json(), 413)


async def test_unhandled_error_is_500_without_traceback(client, caplog):
    with caplog.at_level(logging.ERROR):
        resp = await client.get("/api/v1/fail", headers={"X-Request-ID": "fail-req-1"})
        text = await resp.text()
    body = await resp.json()
    assert_problem(resp, body, 500)
    assert body["request_id"] == "fail-req-1"
    assert "Traceback" not in text and "KeyError" not in text and "missing-key" not in text
    # ... and the full traceback is in the log, tagged with the request id.
    records = [r for r in caplog.records if r.exc_info]
    assert records and records[0].exc_info[0] is KeyError
    assert records[0].request_id == "fail-req-1"


async def test_request_id_is_echoed_when_valid(client):
    for rid in ("abc", "A.b_c-1", "x" * 128):
        resp = await client.get("/healthz", headers={"X-Request-ID": rid})
        assert resp.headers["X-Request-ID"] == rid


async def test_request_id_is_generated_when_missing_or_bad(client):
    seen = set()
    for headers in (
        {},
        {"X-Request-ID": ""},
        {"X-Request-ID": "x" * 129},
        {"X-Request-ID": "a b"},
        {"X-Request-ID": "semi;colon"},
        {"X-Request-ID": "ünï"},
    ):
        resp = await client.get("/healthz", headers=headers)
        rid = resp.headers["X-Request-ID"]
        assert re.fullmatch(r"[A-Za-z0-9._-]{1,128}", rid)
        assert rid != headers.get("X-Request-ID")
        seen.add(rid)
    assert len(seen) == 6


async def test_request_id_on_errors_too(client):
    resp = await client.get("/nope", headers={"X-Request-ID": "r-404"})
    assert resp.headers["X-Request-ID"] == "r-404"
    assert (await resp.json())["request_id"] == "r-404"


async def test_index_lists_versions_and_routes(client):
    resp = await client.get("/")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/html")
    html = await resp.text()
    for text in ("/api/v1", "/api/v2", "/api/v1/foo", "/api/v2/foo", 'href="/docs"', "/internal/saq/"):
        assert text in html


async def test_healthz(client):
    resp = await client.get("/healthz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok"}


@pytest.mark.both_backends
async def test_readyz_ok(client):
    resp = await client.get("/readyz")
    assert resp.status == 200
    assert await resp.json() == {"status": "ok", "checks": {"database": "ok", "redis": "ok"}}


async def test_readyz_names_redis_when_it_is_stopped(private_redis, tmp_path, aiohttp_client):
    config = make_test_config(database=tmp_path / "t.db", redis_url=private_redis.url)
    client = await aiohttp_client(create_app(config))
    assert (await client.get("/readyz")).status == 200
    private_redis.stop()
    resp = await client.get("/readyz")
    assert resp.status == 503
    body = await resp.json()
    assert body["checks"]["redis"] != "ok"
    assert body["checks"]["database"] == "ok"
    assert body["failing"] == ["redis"]
    # Everything that does not need Redis keeps working.
    assert (await client.get("/api/v1/foo")).status == 200
    private_redis.start()
    assert (await client.get("/readyz")).status == 200
