"""A locked, busy, full or read-only database answers 503 problem details with Retry-After: not a
500, not a Honeybadger notice; the outage is logged once; writers never queue without bound."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3

import pytest
from support import make_test_config, problem

from server.app import create_app
from server.keys import DB_KEY, STORAGE_FAULTS_KEY


def with_database(config, **changes):
    return dataclasses.replace(config, database=dataclasses.replace(config.database, **changes))


@pytest.fixture
def locked_config(tmp_path, redis_url, honeybadger_collector):
    config = make_test_config(
        database=tmp_path / "faults.db",
        redis_url=redis_url,
        honeybadger=honeybadger_collector.honeybadger_config(),
    )
    return with_database(config, busy_timeout_ms=300, max_waiting_writers=2)


@pytest.fixture
async def faulty(redis_url, honeybadger_collector, aiohttp_client, locked_config):
    return await aiohttp_client(create_app(locked_config))


def hold_write_lock(path: str) -> sqlite3.Connection:
    """Another process's writer: BEGIN IMMEDIATE and keep it open."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("BEGIN IMMEDIATE")
    return conn


async def assert_unavailable(resp) -> dict:
    body = await problem(resp, 503)
    assert int(resp.headers["Retry-After"]) >= 1
    assert "Traceback" not in body["detail"] and "sqlite" not in body["detail"].lower()
    return body


async def test_a_locked_database_is_503_not_500_and_not_reported(faulty, locked_config, honeybadger_collector, caplog):
    caplog.set_level(logging.INFO)
    other = hold_write_lock(locked_config.database.path)
    try:
        for _ in range(3):
            await assert_unavailable(await faulty.post("/api/v1/users", json={"name": "x"}))
    finally:
        other.rollback()
        other.close()
    resp = await faulty.post("/api/v1/users", json={"name": "after"})
    assert resp.status == 201  # nothing is lost once the lock is gone
    # One warning for the outage, no traceback, no notice.
    warnings = [r for r in caplog.records if "storage unavailable" in r.getMessage()]
    assert len(warnings) == 1
    assert not [r for r in caplog.records if r.exc_info]
    assert faulty.server.app[STORAGE_FAULTS_KEY].counts["busy"] == 3
    await (await faulty.get("/api/v1/fail")).read()  # a real bug is still reported...
    notices = await honeybadger_collector.wait_for(1)
    assert [n["error"]["class"] for n in notices] == ["KeyError"]  # ...and only it


async def test_a_full_database_is_503(faulty):
    writer = faulty.server.app[DB_KEY].writer
    pages = (await (await writer.execute("PRAGMA page_count")).fetchone())[0]
    await writer.execute(f"PRAGMA max_page_count = {pages}")
    try:
        resp = None
        for i in range(200):
            resp = await faulty.post("/api/v1/users", json={"name": f"user {i} " + "x" * 100})
            if resp.status != 201:
                break
        await assert_unavailable(resp)
    finally:
        await writer.execute("PRAGMA max_page_count = 1073741823")
    assert (await faulty.post("/api/v1/users", json={"name": "room again"})).status == 201


async def test_a_read_only_database_is_503_and_reads_still_work(faulty):
    assert (await faulty.post("/api/v1/users", json={"name": "before"})).status == 201
    writer = faulty.server.app[DB_KEY].writer
    await writer.execute("PRAGMA query_only = 1")
    try:
        await assert_unavailable(await faulty.post("/api/v1/users", json={"name": "x"}))
        await assert_unavailable(await faulty.patch("/api/v1/users/1", json={"name": "y"}))
        resp = await faulty.get("/api/v1/users/1")
        assert resp.status == 200 and (await resp.json())["name"] == "before"
    finally:
        await writer.execute("PRAGMA query_only = 0")


async def test_writers_beyond_the_bound_get_503_at_once(tmp_path, redis_url, aiohttp_client):
    # A long busy_timeout: a writer that queued would wait for the lock to go.
    config = make_test_config(database=tmp_path / "bound.db", redis_url=redis_url)
    config = with_database(config, busy_timeout_ms=60_000, max_waiting_writers=2)
    client = await aiohttp_client(create_app(config))
    other = hold_write_lock(config.database.path)
    try:
        # One write holds our write lock, blocked in SQLite; two more wait for it.
        waiting = [asyncio.create_task(client.post("/api/v1/users", json={"name": f"w{i}"})) for i in range(3)]
        db = client.server.app[DB_KEY]
        while db._waiting_writers < 2:
            await asyncio.sleep(0.01)
        # The next ones are refused while the lock is still held (they would otherwise hang).
        for _ in range(3):
            resp = await asyncio.wait_for(client.post("/api/v1/users", json={"name": "late"}), 30)
            await assert_unavailable(resp)
        assert not any(task.done() for task in waiting)
    finally:
        other.rollback()
        other.close()
    statuses = [(await asyncio.wait_for(task, 30)).status for task in waiting]
    assert statuses == [201, 201, 201]  # the queued writes all went through once it cleared
    resp = await client.get("/api/v1/users?limit=100")
    assert sorted(u["name"] for u in (await resp.json())["items"]) == ["w0", "w1", "w2"]
