"""GET /api/v1/baz: a cached cat fact from the (fake) Cat Facts upstream, its errors, the job seam."""

from __future__ import annotations

import asyncio
import time

import pytest
from support import assert_problem, make_test_config

from server.app import create_app
from server.errors import ServiceUnavailable
from server.keys import SLOW_JOB_ENQUEUER_KEY

UPSTREAM_TIMEOUT = 1.0


def baz_config(tmp_path, redis_url, cat_facts_url):
    return make_test_config(
        database=tmp_path / "t.db",
        redis_url=redis_url,
        cat_facts={"url": cat_facts_url, "timeout": UPSTREAM_TIMEOUT},
    )


@pytest.fixture
async def baz_client(redis_url, fake_cat_facts, tmp_path, aiohttp_client):
    # The Redis and the fake upstream come first so they outlive the app's cleanup.
    return await aiohttp_client(create_app(baz_config(tmp_path, redis_url, fake_cat_facts.url)))


async def test_baz_answers_a_fact_then_serves_it_from_the_cache(baz_client, fake_cat_facts):
    first = await baz_client.get("/api/v1/baz")
    assert first.status == 200
    body = await first.json()
    assert body["fact"] == fake_cat_facts.fact(1)
    key = body["job"]["key"]
    assert body["job"] == {"key": key, "url": f"/api/v1/jobs/{key}"}
    assert first.headers["X-Cache"] == "MISS"
    second = await baz_client.get("/api/v1/baz")
    assert second.headers["X-Cache"] == "HIT"
    assert await second.json() == body
    assert fake_cat_facts.calls == 1


@pytest.mark.parametrize(
    ("mode", "detail"),
    [
        ("error", "answered 500"),
        ("malformed", "malformed JSON"),
        ("missing", "without a fact"),
    ],
)
async def test_bad_upstream_answers_are_502(baz_client, fake_cat_facts, mode, detail):
    fake_cat_facts.mode = mode
    resp = await baz_client.get("/api/v1/baz")
    body = await resp.json()
    assert_problem(resp, body, 502)
    assert detail in body["detail"]
    # An error is never cached: the next request asks the upstream again and gets its fact.
    fake_cat_facts.mode = "ok"
    resp = await baz_client.get("/api/v1/baz")
    assert resp.status == 200
    assert resp.headers["X-Cache"] == "MISS"


async def test_slow_upstream_is_504_within_the_configured_timeout(baz_client, fake_cat_facts):
    fake_cat_facts.mode = "slow"  # would answer after 30 s
    started = time.monotonic()
    resp = await baz_client.get("/api/v1/baz")
    elapsed = time.monotonic() - started
    body = await resp.json()
    assert_problem(resp, body, 504)
    assert f"within {UPSTREAM_TIMEOUT:g} s" in body["detail"]
    assert elapsed < UPSTREAM_TIMEOUT + 5  # bounded by the timeout, far from the upstream's 30 s


async def test_refused_upstream_is_502(redis_url, refused_cat_facts_url, tmp_path, aiohttp_client):
    client = await aiohttp_client(create_app(baz_config(tmp_path, redis_url, refused_cat_facts_url)))
    started = time.monotonic()
    resp = await client.get("/api/v1/baz")
    elapsed = time.monotonic() - started
    body = await resp.json()
    assert_problem(resp, body, 502)
    assert "unreachable" in body["detail"]
    assert elapsed < UPSTREAM_TIMEOUT + 5


async def test_a_dropped_connection_is_retried_once(baz_client, fake_cat_facts):
    fake_cat_facts.mode = "drop_once"
    resp = await baz_client.get("/api/v1/baz")
    assert resp.status == 200
    assert (await resp.json())["fact"] == fake_cat_facts.fact(2)
    assert fake_cat_facts.calls == 2


async def test_the_job_seam_adds_the_job_on_a_miss_only(redis_url, fake_cat_facts, tmp_path, aiohttp_client):
    app = create_app(baz_config(tmp_path, redis_url, fake_cat_facts.url))
    enqueued = []

    async def enqueue(request):
        enqueued.append(request.path)
        return f"job-{len(enqueued)}"

    app[SLOW_JOB_ENQUEUER_KEY] = enqueue
    client = await aiohttp_client(app)
    for version in (1, 2):
        miss = await client.get(f"/api/v{version}/baz")
        body = await miss.json()
        assert miss.headers["X-Cache"] == "MISS"
        key = f"job-{version}"
        assert body["job"] == {"key": key, "url": f"/api/v{version}/jobs/{key}"}
        hit = await client.get(f"/api/v{version}/baz")
        assert hit.headers["X-Cache"] == "HIT"
        assert await hit.json() == body  # the job of the miss that filled the entry
    assert enqueued == ["/api/v1/baz", "/api/v2/baz"]


async def test_baz_is_503_with_retry_after_when_the_job_cannot_be_enqueued(
    redis_url, fake_cat_facts, tmp_path, aiohttp_client
):
    app = create_app(baz_config(tmp_path, redis_url, fake_cat_facts.url))

    async def enqueue(request):
        raise ServiceUnavailable("the job queue is unreachable", retry_after=7)

    app[SLOW_JOB_ENQUEUER_KEY] = enqueue
    client = await aiohttp_client(app)
    for _ in range(2):  # not cached either
        resp = await client.get("/api/v1/baz")
        body = await resp.json()
        assert_problem(resp, body, 503)
        assert resp.headers["Retry-After"] == "7"
        assert body["detail"] == "the job queue is unreachable"


async def test_baz_job_completes_and_is_readable_through_the_job_api(
    redis_url, fake_cat_facts, tmp_path, aiohttp_client
):
    config = make_test_config(
        database=tmp_path / "t.db",
        redis_url=redis_url,
        cat_facts={"url": fake_cat_facts.url, "timeout": UPSTREAM_TIMEOUT},
        queue={"embedded_worker": True},
    )
    client = await aiohttp_client(create_app(config))
    resp = await client.get("/api/v1/baz", headers={"X-Request-ID": "baz-job-1"})
    assert resp.status == 200
    job = (await resp.json())["job"]
    deadline = time.monotonic() + 30
    while True:
        status_resp = await client.get(job["url"])
        assert status_resp.status == 200
        state = await status_resp.json()
        if state["status"] == "complete":
            break
        assert state["status"] in ("queued", "active"), state
        assert time.monotonic() < deadline, state
        await asyncio.sleep(0.2)
    assert state["key"] == job["key"]
    assert state["function"] == "slow_job"
    assert state["attempts"] == 1
    assert state["error"] is None
    assert state["completed"] is not None


async def test_baz_answers_503_with_retry_after_when_it_cannot_enqueue(
    private_redis, fake_cat_facts, tmp_path, aiohttp_client
):
    client = await aiohttp_client(create_app(baz_config(tmp_path, private_redis.url, fake_cat_facts.url)))
    assert (await client.get("/api/v1/baz")).status == 200
    private_redis.stop()
    resp = await client.get("/api/v1/baz")  # Redis is down: no hit, the handler must enqueue
    body = await resp.json()
    assert_problem(resp, body, 503)
    assert int(resp.headers["Retry-After"]) > 0
