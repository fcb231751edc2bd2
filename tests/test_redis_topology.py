"""Redis past one box: through Sentinel, and the cache on a Redis of its own."""

from __future__ import annotations

import redis
from fixtures_jobs import app_with_enqueue_route, jobs_test_config, post_job, running_workers, wait_for_job
from support import make_test_config

from server.app import create_app
from testing.redis import RedisProcess, SentinelProcess


def keys(url: str, pattern: str) -> list[bytes]:
    client = redis.Redis.from_url(url)
    try:
        return sorted(client.keys(pattern))
    finally:
        client.close()


async def test_through_sentinel_the_app_and_the_workers_use_the_master(tmp_path, aiohttp_client, private_redis):
    with SentinelProcess(private_redis.port) as sentinel:
        # The URL's host and port are not used: the sentinel names the master.
        config = jobs_test_config(
            tmp_path,
            "redis://unused.invalid:1/0",
            redis={"sentinels": [sentinel.address], "master_name": sentinel.master_name},
        )
        client = await aiohttp_client(app_with_enqueue_route(config))
        assert (await (await client.get("/readyz")).json())["checks"]["redis"] == "ok"
        async with running_workers(config, names=["default"]):
            key = await post_job(client, "slow_job", seconds=0)
            body = await wait_for_job(client, key, {"complete"})
        assert body["result"] == {"slept": 0}
        assert keys(private_redis.url, "saq:job:default:*")  # the jobs are on the master
        first = await client.get("/api/v1/users")
        assert first.headers["X-Cache"] == "MISS"
        assert (await client.get("/api/v1/users")).headers["X-Cache"] == "HIT"


async def test_the_cache_can_live_on_a_redis_of_its_own(tmp_path, aiohttp_client, redis_url):
    with RedisProcess() as cache_redis:
        config = make_test_config(database=tmp_path / "t.db", redis_url=redis_url, cache={"redis_url": cache_redis.url})
        client = await aiohttp_client(create_app(config))
        assert (await client.get("/api/v1/users")).headers["X-Cache"] == "MISS"
        assert (await client.get("/api/v1/users")).headers["X-Cache"] == "HIT"
        assert keys(cache_redis.url, "cache:*")
        assert not keys(redis_url, "cache:*")
        cache_redis.stop()
        resp = await client.get("/api/v1/users")  # the cache's Redis gone: answered anyway
        assert resp.status == 200 and resp.headers["X-Cache"] == "BYPASS"
        assert (await (await client.get("/readyz")).json())["status"] == "ok"  # the queue's Redis is fine
