"""API tokens: the CLI, 401/403 answers, the default policy, the grant cache, revocation, job owners."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from fixtures_auth import bearer
from fixtures_jobs import clean_env, write_config
from support import make_test_config, problem

from server.app import create_app
from server.config import PROJECT_ROOT
from server.keys import GRANTS_KEY, REDIS_KEY, REVOCATIONS_KEY
from server.models import api_token
from server.models.api_token import TOKEN_PREFIX, generate_token, hash_token, well_formed
from server.models.backends import make_database
from server.tokens import revoke_token
from server.workers.enqueue import enqueue

USER = {"name": "someone"}


def run_cli(config_path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "server", "--config", str(config_path), "token", *args],
        cwd=PROJECT_ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


async def assert_401(resp, error: str | None = None) -> dict:
    body = await problem(resp, 401)
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="api"')
    if error:
        assert f'error="{error}"' in challenge
    else:
        assert "error=" not in challenge  # RFC 6750: no error code when no credentials were sent
    return body


# -- tokens themselves ---------------------------------------------------------------------------


def test_tokens_are_random_prefixed_and_checksummed():
    tokens = {generate_token() for _ in range(1000)}
    assert len(tokens) == 1000
    for token in list(tokens)[:50]:
        assert token.startswith(TOKEN_PREFIX) and len(token) == 54 and well_formed(token)
        assert token[len(TOKEN_PREFIX) :].isalnum()  # no "-" or "_": one double-click selects it
        assert len(hash_token(token)) == 64 and hash_token(token) != token
    token = next(iter(tokens))
    assert not well_formed(token[:-1] + ("A" if token[-1] != "A" else "B"))  # a typo
    assert not well_formed(token[:20] + ("x" if token[20] != "x" else "y") + token[21:])
    assert not well_formed(token.replace(TOKEN_PREFIX, "sk_live_"))
    assert not well_formed(token + "0") and not well_formed("")


# -- the command line ----------------------------------------------------------------------------


@pytest.mark.both_backends
async def test_cli_creates_lists_and_revokes_tokens(tmp_path, redis_url, config, aiohttp_client, backend):
    path = write_config(tmp_path / "config.yaml", config)
    created = run_cli(path, "create", "--name", "ci", "--scope", "users:write", "--expires", "30d")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip().splitlines()[-1]
    assert well_formed(token)  # the token alone on the last line

    listed = run_cli(path, "list")
    assert listed.returncode == 0, listed.stderr
    [line] = listed.stdout.splitlines()
    assert line.split("\t")[0] == "1" and "\tci\t" in line and "scopes=users:write" in line
    assert line.endswith("active") and "last_used=never" in line and "expires=20" in line
    assert token not in listed.stdout and token[len(TOKEN_PREFIX) :][:10] not in listed.stdout
    assert hash_token(token) not in listed.stdout

    # The database keeps the hash, never the token.
    if backend == "sqlite":
        files = [f for f in tmp_path.iterdir() if f.name.startswith("test.db")]
        assert files and not any(token.encode() in f.read_bytes() for f in files)

    client = await aiohttp_client(create_app(config))
    assert (await client.post("/api/v1/users", json=USER, headers=bearer(token))).status == 201

    revoked = run_cli(path, "revoke", "1")
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked" in revoked.stdout
    assert run_cli(path, "list").stdout.rstrip().endswith("revoked")
    await assert_401(await client.post("/api/v1/users", json=USER, headers=bearer(token)), "invalid_token")


def test_cli_refuses_unknown_scopes_bad_durations_and_unknown_ids(tmp_path, config):
    path = write_config(tmp_path / "config.yaml", config)
    typo = run_cli(path, "create", "--name", "x", "--scope", "user:write")
    assert typo.returncode == 2 and "unknown scope 'user:write'" in typo.stderr and "users:write" in typo.stderr
    bad = run_cli(path, "create", "--name", "x", "--scope", "users:write", "--expires", "soon")
    assert bad.returncode == 2 and "duration" in bad.stderr
    assert typo.stdout == bad.stdout == ""  # nothing made, nothing printed
    assert run_cli(path, "list").stdout == ""
    missing = run_cli(path, "revoke", "42")
    assert missing.returncode == 1 and "no token with id 42" in missing.stderr


# -- the answers ---------------------------------------------------------------------------------


@pytest.mark.both_backends
async def test_writes_need_a_token_with_the_scope(client, make_token):
    body = await assert_401(await client.post("/api/v1/users", json=USER))
    assert "bearer token" in body["detail"]
    readonly = await make_token(("jobs:read",), name="reader")
    resp = await client.post("/api/v1/users", json=USER, headers=bearer(readonly))
    body = await problem(resp, 403)
    assert "users:write" in body["detail"]
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="api", error="insufficient_scope", scope="users:write"'
    writer = await make_token(("users:write",))
    created = await client.post("/api/v1/users", json=USER, headers=bearer(writer))
    assert created.status == 201
    user = await created.json()
    for method, kwargs in (("PATCH", {"json": {"name": "x"}}), ("DELETE", {})):
        url = f"/api/v1/users/{user['id']}"
        await assert_401(await client.request(method, url, **kwargs))
        await problem(await client.request(method, url, headers=bearer(readonly), **kwargs), 403)
    assert (await client.patch(f"/api/v2/users/{user['id']}", json={"name": "y"}, headers=bearer(writer))).status == 200
    assert (await client.delete(f"/api/v2/users/{user['id']}", headers=bearer(writer))).status == 204
    # Nothing was written by the refused requests.
    assert (await (await client.get("/api/v1/users")).json())["total"] == 0


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Bearer nonsense",
        "Basic dXNlcjpwYXNz",
        "Token " + "a" * 20,
        f"Bearer {TOKEN_PREFIX}" + "a" * 49,  # our shape, wrong checksum
        "Bearer " + "x" * 5000,
        "",
    ],
)
async def test_malformed_tokens_are_401_on_every_api_route(client, header):
    for method, path in (
        ("POST", "/api/v1/users"),
        ("GET", "/api/v1/users"),
        ("GET", "/api/v2/foo"),
        ("POST", "/api/v1/bar"),
        ("GET", "/api/v1/fail"),
    ):
        await assert_401(
            await client.request(method, path, json=USER, headers={"Authorization": header}), "invalid_token"
        )


@pytest.mark.both_backends
async def test_unknown_revoked_and_expired_tokens_are_401(client, config, make_token):
    unknown = generate_token()
    await assert_401(await client.post("/api/v1/users", json=USER, headers=bearer(unknown)), "invalid_token")
    await assert_401(await client.get("/api/v1/foo", headers=bearer(unknown)), "invalid_token")

    expired = await make_token(expires_in=timedelta(seconds=-1))
    await assert_401(await client.post("/api/v1/users", json=USER, headers=bearer(expired)), "invalid_token")

    soon = await make_token(expires_in=timedelta(seconds=1))
    assert (await client.post("/api/v1/users", json=USER, headers=bearer(soon))).status == 201  # now cached
    await asyncio.sleep(1.1)
    await assert_401(await client.post("/api/v1/users", json=USER, headers=bearer(soon)), "invalid_token")

    revoked = await make_token()
    await revoke_token(config, 3)  # ids: expired 1, soon 2, this one 3
    await assert_401(await client.post("/api/v1/users", json=USER, headers=bearer(revoked)), "invalid_token")
    assert (await (await client.get("/api/v1/users")).json())["total"] == 1


async def test_reads_are_public_by_default_and_bar_is_a_read(client):
    for path in ("/api/v1/foo", "/api/v2/foo", "/api/v1/users", "/api/v2/users?limit=1"):
        assert (await client.get(path)).status == 200, path
    resp = await client.post("/api/v1/bar", json={"hello": "x", "world": [{"color": "red"}]})
    assert resp.status == 200


async def test_with_public_reads_off_every_api_route_needs_a_token(tmp_path, redis_url, aiohttp_client, make_token):
    config = make_test_config(database=tmp_path / "t.db", redis_url=redis_url, auth={"public_reads": False})
    client = await aiohttp_client(create_app(config))
    for method, path in (
        ("GET", "/api/v1/foo"),
        ("GET", "/api/v2/users"),
        ("POST", "/api/v1/bar"),
        ("GET", "/api/v1/jobs/anything"),
        ("GET", "/api/v1/fail"),
    ):
        await assert_401(await client.request(method, path, json={"hello": "x", "world": [{"color": "c"}]}))
    any_token = await make_token((), name="no scopes", config=config)
    assert (await client.get("/api/v1/foo", headers=bearer(any_token))).status == 200
    bar = await client.post("/api/v1/bar", json={"hello": "x", "world": [{"color": "c"}]}, headers=bearer(any_token))
    assert bar.status == 200
    await problem(await client.post("/api/v1/users", json=USER, headers=bearer(any_token)), 403)
    # The service pages stay open.
    for path in ("/healthz", "/openapi.json", "/docs", "/"):
        assert (await client.get(path)).status == 200, path


async def test_unknown_routes_stay_404_and_405_without_a_token(client):
    await problem(await client.get("/api/v1/nothing"), 404)
    await problem(await client.put("/api/v1/users/1", json=USER), 405)
    await problem(await client.get("/api/v1/users/abc"), 404)


# -- speed: the grant cache ----------------------------------------------------------------------


@pytest.mark.both_backends
async def test_a_known_token_costs_no_database_lookup(client, make_token, config):
    token = await make_token()
    grants = client.server.app[GRANTS_KEY]
    for _ in range(20):
        assert (await client.get("/api/v1/foo", headers=bearer(token))).status == 200
    assert grants.lookups == 1
    unknown = generate_token()
    for _ in range(5):
        await assert_401(await client.get("/api/v1/foo", headers=bearer(unknown)), "invalid_token")
    assert grants.lookups == 2  # unknown tokens are remembered too
    typo = unknown[:-1] + ("A" if unknown[-1] != "A" else "B")  # our shape, a wrong checksum
    for header in ("Bearer junk", f"Bearer {typo}", f"Bearer {TOKEN_PREFIX}{'é' * 49}"):
        for _ in range(3):
            await assert_401(await client.get("/api/v1/foo", headers={"Authorization": header}), "invalid_token")
    assert grants.lookups == 2  # a malformed token never reaches the database


async def test_last_used_is_recorded_at_most_once_an_interval(tmp_path, redis_url, aiohttp_client, make_token):
    config = make_test_config(database=tmp_path / "t.db", redis_url=redis_url, auth={"last_used_interval": 1.0})
    client = await aiohttp_client(create_app(config))
    token = await make_token(config=config)
    db = make_database(config.database, small=True)
    await db.open()

    async def last_used() -> str | None:
        return (await api_token.list_tokens(db))[0].last_used_at

    async def changed_from(before: str | None) -> str:
        deadline = time.monotonic() + 5
        while (now := await last_used()) == before:
            assert time.monotonic() < deadline, "last_used_at not written"
            await asyncio.sleep(0.05)
        assert now is not None
        return now

    try:
        assert await last_used() is None
        assert (await client.get("/api/v1/foo", headers=bearer(token))).status == 200
        first = await changed_from(None)  # by the background task, within an interval
        for _ in range(5):
            assert (await client.get("/api/v1/foo", headers=bearer(token))).status == 200
        await asyncio.sleep(0.6)
        assert await last_used() == first  # used again within the interval: not rewritten
        await asyncio.sleep(0.6)
        assert (await client.get("/api/v1/foo", headers=bearer(token))).status == 200
        assert await changed_from(first) > first  # the next interval's use is
    finally:
        await db.close()


@pytest.mark.both_backends
async def test_revocation_reaches_another_app_instance_at_once(config, redis_url, aiohttp_client, make_token):
    """Two app instances (like the two web processes) on one database and Redis: a revocation in
    one place is refused by the other within a moment, long before the cache's TTL (30 s)."""
    first = await aiohttp_client(create_app(config))
    second = await aiohttp_client(create_app(config))
    token = await make_token()
    for client in (first, second):
        assert (await client.get("/api/v1/foo", headers=bearer(token))).status == 200  # cached in each
        await asyncio.wait_for(client.server.app[REVOCATIONS_KEY].subscribed.wait(), 5)
    started = time.monotonic()
    _, listeners = await revoke_token(config, 1)  # what `token revoke 1` runs
    assert listeners == 2
    for client in (first, second):
        while (await client.get("/api/v1/foo", headers=bearer(token))).status != 401:
            assert time.monotonic() - started < 1.0, "revocation took longer than a second"
            await asyncio.sleep(0.01)
    assert time.monotonic() - started < 1.0
    assert config.auth.cache_ttl >= 30


async def test_without_the_message_a_revocation_takes_effect_within_the_ttl(
    tmp_path, redis_url, aiohttp_client, make_token
):
    config = make_test_config(database=tmp_path / "t.db", redis_url=redis_url, auth={"cache_ttl": 1.0})
    client = await aiohttp_client(create_app(config))
    token = await make_token(config=config)
    assert (await client.get("/api/v1/foo", headers=bearer(token))).status == 200
    db = make_database(config.database, small=True)
    await db.open()
    try:
        await api_token.revoke_token(db, 1)  # straight in the database: nobody is told
    finally:
        await db.close()
    assert (await client.get("/api/v1/foo", headers=bearer(token))).status == 200  # still cached
    await asyncio.sleep(1.05)
    await assert_401(await client.get("/api/v1/foo", headers=bearer(token)), "invalid_token")


async def test_a_lost_subscription_forgets_every_cached_token(config, aiohttp_client, make_token):
    client = await aiohttp_client(create_app(config))
    app = client.server.app
    token = await make_token()
    assert (await client.get("/api/v1/foo", headers=bearer(token))).status == 200
    await asyncio.wait_for(app[REVOCATIONS_KEY].subscribed.wait(), 5)
    lookups = app[GRANTS_KEY].lookups
    await app[REDIS_KEY].execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # Redis drops the subscriber
    deadline = time.monotonic() + 10
    while app[GRANTS_KEY].lookups == lookups:
        assert time.monotonic() < deadline, "the cache was not emptied after resubscribing"
        assert (await client.get("/api/v1/foo", headers=bearer(token))).status == 200
        await asyncio.sleep(0.05)


# -- jobs: owners and keys -----------------------------------------------------------------------


@pytest.fixture
async def baz_app(redis_url, fake_cat_facts, tmp_path, aiohttp_client):
    config = make_test_config(
        database=tmp_path / "t.db",
        redis_url=redis_url,
        cat_facts={"url": fake_cat_facts.url, "timeout": 2.0},
        cache={"enabled": False},  # each call a miss: each enqueues a job of its own
    )
    return config, await aiohttp_client(create_app(config))


async def test_a_job_is_shown_only_to_its_owner_or_a_jobs_read_token(baz_app, make_token):
    config, client = baz_app
    auditor = await make_token(("jobs:read",), name="auditor", config=config)
    alice = await make_token((), name="alice", config=config)
    bob = await make_token((), name="bob", config=config)

    alices = (await (await client.get("/api/v1/baz", headers=bearer(alice))).json())["job"]["url"]
    assert (await client.get(alices, headers=bearer(alice))).status == 200
    assert (await client.get(alices.replace("/v1/", "/v2/"), headers=bearer(alice))).status == 200
    assert (await client.get(alices, headers=bearer(auditor))).status == 200
    not_yours = await problem(await client.get(alices, headers=bearer(bob)), 404)
    unknown = await problem(await client.get("/api/v1/jobs/no-such-key", headers=bearer(bob)), 404)
    assert not_yours["detail"].replace(alices.rsplit("/", 1)[1], "K") == unknown["detail"].replace("no-such-key", "K")
    await problem(await client.get(alices), 404)  # anonymous

    anonymous = (await (await client.get("/api/v1/baz")).json())["job"]["url"]
    assert (await client.get(anonymous)).status == 200  # whoever holds the key
    assert (await client.get(anonymous, headers=bearer(bob))).status == 200


async def test_job_keys_are_unguessable(baz_app):
    _, client = baz_app
    baz_key = (await (await client.get("/api/v1/baz")).json())["job"]["key"]
    keys = [baz_key] + [(await enqueue(client.server.app, "slow_job", seconds=0)).key for _ in range(5)]
    assert len(set(keys)) == 6
    for key in keys:
        assert re.fullmatch(r"[A-Za-z0-9_-]{32}", key)  # 192 random bits, url-safe: not a uuid1
    assert len({key[:6] for key in keys}) == 6  # no shared time prefix, as uuid1 keys have
