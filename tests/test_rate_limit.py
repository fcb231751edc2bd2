"""Per-client rate limits in Redis: shared by app instances, 429 with headers, recovery, fail-open."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re

import pytest
import redis.asyncio as aioredis
from fixtures_auth import bearer
from support import make_test_config, problem

from server.app import create_app
from server.keys import RATE_LIMITER_KEY
from server.middlewares.rate_limit import client_address


def limited_config(tmp_path, redis_url, **limits):
    settings = {"enabled": True, "default": "5/m", "default_burst": 5, **limits}
    return make_test_config(database=tmp_path / "t.db", redis_url=redis_url, rate_limit=settings)


def remaining(resp) -> int:
    match = re.fullmatch(r'"default";r=(\d+);t=(\d+)', resp.headers["RateLimit"])
    assert match, resp.headers["RateLimit"]
    return int(match.group(1))


async def test_the_limit_is_shared_by_two_app_instances(tmp_path, redis_url, aiohttp_client):
    config = limited_config(tmp_path, redis_url)
    first = await aiohttp_client(create_app(config))
    second = await aiohttp_client(create_app(config))
    seen = []
    for n in range(5):
        resp = await (first if n % 2 else second).get("/api/v1/foo")
        assert resp.status == 200
        assert resp.headers["RateLimit-Policy"] == '"default";q=5;w=60'
        seen.append(remaining(resp))
    assert seen == [4, 3, 2, 1, 0]  # one allowance, whichever process answers
    for client in (first, second):
        resp = await client.get("/api/v2/users")  # every API route shares the default allowance
        body = await problem(resp, 429)
        assert "retry in" in body["detail"]
        assert 1 <= int(resp.headers["Retry-After"]) <= 12  # 5 a minute: one every 12 s
        assert resp.headers["RateLimit-Policy"] == '"default";q=5;w=60'
        assert remaining(resp) == 0
    # The service pages are not limited.
    assert (await first.get("/healthz")).status == 200 and "RateLimit" not in (await first.get("/healthz")).headers


async def test_a_client_may_send_again_after_the_window(tmp_path, redis_url, aiohttp_client):
    client = await aiohttp_client(create_app(limited_config(tmp_path, redis_url, default="1/s", default_burst=2)))
    assert [(await client.get("/api/v1/foo")).status for _ in range(2)] == [200, 200]
    refused = await client.get("/api/v1/foo")
    await problem(refused, 429)
    assert refused.headers["Retry-After"] == "1"
    assert refused.headers["RateLimit-Policy"] == '"default";q=2;w=2'
    await asyncio.sleep(1.05)
    again = await client.get("/api/v1/foo")
    assert again.status == 200 and remaining(again) == 0
    await problem(await client.get("/api/v1/foo"), 429)
    await asyncio.sleep(2.05)  # the whole bucket back
    assert remaining(await client.get("/api/v1/foo")) == 1


async def test_tokens_and_addresses_are_counted_apart(tmp_path, redis_url, aiohttp_client, make_token):
    config = limited_config(tmp_path, redis_url, default_burst=2)
    client = await aiohttp_client(create_app(config))
    alice = await make_token((), name="alice", config=config)
    bob = await make_token((), name="bob", config=config)
    for _ in range(2):
        assert (await client.get("/api/v1/foo")).status == 200
    await problem(await client.get("/api/v1/foo"), 429)
    # The address is spent; each token has its own allowance.
    for token in (alice, bob):
        assert [(await client.get("/api/v1/foo", headers=bearer(token))).status for _ in range(3)] == [200, 200, 429]
    # A request with a bad token counts against its address (limited before it is refused).
    await problem(await client.get("/api/v1/foo", headers={"Authorization": "Bearer junk"}), 429)


async def test_a_route_stamp_has_its_own_allowance(tmp_path, redis_url, aiohttp_client, fake_cat_facts):
    config = make_test_config(
        database=tmp_path / "t.db",
        redis_url=redis_url,
        cat_facts={"url": fake_cat_facts.url, "timeout": 2.0},
        rate_limit={"enabled": True, "default": "1/m", "default_burst": 1},
    )
    client = await aiohttp_client(create_app(config))
    assert (await client.get("/api/v1/foo")).status == 200
    await problem(await client.get("/api/v1/foo"), 429)
    baz = await client.get("/api/v1/baz")  # @rate_limit("10/s", burst=20)
    assert baz.status == 200
    assert baz.headers["RateLimit-Policy"] == '"get_baz";q=20;w=2'
    assert baz.headers["RateLimit"] == '"get_baz";r=19;t=1'


async def test_every_answer_of_a_limited_route_carries_the_headers(tmp_path, redis_url, aiohttp_client):
    client = await aiohttp_client(create_app(limited_config(tmp_path, redis_url, default_burst=10)))
    for resp in (
        await client.get("/api/v1/users/999"),  # 404
        await client.post("/api/v1/users", json={"name": "x"}),  # 401
        await client.get("/api/v1/users?limit=0"),  # 400
        await client.get("/api/v1/fail"),  # 500
    ):
        assert resp.status >= 400
        assert resp.headers["RateLimit-Policy"] == '"default";q=10;w=120', resp.url
        assert remaining(resp) < 10
    # A path no route serves is not a limited route: a plain 404.
    unknown = await client.get("/api/v1/no-such-route")
    assert unknown.status == 404 and "RateLimit" not in unknown.headers


async def test_x_forwarded_for_is_believed_only_from_trusted_proxies(tmp_path, redis_url, aiohttp_client):
    trusting = await aiohttp_client(
        create_app(
            limited_config(tmp_path, redis_url, default_burst=1, trusted_proxies=["127.0.0.1"], prefix="trusting")
        )
    )
    for address in ("203.0.113.1", "203.0.113.2"):
        resp = await trusting.get("/api/v1/foo", headers={"X-Forwarded-For": f"198.51.100.9, {address}"})
        assert resp.status == 200, address  # each address its own allowance
    await problem(await trusting.get("/api/v1/foo", headers={"X-Forwarded-For": "203.0.113.1"}), 429)

    plain = await aiohttp_client(create_app(limited_config(tmp_path, redis_url, default_burst=1, prefix="plain")))
    assert (await plain.get("/api/v1/foo", headers={"X-Forwarded-For": "203.0.113.1"})).status == 200
    # Without a trusted proxy the header is ignored: a new address in it buys nothing.
    await problem(await plain.get("/api/v1/foo", headers={"X-Forwarded-For": "203.0.113.2"}), 429)


@pytest.mark.parametrize(
    ("remote", "forwarded", "expected"),
    [
        ("203.0.113.5", ["1.2.3.4"], "203.0.113.5"),  # not from a proxy: the header is ignored
        ("10.0.0.2", ["1.2.3.4"], "1.2.3.4"),
        ("10.0.0.2", ["6.6.6.6, 1.2.3.4, 10.0.0.7"], "1.2.3.4"),  # rightmost not-trusted hop
        ("10.0.0.2", ["6.6.6.6", "1.2.3.4"], "1.2.3.4"),  # several header lines
        ("10.0.0.2", ["garbage, 1.2.3.4"], "1.2.3.4"),
        ("10.0.0.2", ["1.2.3.4, garbage"], "10.0.0.2"),  # the proxy's own line is not an address
        ("10.0.0.2", [], "10.0.0.2"),
        ("2001:db8:1:2:3:4:5:6", [], "2001:db8:1:2::/64"),
        ("10.0.0.2", ["2001:db8:1:2::9"], "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.1", [], "192.0.2.1"),
        (None, [], "unknown"),
    ],
)
def test_client_address(remote, forwarded, expected):
    proxies = [ipaddress.ip_network("10.0.0.0/8")]
    assert client_address(remote, forwarded, proxies) == expected


async def test_redis_down_fails_open_and_says_so_once(tmp_path, private_redis, aiohttp_client, caplog):
    config = limited_config(tmp_path, private_redis.url, default_burst=2, retry_interval=0.2)
    client = await aiohttp_client(create_app(config))
    assert (await client.get("/api/v1/foo")).headers["RateLimit"]
    private_redis.stop()
    with caplog.at_level(logging.INFO, logger="server.auth.limiter"):
        for n in range(6):
            resp = await client.get("/api/v1/foo")
            assert resp.status == 200  # unlimited, not an error
            assert "RateLimit" not in resp.headers
            if n == 3:
                await asyncio.sleep(0.3)  # past retry_interval: Redis is tried again, and fails
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "server.auth.limiter"]
        assert len(warnings) == 1 and "rate limiting off" in warnings[0].getMessage()
        assert client.server.app[RATE_LIMITER_KEY].failed_open >= 6
        private_redis.start()
        await asyncio.sleep(0.25)
        for _ in range(100):
            resp = await client.get("/api/v1/foo")
            if "RateLimit" in resp.headers:
                break
            await asyncio.sleep(0.05)
        assert resp.headers["RateLimit"]  # counting again (a fresh Redis: a fresh allowance)
    assert any("rate limiting on again" in r.getMessage() for r in caplog.records)


async def test_limits_live_in_redis_under_the_prefix(tmp_path, redis_url, aiohttp_client, make_token):
    config = limited_config(tmp_path, redis_url)
    client = await aiohttp_client(create_app(config))
    token = await make_token((), config=config)
    await client.get("/api/v1/foo")
    await client.get("/api/v1/foo", headers=bearer(token))
    redis = aioredis.from_url(redis_url)
    try:
        keys = sorted(k.decode() for k in await redis.keys("ratelimit:*"))
        assert keys == ["ratelimit:default:ip:127.0.0.1", "ratelimit:default:token:1"]
        assert 0 < await redis.ttl(keys[0]) <= 60  # gone once the allowance is whole again
    finally:
        await redis.aclose()


async def test_a_rate_finer_than_redis_clock_still_answers(tmp_path, redis_url, aiohttp_client, caplog):
    # 999999999/s: an interval below the script's time resolution (the key's expiry must stay >= 1 s).
    config = limited_config(tmp_path, redis_url, default="999999999/s", default_burst=999999999)
    client = await aiohttp_client(create_app(config))
    with caplog.at_level(logging.WARNING, logger="server.auth.limiter"):
        for _ in range(20):
            resp = await client.get("/api/v1/foo")
            assert resp.status == 200 and resp.headers["RateLimit"].startswith('"default";r=')
    assert not caplog.records


async def test_concurrent_requests_on_two_instances_get_exactly_the_burst(tmp_path, redis_url, aiohttp_client):
    """Requests arriving together are counted in one pipeline per round trip: still exact."""
    config = limited_config(tmp_path, redis_url, default="1/m", default_burst=30)
    first = await aiohttp_client(create_app(config))
    second = await aiohttp_client(create_app(config))
    responses = await asyncio.gather(*((first, second)[n % 2].get("/api/v1/foo") for n in range(80)))
    statuses = sorted(r.status for r in responses)
    assert statuses == [200] * 30 + [429] * 50
    assert sorted(remaining(r) for r in responses if r.status == 200) == list(range(30))
    limiters = [client.server.app[RATE_LIMITER_KEY] for client in (first, second)]
    assert sum(limiter.decided for limiter in limiters) == 80
    assert sum(limiter.round_trips for limiter in limiters) < 80  # batched
