"""SQLite and PostgreSQL side by side: the same calls give the same JSON, timestamps and order on both."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from support import make_test_config

from server.app import create_app
from server.cache.store import Generations, bump_generation
from server.keys import DB_KEY
from server.models.user import User
from server.tokens import create_token

TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
# Case, accents, wildcard characters and digits: where collations and LIKE differ between engines.
NAMES = ["alice", "Alice", "Émile", "emile", "a_b", "a%b", "Zed", "zed", "10", "9", "bob", "ALICE"]
QUERIES = [
    "/api/v1/users?limit=100",
    "/api/v1/users?order=name&limit=100",
    "/api/v1/users?order=-name,id&limit=100",
    "/api/v1/users?order=-created_at&limit=5&offset=2",
    "/api/v1/users?order=created_at,name&limit=100",
    "/api/v1/users?name=alice",
    "/api/v1/users?name=%C3%89mile",
    "/api/v2/users?limit=3&offset=10",
    "/api/v1/users/3",
    "/api/v1/foo",
    "/api/v2/foo",
]
FILTERS: list[dict[str, Any]] = [
    {"name__like": "a%"},
    {"name__like": "A_B"},
    {"name__startswith": "a_"},
    {"name__contains": "%"},
    {"name__endswith": "ED"},
    {"name__gt": "Z"},
    {"name__between": ["9", "b"]},
    {"name__in": ["alice", "ALICE", "nobody"]},
    {"name__ne": "alice"},
    {"created_at__gte": datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)},
]


async def exercise(client, writer: dict[str, str]) -> dict[str, Any]:
    """The same writes and reads through the API and the models; every answer, by what was asked.
    `writer`: the headers of a users:write token."""
    db = client.server.app[DB_KEY]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    for i, name in enumerate(NAMES):
        # Fixed timestamps (two rows share each), so the answers can be compared byte for byte.
        moment = start + timedelta(seconds=i // 2, milliseconds=7)
        await User.create(db, name=name, created_at=moment, updated_at=moment)
    seen: dict[str, Any] = {}
    for url in QUERIES:
        resp = await client.get(url)
        seen[url] = (resp.status, await resp.text())
    for filters in FILTERS:
        rows = await User.where(db, **filters).order_by("name", "id").all()
        seen[repr(filters)] = [u.to_dict() for u in rows]
    # Written by the API and by the tables' own defaults: the same shape of timestamp.
    made = await (await client.post("/api/v1/users", json={"name": "new"}, headers=writer)).json()
    await db.execute("INSERT INTO users (name) VALUES ('by default')")
    by_default = await User.where(db, name="by default").first()
    assert by_default is not None
    for stamp in (made["created_at"], made["updated_at"], by_default.created_at, by_default.updated_at):
        assert TIMESTAMP_RE.match(stamp), stamp
    seen["ids after writes"] = [made["id"], by_default.id]
    return seen


async def test_both_backends_answer_the_same(tmp_path, redis_url, aiohttp_client, postgres_databases):
    answers = []
    for url in ("", postgres_databases()):
        config = make_test_config(
            database=tmp_path / "same.db", redis_url=redis_url, database_url=url, cache={"enabled": False}
        )
        client = await aiohttp_client(create_app(config))
        _, token = await create_token(config, name="writer", scopes=["users:write"])
        answers.append(await exercise(client, {"Authorization": f"Bearer {token}"}))
    sqlite, postgresql = answers
    assert sqlite.keys() == postgresql.keys()
    for key in sqlite:
        assert sqlite[key] == postgresql[key], key
    names = [u["name"] for u in sqlite[repr({"name__like": "a%"})]]
    assert names == ["ALICE", "Alice", "a%b", "a_b", "alice"]  # ASCII case ignored, byte order


@pytest.mark.both_backends
async def test_stats_name_size_and_connections(db, backend):
    await User.create(db, name="x")
    stats = await db.stats()
    assert stats["backend"] == backend
    assert stats["size_bytes"] > 0
    assert stats["connections"] >= 1 and stats["connections_in_use"] == 0
    async with db.transaction():
        assert db.in_use() == 1


def test_postgresql_storage_faults_are_told_apart_like_sqlites():
    from asyncpg import exceptions as pg

    from server.models.faults import storage_fault
    from server.models.postgres import translate

    assert storage_fault(pg.TooManyConnectionsError()) == "connections"
    assert storage_fault(pg.AdminShutdownError()) == "down"
    assert storage_fault(pg.CannotConnectNowError()) == "down"
    assert storage_fault(pg.ReadOnlySQLTransactionError()) == "read-only"
    assert storage_fault(pg.DiskFullError()) == "full"
    assert storage_fault(pg.SerializationError()) == "busy"
    assert storage_fault(pg.DeadlockDetectedError()) == "busy"
    assert storage_fault(pg.QueryCanceledError()) == "busy"  # statement_timeout
    assert storage_fault(pg.ConnectionDoesNotExistError()) == "down"
    assert storage_fault(translate(ConnectionRefusedError(111, "refused"))) == "down"
    # A bug stays a bug (500): bad SQL, a missing table.
    assert storage_fault(pg.UndefinedTableError()) is None
    assert storage_fault(pg.PostgresSyntaxError()) is None


@pytest.mark.both_backends
async def test_generations_of_several_namespaces_are_read_in_one_round_trip(db, backend):
    # The cache's shared generation reads (server/cache/store.py): one statement for every
    # namespace asked while a read was under way, the same answers as one read each.
    for namespace in ("a", "a", "b"):
        await bump_generation(db, namespace)
    generations = Generations(db)
    asks = [asyncio.create_task(generations.get(ns)) for ns in ("a", "b", "c", "a", "b")]
    assert await asyncio.gather(*asks) == [2, 1, 0, 2, 1]
    assert generations.reads == (1, 5)  # all asked before the first read began: one read
    assert await generations.get("b") == 1
    await generations.close()
