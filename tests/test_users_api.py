"""The users API under every version: CRUD, paging, bad input, injection-looking input, concurrency."""

from __future__ import annotations

import asyncio
import logging

import pytest
from fixtures_auth import bearer
from support import PROBLEM, problem

from server.app import create_app
from server.controllers.versions import API_VERSIONS

pytestmark = pytest.mark.both_backends

VERSIONS = [f"/api/v{v}" for v in sorted(API_VERSIONS)]


@pytest.fixture
def client(writer_client):
    """Every test here writes users: its client sends a users:write token (tests/test_auth.py
    covers the answers without one)."""
    return writer_client


async def create(client, name: str, prefix: str = "/api/v1") -> dict:
    resp = await client.post(f"{prefix}/users", json={"name": name})
    assert resp.status == 201, await resp.text()
    return await resp.json()


# -- the happy path ------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", VERSIONS)
async def test_create_read_update_delete(client, prefix):
    resp = await client.post(f"{prefix}/users", json={"name": "Asdf"})
    assert resp.status == 201
    user = await resp.json()
    assert set(user) == {"id", "name", "created_at", "updated_at"}
    assert user["name"] == "Asdf" and isinstance(user["id"], int)
    assert resp.headers["Location"] == f"{prefix}/users/{user['id']}"

    resp = await client.get(resp.headers["Location"])
    assert resp.status == 200 and await resp.json() == user

    resp = await client.patch(f"{prefix}/users/{user['id']}", json={"name": "Qwerty"})
    assert resp.status == 200
    updated = await resp.json()
    assert updated["name"] == "Qwerty" and updated["created_at"] == user["created_at"]
    assert updated["updated_at"] >= user["updated_at"]
    assert await (await client.get(f"{prefix}/users/{user['id']}")).json() == updated

    resp = await client.patch(f"{prefix}/users/{user['id']}", json={})  # an empty patch changes nothing
    assert resp.status == 200 and await resp.json() == updated

    resp = await client.delete(f"{prefix}/users/{user['id']}")
    assert resp.status == 204 and await resp.read() == b""
    await problem(await client.get(f"{prefix}/users/{user['id']}"), 404)
    await problem(await client.delete(f"{prefix}/users/{user['id']}"), 404)
    await problem(await client.patch(f"{prefix}/users/{user['id']}", json={"name": "x"}), 404)


async def test_versions_share_the_same_users(client):
    user = await create(client, "shared", "/api/v1")
    assert (await client.get(f"/api/v2/users/{user['id']}")).status == 200


async def test_foo_counts_users(client):
    for name in ("a", "b", "c"):
        await create(client, name)
    for prefix in VERSIONS:
        assert (await (await client.get(f"{prefix}/foo")).json())["count"] == 3


async def test_list_pages_with_total(client):
    made = [await create(client, f"user-{i:02d}") for i in range(25)]
    body = await (await client.get("/api/v1/users")).json()
    assert body["total"] == 25 and body["limit"] == 20 and body["offset"] == 0
    assert body["items"] == made[:20]
    body = await (await client.get("/api/v1/users?limit=10&offset=20")).json()
    assert body == {"items": made[20:], "total": 25, "limit": 10, "offset": 20}
    body = await (await client.get("/api/v1/users?offset=100")).json()
    assert body == {"items": [], "total": 25, "limit": 20, "offset": 100}
    body = await (await client.get("/api/v1/users?limit=100")).json()
    assert len(body["items"]) == 25


async def test_list_filters_by_exact_name_and_orders(client):
    a1 = await create(client, "alice")
    await create(client, "bob")
    a2 = await create(client, "alice")
    await create(client, "Alice")
    body = await (await client.get("/api/v1/users", params={"name": "alice"})).json()
    assert body["items"] == [a1, a2] and body["total"] == 2
    body = await (await client.get("/api/v1/users", params={"name": "alice", "order": "-id"})).json()
    assert body["items"] == [a2, a1]
    body = await (await client.get("/api/v1/users", params={"order": "name,-id"})).json()
    assert [u["name"] for u in body["items"]] == ["Alice", "alice", "alice", "bob"]
    assert body["items"][1] == a2
    body = await (await client.get("/api/v1/users", params={"name": "nobody"})).json()
    assert body == {"items": [], "total": 0, "limit": 20, "offset": 0}


# -- bad input -----------------------------------------------------------------------------------


BAD_PAGING = [
    ("limit=0", "limit"),
    ("limit=101", "limit"),
    ("limit=-5", "limit"),
    ("limit=abc", "limit"),
    ("limit=1.5", "limit"),
    ("limit=", "limit"),
    ("offset=-1", "offset"),
    ("offset=x", "offset"),
    ("offset=99999999999999999999", "offset"),
]


async def test_bad_paging_parameters_are_400(client):
    for query, parameter in BAD_PAGING:
        body = await problem(await client.get(f"/api/v1/users?{query}"), 400)
        assert [e["parameter"] for e in body["errors"]] == [parameter], query


async def test_unknown_query_parameters_are_400(client):
    body = await problem(await client.get("/api/v1/users?nmae=x"), 400)
    assert "nmae" in body["errors"][0]["detail"]


async def test_unknown_order_column_is_400_naming_the_known_ones(client):
    body = await problem(await client.get("/api/v1/users?order=email"), 400)
    # The query schema lists the columns (so the OpenAPI document does): the 400 comes from it,
    # naming the parameter, the value and every known column.
    (error,) = body["errors"]
    assert error["parameter"] == "order" and "'email'" in error["detail"]
    assert all(column in error["detail"] for column in ("id", "name", "created_at", "updated_at"))


BAD_OR_UNKNOWN_ID_PATHS = [
    "/users/abc",
    "/users/0",
    "/users/-1",
    "/users/1.0",
    "/users/01",
    "/users/1_0",
    "/users/%201",
    "/users/+1",
    "/users/%D9%A1",  # an Arabic-Indic digit one: Python's int() would take it
    "/users/9223372036854775808",
    "/users/99999999999999999999",
    "/users/123456",
]


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
async def test_bad_or_unknown_ids_are_404(client, method):
    await create(client, "one")  # id 1 exists; none of these paths may reach it
    kwargs = {"json": {"name": "x"}} if method == "PATCH" else {}
    for path in BAD_OR_UNKNOWN_ID_PATHS:
        resp = await client.request(method, f"/api/v1{path}", **kwargs)
        assert resp.status == 404, (path, await resp.text())
        assert resp.content_type == PROBLEM
    assert (await (await client.get("/api/v1/users/1")).json())["name"] == "one"


async def test_largest_64_bit_id_is_a_plain_404(client):
    await problem(await client.get("/api/v1/users/9223372036854775807"), 404)


JSON = {"Content-Type": "application/json"}
TEXT = {"Content-Type": "text/plain"}


async def test_bad_json_is_400(client):
    body = await problem(await client.post("/api/v1/users", data=b'{"name": ', headers=JSON), 400)
    assert "not valid JSON" in body["detail"]
    user = await create(client, "x")
    await problem(await client.patch(f"/api/v1/users/{user['id']}", data=b"nope", headers=JSON), 400)
    await problem(await client.post("/api/v1/users", data=b"", headers=JSON), 400)


async def test_wrong_content_type_is_415(client):
    await problem(await client.post("/api/v1/users", data=b"name=x", headers=TEXT), 415)
    await problem(await client.post("/api/v1/users", data={"name": "x"}), 415)  # a form
    user = await create(client, "x")
    await problem(await client.patch(f"/api/v1/users/{user['id']}", data=b'{"name": "y"}', headers=TEXT), 415)
    assert (await (await client.get(f"/api/v1/users/{user['id']}")).json())["name"] == "x"


@pytest.mark.parametrize(
    ("body", "pointers"),
    [
        ({}, [""]),
        ([], [""]),
        ("name", [""]),
        ({"name": ""}, ["/name"]),
        ({"name": "x" * 129}, ["/name"]),
        ({"name": 5}, ["/name"]),
        ({"name": None}, ["/name"]),
        ({"name": "ok", "id": 5}, [""]),
        ({"name": "ok", "created_at": "2020-01-01"}, [""]),
        ({"nme": "typo"}, ["", ""]),  # required name missing, nme not allowed
    ],
)
async def test_create_schema_violations_are_422_with_pointers(client, body, pointers):
    resp = await client.post("/api/v1/users", json=body)
    problem_body = await problem(resp, 422)
    assert [e["pointer"] for e in problem_body["errors"]] == pointers
    assert (await (await client.get("/api/v1/users")).json())["total"] == 0


@pytest.mark.parametrize(
    ("body", "pointers"),
    [
        ({"name": ""}, ["/name"]),
        ({"name": 1}, ["/name"]),
        ({"id": 2}, [""]),
        ({"name": "x", "updated_at": "now"}, [""]),
        ([{"name": "x"}], [""]),
    ],
)
async def test_update_schema_violations_are_422_and_change_nothing(client, body, pointers):
    user = await create(client, "unchanged")
    problem_body = await problem(await client.patch(f"/api/v1/users/{user['id']}", json=body), 422)
    assert [e["pointer"] for e in problem_body["errors"]] == pointers
    assert await (await client.get(f"/api/v1/users/{user['id']}")).json() == user


async def test_text_that_is_not_unicode_is_400_not_500(client):
    # JSON may spell a lone surrogate; SQLite cannot store it as UTF-8.
    resp = await client.post("/api/v1/users", data=b'{"name": "a\\ud800b"}', headers=JSON)
    body = await problem(resp, 400)
    assert "surrogate" in body["detail"]  # refused by the body parser, before the model
    assert (await (await client.get("/api/v1/users")).json())["total"] == 0


async def test_wrong_methods_are_405(client):
    resp = await client.put("/api/v1/users/1", json={"name": "x"})
    await problem(resp, 405)
    assert set(resp.headers["Allow"].split(",")) >= {"GET", "PATCH", "DELETE"}


# -- injection-looking input ---------------------------------------------------------------------

NASTY_NAMES = [
    "' OR 1=1 --",
    "'; DROP TABLE users; --",
    "Robert'); DROP TABLE users;--",
    '" OR ""="',
    "%",
    "_",
    "a\u0000b",
    "名前 🙂",
]


@pytest.mark.parametrize("name", NASTY_NAMES)
async def test_injection_looking_names_are_stored_and_matched_as_data(client, backend, name):
    other = await create(client, "innocent")
    if "\x00" in name and backend == "postgresql":  # PostgreSQL's text cannot hold U+0000: 400, nothing stored
        body = await problem(await client.post("/api/v1/users", json={"name": name}), 400)
        assert "NUL character" in body["detail"]
        await problem(await client.patch(f"/api/v1/users/{other['id']}", json={"name": name}), 400)
        body = await problem(await client.get("/api/v1/users", params={"name": name}), 400)
        assert (await (await client.get("/api/v1/users")).json())["items"] == [other]
        return
    user = await create(client, name)
    assert user["name"] == name
    assert await (await client.get(f"/api/v1/users/{user['id']}")).json() == user
    body = await (await client.get("/api/v1/users", params={"name": name})).json()
    assert body["items"] == [user] and body["total"] == 1
    resp = await client.patch(f"/api/v1/users/{other['id']}", json={"name": name})
    assert (await resp.json())["name"] == name
    assert (await (await client.get("/api/v1/users")).json())["total"] == 2


INJECTION_LOOKING_PARAMETERS = [
    {"order": "id; DROP TABLE users"},
    {"order": "-id; DROP TABLE users --"},
    {"order": "name) UNION SELECT sql, 1, 2, 3 FROM sqlite_master --"},
    {"id; DROP TABLE users": "1"},
    {"name = name OR 1": "1"},
    {"limit": "1; DROP TABLE users"},
    {"offset": "0 OR 1=1"},
]


async def test_injection_looking_parameters_are_rejected_as_data(client):
    user = await create(client, "survivor")
    for query in INJECTION_LOOKING_PARAMETERS:
        resp = await client.get("/api/v1/users", params=query)
        assert resp.status == 400, (query, await resp.text())
    assert await (await client.get(f"/api/v1/users/{user['id']}")).json() == user
    assert (await (await client.get("/api/v1/foo")).json())["count"] == 1


async def test_injection_looking_ids_are_404(client):
    await create(client, "survivor")
    for path in ("/users/1%20OR%201=1", "/users/1;DROP%20TABLE%20users", "/users/1'--"):
        await problem(await client.get(f"/api/v1{path}"), 404)
        await problem(await client.delete(f"/api/v1{path}"), 404)
    assert (await (await client.get("/api/v1/users")).json())["total"] == 1


# -- concurrency ---------------------------------------------------------------------------------


async def test_200_concurrent_creates_across_two_apps_on_one_file(config, aiohttp_client, caplog, writer_token):
    # Two apps on one file: like two web processes, each with its own writer connection.
    first = await aiohttp_client(create_app(config), headers=bearer(writer_token))
    second = await aiohttp_client(create_app(config), headers=bearer(writer_token))
    caplog.set_level(logging.WARNING)
    names = [f"user-{i:03d}" for i in range(200)]
    responses = await asyncio.gather(
        *((first if i % 2 else second).post("/api/v1/users", json={"name": n}) for i, n in enumerate(names))
    )
    assert [r.status for r in responses] == [201] * 200
    created = [await r.json() for r in responses]
    assert sorted(u["name"] for u in created) == names
    assert len({u["id"] for u in created}) == 200

    listed = []
    for offset in range(0, 200, 100):
        body = await (await first.get(f"/api/v1/users?limit=100&offset={offset}")).json()
        assert body["total"] == 200
        listed += body["items"]
    assert sorted(listed, key=lambda u: u["id"]) == sorted(created, key=lambda u: u["id"])
    assert "database is locked" not in caplog.text


async def test_200_concurrent_updates_of_one_row(config, aiohttp_client, caplog, writer_token):
    first = await aiohttp_client(create_app(config), headers=bearer(writer_token))
    second = await aiohttp_client(create_app(config), headers=bearer(writer_token))
    caplog.set_level(logging.WARNING)
    user = await create(first, "start")
    others = [await create(first, f"bystander-{i}") for i in range(3)]
    names = [f"name-{i:03d}" for i in range(200)]
    url = f"/api/v1/users/{user['id']}"
    responses = await asyncio.gather(
        *((first if i % 2 else second).patch(url, json={"name": n}) for i, n in enumerate(names))
    )
    assert [r.status for r in responses] == [200] * 200
    answers = [await r.json() for r in responses]
    # Each request saw its own write, on the same row, never another's half.
    assert [a["name"] for a in answers] == names
    assert {a["id"] for a in answers} == {user["id"]}
    assert {a["created_at"] for a in answers} == {user["created_at"]}

    final = await (await second.get(url)).json()
    assert final["name"] in names
    assert final["updated_at"] >= max(a["updated_at"] for a in answers)
    body = await (await first.get("/api/v1/users")).json()
    assert body["total"] == 4
    assert [u for u in body["items"] if u["id"] != user["id"]] == others
    assert "database is locked" not in caplog.text


async def test_user_reads_are_cached_and_every_write_invalidates_them(client):
    """The user list and detail are cached in Redis; a client never reads its own write stale."""
    first = await client.get("/api/v1/users")
    assert first.headers["X-Cache"] == "MISS"
    again = await client.get("/api/v1/users")
    assert again.headers["X-Cache"] == "HIT"
    assert await again.json() == await first.json()

    created = await (await client.post("/api/v1/users", json={"name": "cached"})).json()
    listing = await client.get("/api/v1/users")
    assert listing.headers["X-Cache"] == "MISS"
    assert [u["name"] for u in (await listing.json())["items"]] == ["cached"]
    v2_listing = await client.get("/api/v2/users")
    assert (await v2_listing.json())["total"] == 1

    detail_url = f"/api/v1/users/{created['id']}"
    assert (await client.get(detail_url)).headers["X-Cache"] == "MISS"
    assert (await client.get(detail_url)).headers["X-Cache"] == "HIT"
    patched = await client.patch(detail_url, json={"name": "renamed"})
    assert patched.status == 200
    detail = await client.get(detail_url)
    assert detail.headers["X-Cache"] == "MISS"
    assert (await detail.json())["name"] == "renamed"
    assert (await (await client.get("/api/v1/users")).json())["items"][0]["name"] == "renamed"

    assert (await client.delete(detail_url)).status == 204
    gone = await client.get(detail_url)
    assert gone.status == 404
    assert (await (await client.get("/api/v1/users")).json())["total"] == 0


async def test_a_database_that_cannot_answer_in_time_is_503_and_loses_nothing(
    config, aiohttp_client, backend, tmp_path, writer_token
):
    import dataclasses
    import sqlite3

    from server.keys import DB_KEY

    # Writers wait at most 0.2 s for their turn (SQLite's lock; PostgreSQL's one pool connection).
    database = dataclasses.replace(config.database, busy_timeout_ms=200, pool_max_size=1)
    client = await aiohttp_client(
        create_app(dataclasses.replace(config, database=database)), headers=bearer(writer_token)
    )
    kept = await create(client, "kept")
    db = client.server.app[DB_KEY]
    inside, release = asyncio.Event(), asyncio.Event()

    async def long_unit() -> None:
        async with db.transaction():
            inside.set()
            await release.wait()

    holder = asyncio.create_task(long_unit())
    await inside.wait()
    resp = await client.post("/api/v1/users", json={"name": "too late"})
    body = await problem(resp, 503)
    assert resp.headers["Retry-After"] and "cannot take this request now" in body["detail"]
    release.set()
    await holder

    if backend == "sqlite":  # another process holding the file's lock: the same answer
        other = sqlite3.connect(config.database.path, isolation_level=None)
        try:
            other.execute("BEGIN EXCLUSIVE")
            await problem(await client.patch(f"/api/v1/users/{kept['id']}", json={"name": "x"}), 503)
            other.execute("ROLLBACK")
        finally:
            other.close()

    after = await create(client, "after")
    listed = (await (await client.get("/api/v1/users")).json())["items"]
    assert [u["name"] for u in listed] == ["kept", "after"] and listed[1] == after
