"""The Redis response cache, seen from a client: hits, misses, keys, TTL, refresh, stampedes,
namespace invalidation and Redis outages. Runs on /api/v1/baz (with the fake Cat Facts upstream)
and on a few routes of a test sub-app that carries the same middlewares as the API versions."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections import Counter

import pytest
from aiohttp import web
from support import json_ok, make_test_config

from server.app import api_layers, create_app
from server.errors import NotFound
from server.keys import API_VERSION_KEY, REDIS_KEY, SLOW_JOB_ENQUEUER_KEY
from server.middlewares.cache import invalidate_namespace
from server.routing.chain import chained
from server.routing.stamps import cached, query_schema
from server.tokens import create_token

CALLS = web.AppKey("calls", Counter)
ITEMS = web.AppKey("items", list)
# Set to an asyncio.Event to hold GET /t/items after it has read the items, until the event is set.
GATE = web.AppKey("gate", dict)

routes = web.RouteTableDef()


def count(request: web.Request, name: str) -> int:
    request.app[CALLS][name] += 1
    return request.app[CALLS][name]


@routes.get("/items")
@cached(namespace="items")
async def list_items(request: web.Request) -> web.Response:
    count(request, "items")
    items = list(request.app[ITEMS])
    gate = request.app[GATE].pop("event", None)
    if gate is not None:
        await gate.wait()
    return web.json_response({"items": items})


@routes.post("/items")
async def create_item(request: web.Request) -> web.Response:
    name = (await request.json())["name"]
    request.app[ITEMS].append(name)
    await invalidate_namespace(request, "items")  # after the write, before answering
    return web.json_response({"name": name}, status=201)


PARAMS_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "a": {"type": "string"},
        "b": {"type": "string"},
        "x": {"type": "array", "items": {"type": "string"}},
    },
}


@routes.get("/params")
@cached(namespace="params")
@query_schema(PARAMS_SCHEMA)
async def get_params(request: web.Request) -> web.Response:
    return web.json_response({"query": request.query_string, "n": count(request, "params")})


@routes.get("/lang")
@cached(vary_query=("q",), vary_headers=("Accept-Language",), namespace="lang", store_headers=("X-Kept",))
async def get_lang(request: web.Request) -> web.Response:
    n = count(request, "lang")
    body = {"lang": request.headers.get("Accept-Language"), "q": request.query.get("q"), "n": n}
    return web.json_response(body, headers={"X-Kept": f"kept-{n}", "X-Dropped": "dropped"})


@routes.get("/short")
@cached(ttl=1, namespace="short")
async def get_short(request: web.Request) -> web.Response:
    return web.json_response({"n": count(request, "short")})


@routes.get("/teapot")
@cached(namespace="misc")
async def get_teapot(request: web.Request) -> web.Response:
    return web.json_response({"n": count(request, "teapot")}, status=418)


@routes.get("/cookie")
@cached(namespace="misc")
async def get_cookie(request: web.Request) -> web.Response:
    response = web.json_response({"n": count(request, "cookie")})
    response.set_cookie("session", "secret")
    return response


@routes.get("/missing")
@cached(namespace="misc")
async def get_missing(request: web.Request) -> web.Response:
    count(request, "missing")
    raise NotFound("nothing here")


async def no_job(request: web.Request) -> None:
    return None


@pytest.fixture
def make_client(fake_cat_facts, tmp_path, aiohttp_client):
    """A client of the real app plus a /t test sub-app whose routes have the API's layers."""

    async def make(redis_url: str, **overrides):
        config = make_test_config(
            database=tmp_path / "t.db",
            redis_url=redis_url,
            cat_facts={"url": fake_cat_facts.url, "timeout": 2.0},
            **overrides,
        )
        app = create_app(config)
        # These tests are about the cache: baz's job is swapped for none, so a stopped Redis
        # shows the cache's fail-open (baz's own 503 for a failed enqueue is in test_baz.py).
        app[SLOW_JOB_ENQUEUER_KEY] = no_job
        sub = web.Application()
        sub[API_VERSION_KEY] = 1
        sub[CALLS] = Counter()
        sub[ITEMS] = []
        sub[GATE] = {}
        sub.add_routes(chained(routes, api_layers(config)))
        app.add_subapp("/t", sub)
        # /t has the API's layers: its POST (a write) needs a token, any token.
        _, token = await create_token(config, name="cache-tests", scopes=())
        client = await aiohttp_client(app, headers={"Authorization": f"Bearer {token}"})
        return client, sub

    return make


async def test_miss_then_hit_with_age_and_max_age(redis_url, make_client, fake_cat_facts):
    client, _sub = await make_client(redis_url, cache={"default_ttl": 30})
    miss, body = await json_ok(client, "/api/v1/baz")
    assert miss.headers["X-Cache"] == "MISS"
    assert miss.headers["Cache-Control"] == "max-age=30"
    assert "Age" not in miss.headers
    hit, again = await json_ok(client, "/api/v1/baz")
    assert again == body
    assert hit.headers["X-Cache"] == "HIT"
    assert hit.headers["Content-Type"] == miss.headers["Content-Type"]
    age = int(hit.headers["Age"])
    assert 0 <= age <= 30
    max_age = int(hit.headers["Cache-Control"].removeprefix("max-age="))
    assert 0 <= max_age <= 30 and age + max_age in (29, 30)
    assert hit.headers["X-Request-ID"] != miss.headers["X-Request-ID"]  # each answer its own id
    assert fake_cat_facts.calls == 1


async def test_head_shares_the_get_entry(redis_url, make_client, fake_cat_facts):
    client, _sub = await make_client(redis_url)
    await json_ok(client, "/api/v1/baz")
    head = await client.head("/api/v1/baz")
    assert head.status == 200
    assert head.headers["X-Cache"] == "HIT"
    assert await head.read() == b""
    assert fake_cat_facts.calls == 1


async def test_key_covers_version_and_sorted_query_string(redis_url, make_client, fake_cat_facts):
    # The route's declared parameters (its query schema) make the key.
    client, sub = await make_client(redis_url)
    _, first = await json_ok(client, "/t/params?a=1&b=2")
    resp, same = await json_ok(client, "/t/params?b=2&a=1")
    assert resp.headers["X-Cache"] == "HIT" and same["n"] == first["n"]
    for other in ("/t/params?a=1&b=3", "/t/params", "/t/params?a=1"):
        resp, body = await json_ok(client, other)
        assert resp.headers["X-Cache"] == "MISS", other
        assert body != first
    # The order of a repeated parameter's values is kept: it can change the answer.
    await json_ok(client, "/t/params?x=1&x=2")
    resp, _ = await json_ok(client, "/t/params?x=2&x=1")
    assert resp.headers["X-Cache"] == "MISS"
    assert sub[CALLS]["params"] == 6
    # Every API version has its own entries.
    _, v1 = await json_ok(client, "/api/v1/baz")
    resp, v2 = await json_ok(client, "/api/v2/baz")
    assert resp.headers["X-Cache"] == "MISS" and v2 != v1
    assert fake_cat_facts.calls == 2


async def test_declared_headers_and_query_parameters_vary_the_key(redis_url, make_client):
    client, sub = await make_client(redis_url)
    calls = sub[CALLS]
    en = {"Accept-Language": "en"}
    miss, body = await json_ok(client, "/t/lang?q=cats", headers=en)
    assert miss.headers["X-Cache"] == "MISS"
    assert miss.headers["Vary"] == "Accept-Language"
    hit, again = await json_ok(client, "/t/lang?q=cats&utm_source=x", headers=en)  # undeclared: ignored
    assert hit.headers["X-Cache"] == "HIT" and again == body
    assert hit.headers["Vary"] == "Accept-Language"
    assert hit.headers["X-Kept"] == "kept-1"  # a declared answer header is stored...
    assert "X-Dropped" not in hit.headers  # ...others are not
    for query, headers in (("q=dogs", en), ("q=cats", {"Accept-Language": "fr"}), ("q=cats", {})):
        resp, other = await json_ok(client, f"/t/lang?{query}", headers=headers)
        assert resp.headers["X-Cache"] == "MISS", (query, headers)
        assert other["n"] != body["n"]
    assert calls["lang"] == 4


async def test_entries_expire_with_their_ttl(redis_url, make_client, redis):
    client, sub = await make_client(redis_url)
    calls = sub[CALLS]
    miss, first = await json_ok(client, "/t/short")
    assert miss.headers["Cache-Control"] == "max-age=1"
    keys = [k for k in await redis.keys("cache:{short}:e:*")]
    assert len(keys) == 1
    assert 0 < await redis.pttl(keys[0]) <= 1000
    hit, _ = await json_ok(client, "/t/short")
    assert hit.headers["X-Cache"] == "HIT"
    deadline = time.monotonic() + 10
    while True:
        resp, body = await json_ok(client, "/t/short")
        if resp.headers["X-Cache"] == "MISS":
            break
        assert time.monotonic() < deadline, "the 1 s entry never expired"
        await asyncio.sleep(0.1)
    assert body["n"] == first["n"] + 1
    assert calls["short"] == 2


async def test_no_cache_refreshes_the_entry(redis_url, make_client, fake_cat_facts):
    client, _sub = await make_client(redis_url)
    _, first = await json_ok(client, "/api/v1/baz")
    resp, _ = await json_ok(client, "/api/v1/baz")
    assert resp.headers["X-Cache"] == "HIT"
    for headers in ({"Cache-Control": "no-cache"}, {"Cache-Control": "max-age=0"}, {"Pragma": "no-cache"}):
        resp, fresh = await json_ok(client, "/api/v1/baz", headers=headers)
        assert resp.headers["X-Cache"] == "MISS", headers
        assert fresh != first
        resp, cached_now = await json_ok(client, "/api/v1/baz")
        assert resp.headers["X-Cache"] == "HIT"
        assert cached_now == fresh  # the refreshed answer replaced the entry
        first = fresh
    assert fake_cat_facts.calls == 4


async def test_concurrent_misses_of_one_key_compute_once(redis_url, make_client, fake_cat_facts):
    # Generous wait: on a busy machine the waiters must not give up and compute themselves.
    client, _sub = await make_client(redis_url, cache={"wait_timeout": 30.0, "lock_timeout": 30.0})
    fake_cat_facts.delay = 0.3
    responses = await asyncio.gather(*(client.get("/api/v1/baz") for _ in range(50)))
    assert [r.status for r in responses] == [200] * 50
    bodies = [await r.json() for r in responses]
    assert all(body == bodies[0] for body in bodies)
    assert fake_cat_facts.calls == 1
    states = Counter(r.headers["X-Cache"] for r in responses)
    assert states == {"MISS": 1, "HIT": 49}


async def test_invalidating_a_namespace_of_the_real_app(redis_url, make_client, fake_cat_facts):
    client, _sub = await make_client(redis_url)
    _, v1 = await json_ok(client, "/api/v1/baz")
    _, v2 = await json_ok(client, "/api/v2/baz")
    assert (await json_ok(client, "/api/v1/baz"))[0].headers["X-Cache"] == "HIT"
    assert await invalidate_namespace(client.app, "baz") is True
    for path, old in (("/api/v1/baz", v1), ("/api/v2/baz", v2)):  # every version at once
        resp, body = await json_ok(client, path)
        assert resp.headers["X-Cache"] == "MISS"
        assert body != old
    # Through a bare Redis client too (a worker, a script), with the default prefix.
    assert await invalidate_namespace(client.app[REDIS_KEY], "baz") is True
    assert (await json_ok(client, "/api/v1/baz"))[0].headers["X-Cache"] == "MISS"
    # Another namespace is left alone.
    await invalidate_namespace(client.app, "users")
    assert (await json_ok(client, "/api/v1/baz"))[0].headers["X-Cache"] == "HIT"
    assert fake_cat_facts.calls == 5


async def test_a_client_never_reads_its_own_write_stale(redis_url, make_client):
    client, sub = await make_client(redis_url)
    calls = sub[CALLS]
    assert (await json_ok(client, "/t/items"))[1] == {"items": []}
    assert (await json_ok(client, "/t/items"))[0].headers["X-Cache"] == "HIT"
    for name in ("a", "b"):
        created = await client.post("/t/items", json={"name": name})
        assert created.status == 201
        resp, body = await json_ok(client, "/t/items")
        assert resp.headers["X-Cache"] == "MISS"
        assert body["items"][-1] == name
    assert (await json_ok(client, "/t/items"))[1] == {"items": ["a", "b"]}
    assert calls["items"] == 3


async def test_an_answer_computed_across_an_invalidation_is_not_stored(redis_url, make_client):
    client, sub = await make_client(redis_url)
    gate = sub[GATE]["event"] = asyncio.Event()
    slow_read = asyncio.create_task(client.get("/t/items"))  # reads [] then waits at the gate
    while "event" in sub[GATE]:
        await asyncio.sleep(0.01)
    created = await client.post("/t/items", json={"name": "a"})  # commits and invalidates meanwhile
    assert created.status == 201
    gate.set()
    resp = await slow_read
    assert resp.headers["X-Cache"] == "MISS"
    assert await resp.json() == {"items": []}  # concurrent with the write: may be old...
    resp, body = await json_ok(client, "/t/items")
    assert resp.headers["X-Cache"] == "MISS"  # ...but it was not stored over the write
    assert body == {"items": ["a"]}


async def test_only_plain_200_answers_are_stored(redis_url, make_client, redis):
    client, sub = await make_client(redis_url)
    calls = sub[CALLS]
    for _ in range(2):
        teapot = await client.get("/t/teapot")
        assert teapot.status == 418
        assert teapot.headers["X-Cache"] == "MISS"
        assert "Cache-Control" not in teapot.headers
        cookie, _ = await json_ok(client, "/t/cookie")
        assert cookie.headers["X-Cache"] == "MISS"
        missing = await client.get("/t/missing")
        assert missing.status == 404
        assert missing.headers["Content-Type"].startswith("application/problem+json")
    assert calls == {"teapot": 2, "cookie": 2, "missing": 2}
    assert await redis.keys("cache:*:e:*") == []
    assert await redis.keys("cache:*:lock:*") == []  # every lock released, errors included


async def test_disabled_cache_bypasses_redis(redis_url, make_client, redis, fake_cat_facts):
    client, _sub = await make_client(redis_url, cache={"enabled": False})
    for n in (1, 2):
        resp, body = await json_ok(client, "/api/v1/baz")
        assert resp.headers["X-Cache"] == "BYPASS"
        assert body["fact"] == fake_cat_facts.fact(n)
    assert await redis.keys("*") == []


def warnings_of(caplog):
    return [r for r in caplog.records if r.name == "server.cache.store" and r.levelno == logging.WARNING]


async def wait_for_state(client, path, state, deadline_s=10.0):
    deadline = time.monotonic() + deadline_s
    while True:
        resp, body = await json_ok(client, path)
        if resp.headers["X-Cache"] == state:
            return resp, body
        assert time.monotonic() < deadline, f"{path} never answered X-Cache: {state}"
        await asyncio.sleep(0.1)


async def test_redis_stopped_mid_test_bypasses_then_caching_resumes(private_redis, make_client, fake_cat_facts, caplog):
    client, _sub = await make_client(private_redis.url, cache={"retry_interval": 0.2})
    await json_ok(client, "/api/v1/baz")
    assert (await json_ok(client, "/api/v1/baz"))[0].headers["X-Cache"] == "HIT"
    private_redis.stop()
    with caplog.at_level(logging.INFO, logger="server.cache.store"):
        for n in range(2, 8):
            resp, body = await json_ok(client, "/api/v1/baz")
            assert resp.headers["X-Cache"] == "BYPASS"
            assert "Cache-Control" not in resp.headers
            assert body["fact"] == fake_cat_facts.fact(n)  # the handler answered
            if n == 4:
                await asyncio.sleep(0.3)  # past retry_interval: Redis is tried again, and fails
        assert len(warnings_of(caplog)) == 1  # once per outage, not per request
        private_redis.start()
        await wait_for_state(client, "/api/v1/baz", "MISS")
        assert (await json_ok(client, "/api/v1/baz"))[0].headers["X-Cache"] == "HIT"
    assert any("available again" in r.getMessage() for r in caplog.records)
    assert len(warnings_of(caplog)) == 1


async def test_a_hung_redis_is_bounded_by_the_socket_timeout(private_redis, make_client, fake_cat_facts):
    client, _sub = await make_client(private_redis.url, redis={"socket_timeout": 0.3}, cache={"retry_interval": 0.2})
    await json_ok(client, "/api/v1/baz")
    os.kill(private_redis.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        resp, _ = await json_ok(client, "/api/v1/baz")
        assert resp.headers["X-Cache"] == "BYPASS"
        assert time.monotonic() - started < 5  # the 0.3 s socket timeout, not a hang
        # Within retry_interval the cache does not wait on Redis again.
        resp, _ = await json_ok(client, "/api/v1/baz")
        assert resp.headers["X-Cache"] == "BYPASS"
    finally:
        os.kill(private_redis.proc.pid, signal.SIGCONT)
    await wait_for_state(client, "/api/v1/baz", "HIT")


async def test_an_invalidation_during_an_outage_is_applied_before_the_next_read(private_redis, make_client):
    client, _sub = await make_client(private_redis.url, redis={"socket_timeout": 0.3}, cache={"retry_interval": 1.0})
    await json_ok(client, "/t/items")
    assert (await json_ok(client, "/t/items"))[0].headers["X-Cache"] == "HIT"
    os.kill(private_redis.proc.pid, signal.SIGSTOP)  # the entries survive the outage
    try:
        resp, _ = await json_ok(client, "/t/items")  # times out: the outage starts
        assert resp.headers["X-Cache"] == "BYPASS"
        # Within retry_interval the write does not reach Redis: its invalidation is deferred.
        created = await client.post("/t/items", json={"name": "during-outage"})
        assert created.status == 201
    finally:
        os.kill(private_redis.proc.pid, signal.SIGCONT)
    await asyncio.sleep(1.1)  # past retry_interval
    resp, body = await json_ok(client, "/t/items")
    assert resp.headers["X-Cache"] == "MISS"
    assert body == {"items": ["during-outage"]}


async def test_a_waiting_miss_computes_itself_after_wait_timeout(redis_url, make_client):
    client, sub = await make_client(redis_url, cache={"wait_timeout": 0.2, "lock_timeout": 30.0})
    gate = sub[GATE]["event"] = asyncio.Event()
    holder = asyncio.create_task(client.get("/t/items"))  # takes the lock, then waits at the gate
    while "event" in sub[GATE]:
        await asyncio.sleep(0.01)
    # Does not wait for the holder forever (the deadline only turns a hang into a failure).
    resp, body = await asyncio.wait_for(json_ok(client, "/t/items"), 20)
    assert resp.headers["X-Cache"] == "MISS"
    assert body == {"items": []}
    gate.set()
    assert (await holder).status == 200
    assert sub[CALLS]["items"] == 2


@pytest.mark.parametrize(
    "kwargs",
    [{"ttl": 0}, {"ttl": 1.5}, {"namespace": "a:b"}, {"namespace": "{x}"}, {"namespace": ""}, {"vary_query": "q"}],
)
def test_bad_declarations_fail_when_decorating(kwargs):
    with pytest.raises(ValueError):
        cached(**kwargs)
