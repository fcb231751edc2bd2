"""What a client (or whoever can write to Redis) cannot do through the cache: flood it with
undeclared query strings, recompute at will with no-cache, make /baz enqueue a job per request,
read a write stale from another process (even when the invalidation times out), or choose what
a hit answers."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis
from support import json_ok, make_test_config, problem

from server.app import create_app
from server.cache.store import Entry
from server.keys import GENERATIONS_KEY, QUEUES_KEY
from server.tokens import create_token


def cache_config(tmp_path, redis_url, fake_cat_facts, **overrides):
    return make_test_config(
        database=tmp_path / "c.db",
        redis_url=redis_url,
        cat_facts={"url": fake_cat_facts.url, "timeout": 2.0},
        **overrides,
    )


# --- the key space ------------------------------------------------------------------------------


async def test_undeclared_query_parameters_of_a_cached_route_are_400(
    redis_url, fake_cat_facts, tmp_path, aiohttp_client, redis
):
    client = await aiohttp_client(create_app(cache_config(tmp_path, redis_url, fake_cat_facts)))
    for query in ("a=1", "a=1&b=2", "_=123456", "x=" + "y" * 1000):
        body = await problem(await client.get(f"/api/v1/baz?{query}"), 400)
        assert body["errors"][0]["detail"].endswith("is not a parameter of this route")
    body = await problem(await client.get("/api/v1/users?limit=5&utm=x"), 400)
    assert [e["parameter"] for e in body["errors"]] == ["utm"]
    assert fake_cat_facts.calls == 0
    assert await redis.keys("cache:*") == []  # nothing stored, nothing locked


# --- no-cache within a budget -------------------------------------------------------------------


async def test_no_cache_is_honoured_only_within_the_clients_budget(redis_url, fake_cat_facts, tmp_path, aiohttp_client):
    config = cache_config(tmp_path, redis_url, fake_cat_facts, cache={"refresh_budget": 2, "refresh_window": 60})
    first = await aiohttp_client(create_app(config))
    second = await aiohttp_client(create_app(config))  # another process: the budget is shared
    await json_ok(first, "/api/v1/baz")
    refresh = {"Cache-Control": "no-cache"}
    states = [
        (await json_ok(c, "/api/v1/baz", headers=refresh))[0].headers["X-Cache"] for c in (first, second, first, second)
    ]
    assert states == ["MISS", "MISS", "HIT", "HIT"]
    assert fake_cat_facts.calls == 3


async def test_a_zero_budget_never_recomputes(redis_url, fake_cat_facts, tmp_path, aiohttp_client):
    config = cache_config(tmp_path, redis_url, fake_cat_facts, cache={"refresh_budget": 0})
    client = await aiohttp_client(create_app(config))
    await json_ok(client, "/api/v1/baz")
    for headers in ({"Cache-Control": "no-cache"}, {"Pragma": "no-cache"}, {"Cache-Control": "max-age=0"}):
        resp, _ = await json_ok(client, "/api/v1/baz", headers=headers)
        assert resp.headers["X-Cache"] == "HIT"
    assert fake_cat_facts.calls == 1


# --- /baz enqueues at most one job per key per TTL -----------------------------------------------


@pytest.mark.parametrize("cache", [{"enabled": False}, {"refresh_budget": 100}])
async def test_baz_enqueues_one_job_per_key_per_ttl(redis_url, fake_cat_facts, tmp_path, aiohttp_client, cache):
    config = cache_config(tmp_path, redis_url, fake_cat_facts, cache=cache)
    first = await aiohttp_client(create_app(config))
    second = await aiohttp_client(create_app(config))
    refresh = {"Cache-Control": "no-cache"}
    # One after the other: concurrent refreshes of one key would be coalesced into one.
    answers = [await json_ok(c, "/api/v1/baz", headers=refresh) for c in (first, second) * 5]
    assert fake_cat_facts.calls == 10  # every request was answered by the handler...
    keys = {body["job"]["key"] for _, body in answers}
    assert len(keys) == 1  # ...but one job stands for them all
    queue = first.server.app[QUEUES_KEY].for_priority("default")
    assert await queue.count("queued") == 1
    # Each API version is its own key.
    _, v2 = await json_ok(first, "/api/v2/baz", headers=refresh)
    assert v2["job"]["key"] not in keys
    assert await queue.count("queued") == 2


# --- read-your-writes across processes ----------------------------------------------------------


async def two_processes(tmp_path, redis_url, fake_cat_facts, aiohttp_client, **overrides):
    """A writer (its client sends a users:write token) and a reader, as two web processes."""
    config = cache_config(tmp_path, redis_url, fake_cat_facts, **overrides)
    _, token = await create_token(config, name="writer", scopes=["users:write"])
    writer = await aiohttp_client(create_app(config), headers={"Authorization": f"Bearer {token}"})
    return writer, await aiohttp_client(create_app(config))


async def test_a_write_in_one_process_is_never_read_stale_from_the_other(
    redis_url, fake_cat_facts, tmp_path, aiohttp_client
):
    writer, reader = await two_processes(tmp_path, redis_url, fake_cat_facts, aiohttp_client)
    created = await (await writer.post("/api/v1/users", json={"name": "before"})).json()
    path = f"/api/v1/users/{created['id']}"
    await json_ok(reader, path)
    await json_ok(reader, "/api/v1/users")
    assert (await json_ok(reader, path))[0].headers["X-Cache"] == "HIT"
    for name in ("one", "two", "three"):
        assert (await writer.patch(path, json={"name": name})).status == 200
        resp, body = await json_ok(reader, path)
        assert body["name"] == name, resp.headers["X-Cache"]
        _, listed = await json_ok(reader, "/api/v1/users")
        assert [u["name"] for u in listed["items"]] == [name]
    assert (await writer.delete(path)).status == 204
    await problem(await reader.get(path), 404)
    assert (await json_ok(reader, "/api/v1/users"))[1]["items"] == []


async def test_an_invalidation_that_times_out_leaves_no_stale_read_anywhere(
    redis_url, fake_cat_facts, tmp_path, aiohttp_client, redis
):
    writer, reader = await two_processes(
        tmp_path,
        redis_url,
        fake_cat_facts,
        aiohttp_client,
        redis={"socket_timeout": 0.3},
        cache={"retry_interval": 0.2},
    )
    created = await (await writer.post("/api/v1/users", json={"name": "before"})).json()
    path = f"/api/v1/users/{created['id']}"
    await json_ok(reader, path)
    assert (await json_ok(reader, path))[0].headers["X-Cache"] == "HIT"
    # Redis stops taking writes (a failover, a stuck script): reads still work, so the old entry
    # is there for the reading. The writer's invalidation times out.
    await redis.execute_command("CLIENT", "PAUSE", 3000, "WRITE")
    try:
        resp = await writer.patch(path, json={"name": "after"})
        assert resp.status == 200  # the write itself needs no Redis
        for client in (reader, writer):
            resp, body = await json_ok(client, path)
            assert body["name"] == "after", resp.headers["X-Cache"]
    finally:
        await redis.execute_command("CLIENT", "UNPAUSE")
    await asyncio.sleep(0.3)  # past retry_interval: both use Redis again
    for client in (reader, writer, reader):
        resp, body = await json_ok(client, path)
        assert body["name"] == "after", resp.headers["X-Cache"]
    assert resp.headers["X-Cache"] == "HIT"


async def test_reads_sharing_round_trips_never_read_a_write_stale(redis_url, fake_cat_facts, tmp_path, aiohttp_client):
    # Concurrent requests of one process share their generation reads and entry lookups; a
    # request must still never get an answer from before a write that answered before it began.
    writer, reader = await two_processes(tmp_path, redis_url, fake_cat_facts, aiohttp_client)
    created = await (await writer.post("/api/v1/users", json={"name": "before"})).json()
    path = f"/api/v1/users/{created['id']}"
    await json_ok(reader, path)
    stop = asyncio.Event()

    async def keep_reading() -> None:  # keeps round trips under way while the writes land
        while not stop.is_set():
            await json_ok(reader, path)

    background = [asyncio.create_task(keep_reading()) for _ in range(8)]
    try:
        for round_ in range(10):
            name = f"name-{round_}"
            assert (await writer.patch(path, json={"name": name})).status == 200
            answers = await asyncio.gather(*(json_ok(reader, path) for _ in range(16)))
            assert {body["name"] for _, body in answers} == {name}
    finally:
        stop.set()
        await asyncio.gather(*background)
    reads, asked = reader.app[GENERATIONS_KEY].reads
    assert reads < asked  # they did share


async def test_concurrent_hits_of_two_namespaces_each_get_their_own_generation(
    redis_url, fake_cat_facts, tmp_path, aiohttp_client
):
    writer, reader = await two_processes(tmp_path, redis_url, fake_cat_facts, aiohttp_client)
    await json_ok(reader, "/api/v1/baz")
    for round_ in range(3):
        name = f"user-{round_}"
        assert (await writer.post("/api/v1/users", json={"name": name})).status == 201
        answers = await asyncio.gather(
            *(json_ok(reader, path) for path in ["/api/v1/users?limit=100", "/api/v1/baz"] * 8)
        )
        for (resp, body), path in zip(answers, ["users", "baz"] * 8, strict=True):
            if path == "users":
                assert body["items"][-1]["name"] == name, resp.headers["X-Cache"]
            else:
                assert resp.headers["X-Cache"] == "HIT" and body["fact"]
    assert fake_cat_facts.calls == 1


# --- a hit replays only what the route declared --------------------------------------------------


async def tamper(redis, namespace: str, change) -> None:
    (key,) = await redis.keys(f"cache:{{{namespace}}}:e:*")
    entry = Entry.decode(await redis.get(key))
    change(entry)
    await redis.set(key, entry.encode(), keepttl=True)


@pytest.mark.parametrize(
    "change",
    [
        lambda e: setattr(e, "content_type", "text/html; charset=utf-8"),
        lambda e: e.headers.update({"Set-Cookie": "session=attacker"}),
        lambda e: e.headers.update({"Location": "https://evil.example/"}),
        lambda e: e.headers.update({"Link": "</x>\r\nSet-Cookie: a=b"}),
        lambda e: setattr(e, "status", 302),
    ],
    ids=["content-type", "set-cookie", "location", "header-injection", "status"],
)
async def test_a_hit_replays_only_what_the_route_declared(
    redis_url, fake_cat_facts, tmp_path, aiohttp_client, redis, change
):
    client = await aiohttp_client(create_app(cache_config(tmp_path, redis_url, fake_cat_facts)))
    await json_ok(client, "/api/v1/baz")
    await tamper(redis, "baz", change)
    resp, body = await json_ok(client, "/api/v1/baz")
    assert resp.headers["X-Cache"] == "MISS"  # the tampered entry was not served
    assert resp.headers["Content-Type"].startswith("application/json")
    assert "Set-Cookie" not in resp.headers and "Location" not in resp.headers
    assert body["fact"] == fake_cat_facts.fact(2)
    assert (await json_ok(client, "/api/v1/baz"))[0].headers["X-Cache"] == "HIT"  # replaced by a good one


# --- a Redis of its own ---------------------------------------------------------------------------


async def test_the_cache_can_live_in_a_redis_of_its_own(
    redis_url, private_redis, fake_cat_facts, tmp_path, aiohttp_client, redis
):
    config = cache_config(tmp_path, redis_url, fake_cat_facts, cache={"redis_url": private_redis.url})
    client = await aiohttp_client(create_app(config))
    _, body = await json_ok(client, "/api/v1/baz")
    assert (await json_ok(client, "/api/v1/baz"))[0].headers["X-Cache"] == "HIT"
    cache_redis = Redis.from_url(private_redis.url)
    try:
        assert await cache_redis.keys("cache:*")
        assert not await cache_redis.keys("saq:*")
    finally:
        await cache_redis.aclose()
    assert not await redis.keys("cache:*")  # the queue's Redis holds the job, not the entry
    assert await client.server.app[QUEUES_KEY].find(body["job"]["key"]) is not None
