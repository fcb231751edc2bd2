"""The model base over raw SQL: every method and operator, bad names and values, transactions."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import pytest

from server.errors import Conflict, DomainError, InvalidInput, NotFound
from server.models.base import InvalidQuery, Model, ModelNotFound, utc_timestamp
from server.models.database import Database
from server.models.user import User

CREATE_NOTES_SQL = """
CREATE TABLE notes (
    id INTEGER PRIMARY KEY,
    title TEXT NOT NULL UNIQUE,
    body TEXT,
    score REAL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
)
"""


class Note(Model):
    """A test-only model with nullable columns, to exercise every operator."""

    table: ClassVar[str] = "notes"
    columns: ClassVar[tuple[str, ...]] = ("id", "title", "body", "score", "created_at", "updated_at")
    created_column: ClassVar[str | None] = "created_at"
    updated_column: ClassVar[str | None] = "updated_at"


NOTES = [
    {"id": 1, "title": "alpha", "body": "first", "score": 1.0},
    {"id": 2, "title": "beta", "body": None, "score": 2.5},
    {"id": 3, "title": "Gamma", "body": "50% off_sale", "score": None},
    {"id": 4, "title": "delta", "body": "back\\slash", "score": 10.0},
]


@pytest.fixture
async def notes(db: Database) -> Database:
    await db.execute(CREATE_NOTES_SQL)
    for values in NOTES:
        await Note.create(db, **values)
    return db


async def ids(query) -> list[int]:
    return [row.id for row in await query.order_by("id").all()]


# -- create, find, get_or_none, to_dict, repr -------------------------------------------------


async def test_create_find_and_to_dict(db):
    user = await User.create(db, name="Asdf")
    assert user.id == 1
    assert user.created_at == user.updated_at
    assert datetime.fromisoformat(user.created_at.replace("Z", "+00:00")).tzinfo is not None
    found = await User.find(db, user.id)
    assert (
        found.to_dict()
        == user.to_dict()
        == {
            "id": 1,
            "name": "Asdf",
            "created_at": user.created_at,
            "updated_at": user.updated_at,
        }
    )
    assert repr(found) == "<User id=1 name='Asdf'>"


async def test_repr_shows_every_column_unless_told(notes):
    note = await Note.find(notes, 2)
    assert repr(note).startswith("<Note id=2 title='beta' body=None score=2.5 created_at='")


async def test_find_unknown_raises_not_found_get_or_none_returns_none(db):
    with pytest.raises(ModelNotFound) as info:
        await User.find(db, 42)
    assert isinstance(info.value, NotFound) and info.value.status == 404
    assert str(info.value) == "no user with id 42"
    assert await User.get_or_none(db, 42) is None


@pytest.mark.parametrize("pk", [2**63, -(2**63) - 1, 10**30])
async def test_ids_beyond_64_bits_are_simply_not_found(db, pk):
    assert await User.get_or_none(db, pk) is None
    with pytest.raises(ModelNotFound):
        await User.find(db, pk)


async def test_timestamps_match_sqlites_own_format(db):
    await db.execute("INSERT INTO users (name) VALUES ('raw')")  # the table's default fills them
    raw = await User.find(db, 1)
    made = await User.create(db, name="model")
    assert len(raw.created_at) == len(made.created_at) == len("2026-01-01T00:00:00.000Z")
    assert raw.created_at <= made.created_at
    assert utc_timestamp(datetime(2026, 1, 2, 3, 4, 5, 678901)) == "2026-01-02T03:04:05.678Z"
    plus_two = datetime(2026, 1, 2, 5, 4, 5, tzinfo=UTC).astimezone(__import__("datetime").timezone(timedelta(hours=2)))
    assert utc_timestamp(plus_two) == "2026-01-02T05:04:05.000Z"


async def test_create_with_an_explicit_id_and_a_duplicate_is_a_conflict(db):
    await User.create(db, id=7, name="seven")
    with pytest.raises(Conflict) as info:
        await User.create(db, id=7, name="again")
    assert info.value.status == 409
    assert [u.name for u in await User.all(db)] == ["seven"]


async def test_create_rejects_unknown_columns_before_any_sql(db):
    with pytest.raises(InvalidQuery) as info:
        await User.create(db, name="x", email="x@example.com")
    assert isinstance(info.value, InvalidInput) and info.value.status == 400
    assert "unknown column 'email' for users (known: id, name, created_at, updated_at)" in str(info.value)
    assert await User.count(db) == 0


async def test_a_check_constraint_failure_is_invalid_input(db):
    with pytest.raises(InvalidQuery) as info:
        await User.create(db, name="")
    assert "CHECK constraint failed" in str(info.value)
    with pytest.raises(InvalidQuery):
        await User.create(db, name="x" * 129)
    assert await User.count(db) == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": 1}, "values of type dict cannot be stored"),
        ("\ud800", "lone surrogate"),
        (2**64, "does not fit in 64 bits"),
        (float("nan"), "NaN"),
    ],
)
async def test_values_sqlite_cannot_take_are_invalid_input(db, value, message):
    with pytest.raises(InvalidQuery, match=message):
        await User.create(db, name=value)
    with pytest.raises(InvalidQuery, match=message):
        User.where(db, name=value)
    assert await User.count(db) == 0


# -- save, update, delete, destroy ------------------------------------------------------------


async def test_save_inserts_a_new_instance_then_writes_only_changes(db):
    user = User(name="first")
    with pytest.raises(RuntimeError, match="has no database"):
        await user.save()
    await user.save(db)
    assert user.id == 1 and user.changes() == {}
    stamped = user.updated_at
    await user.save()  # nothing changed: nothing written, updated_at kept
    assert user.updated_at == stamped
    await asyncio.sleep(0.002)
    user.name = "second"
    assert user.changes() == {"name": "second"}
    await user.save()
    assert user.updated_at > stamped
    assert (await User.find(db, 1)).to_dict() == user.to_dict()


async def test_save_does_not_overwrite_columns_it_did_not_change(db):
    mine = await User.create(db, name="a")
    theirs = await User.find(db, mine.id)
    theirs.name = "changed elsewhere"
    await theirs.save()
    await mine.save()  # mine holds the stale name but changed nothing: nothing written
    assert (await User.find(db, mine.id)).name == "changed elsewhere"


async def test_update_sets_and_saves_and_keeps_created_at(db):
    user = await User.create(db, name="old")
    created = user.created_at
    await asyncio.sleep(0.002)
    await user.update(name="new")
    fresh = await User.find(db, user.id)
    assert fresh.name == "new" and fresh.created_at == created and fresh.updated_at > created


async def test_update_with_unknown_column_changes_nothing(db):
    user = await User.create(db, name="keep")
    with pytest.raises(InvalidQuery, match="unknown column 'nme'"):
        await user.update(nme="typo")
    assert (await User.find(db, user.id)).name == "keep"


async def test_update_or_delete_of_a_row_gone_meanwhile_is_not_found(db):
    user = await User.create(db, name="doomed")
    stale = await User.find(db, user.id)
    await user.delete()
    assert await User.get_or_none(db, user.id) is None
    with pytest.raises(ModelNotFound):
        await stale.update(name="too late")
    with pytest.raises(ModelNotFound):
        await stale.delete()
    with pytest.raises(ModelNotFound):
        await user.delete()  # deleted already: it is a new, unsaved object again
    assert await User.count(db) == 0


async def test_destroy_deletes_by_primary_keys_and_counts(db):
    for name in "abc":
        await User.create(db, name=name)
    assert await User.destroy(db, 1, 3, 99) == 2
    assert [u.name for u in await User.all(db)] == ["b"]


async def test_deleted_ids_are_not_handed_out_again(db):
    user = await User.create(db, name="a")
    await user.delete()
    assert (await User.create(db, name="b")).id == user.id + 1


# -- where, operators, order_by, limit, offset, first, all, count, page ------------------------


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"title": "alpha"}, [1]),
        ({"title__eq": "alpha"}, [1]),
        ({"title__exact": "alpha"}, [1]),
        ({"body": None}, [2]),
        ({"body__ne": "first"}, [2, 3, 4]),  # NULL-safe: a NULL body differs from "first"
        ({"body__ne": None}, [1, 3, 4]),
        ({"score__gt": 1.0}, [2, 4]),
        ({"score__gte": 2.5}, [2, 4]),
        ({"score__ge": 2.5}, [2, 4]),
        ({"score__lt": 2.5}, [1]),
        ({"score__lte": 2.5}, [1, 2]),
        ({"score__le": 2.5}, [1, 2]),
        ({"id__in": [1, 3, 99]}, [1, 3]),
        ({"id__in": []}, []),
        ({"id__in": {2, 4}}, [2, 4]),
        ({"id__in": (4, 2)}, [2, 4]),
        ({"id__notin": [1, 2]}, [3, 4]),
        ({"id__not_in": []}, [1, 2, 3, 4]),
        ({"score__between": [1, 2.5]}, [1, 2]),
        ({"title__like": "g%"}, [3]),  # SQLite's LIKE ignores ASCII case
        ({"title__like": "_eta"}, [2]),
        ({"title__startswith": "al"}, [1]),
        ({"title__startswith": "%"}, []),  # wildcards in the value are matched literally
        ({"body__contains": "%"}, [3]),
        ({"body__contains": "f_s"}, [3]),
        ({"body__contains": "k_s"}, []),
        ({"body__contains": "\\"}, [4]),
        ({"title__endswith": "TA"}, [2, 4]),
        ({"body__isnull": True}, [2]),
        ({"body__isnull": False}, [1, 3, 4]),
        ({"score__gt": 1, "title__like": "%a"}, [2, 4]),
        ({}, [1, 2, 3, 4]),
    ],
)
async def test_where_operators(notes, filters, expected):
    assert await ids(Note.where(notes, **filters)) == expected
    assert await Note.count(notes, **filters) == len(expected)


async def test_where_on_datetimes(notes):
    past = datetime.now(UTC) - timedelta(hours=1)
    assert await ids(Note.where(notes, created_at__gt=past)) == [1, 2, 3, 4]
    assert await ids(Note.where(notes, created_at__lt=past.replace(tzinfo=None))) == []


async def test_where_chains_and_queries_are_immutable(notes):
    base = Note.where(notes, score__isnull=False)
    narrower = base.where(score__gt=2)
    assert await ids(base) == [1, 2, 4]
    assert await ids(narrower) == [2, 4]


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"nope": 1}, "unknown column 'nope' for notes"),
        ({"id; DROP TABLE notes": 1}, "unknown column 'id; DROP TABLE notes'"),
        ({"title__regex": "a"}, "unknown operator 'regex' in 'title__regex'"),
        ({"title__like__x": "a"}, "unknown operator 'like__x'"),
        ({"__like": "a"}, "unknown column ''"),
        ({"body__isnull": "yes"}, "__isnull takes true or false"),
        ({"id__in": "123"}, "__in takes a list of values"),
        ({"id__in": 5}, "__in takes a list of values"),
        ({"id__between": [1]}, r"__between takes \[low, high\]"),
        ({"id__between": [1, None]}, r"__between takes \[low, high\]"),
        ({"title__like": 5}, "__like takes text"),
        ({"title__contains": None}, "__contains takes text"),
        ({"score__gt": None}, "needs a value, not None"),
        ({"id__in": [1, {"x": 1}]}, "type dict"),
    ],
)
async def test_bad_filters_raise_invalid_query_before_sql(notes, filters, message):
    with pytest.raises(InvalidQuery, match=message) as info:
        Note.where(notes, **filters)
    assert isinstance(info.value, DomainError) and info.value.status == 400
    assert await Note.count(notes) == 4


async def test_order_by(notes):
    assert await ids(Note.query(notes)) == [1, 2, 3, 4]
    titles = [n.title for n in await Note.query(notes).order_by("-title").all()]
    assert titles == ["delta", "beta", "alpha", "Gamma"]  # BINARY collation: upper case first
    scores = [n.id for n in await Note.query(notes).order_by("+score", "-id").all()]
    assert scores == [3, 1, 2, 4]  # NULL sorts first ascending


@pytest.mark.parametrize("spec", ["nope", "-nope", "id; DROP TABLE notes", "id DESC", "", "-", 5])
async def test_order_by_unknown_columns_is_invalid_query(notes, spec):
    with pytest.raises(InvalidQuery):
        Note.query(notes).order_by(spec)
    assert await Note.count(notes) == 4


async def test_limit_offset_first_all_count(notes):
    query = Note.query(notes).order_by("id")
    assert await ids(query.limit(2)) == [1, 2]
    assert await ids(query.limit(2).offset(1)) == [2, 3]
    assert await ids(query.offset(3)) == [4]  # an offset without a limit
    assert await ids(query.limit(0)) == []
    assert await ids(query.limit(2).limit(None)) == [1, 2, 3, 4]
    assert (await query.offset(1).first()).id == 2
    assert await query.where(id=99).first() is None
    assert await query.count() == 4
    assert await query.limit(3).offset(2).count() == 2
    assert [n.id for n in await Note.all(notes)] == [1, 2, 3, 4]
    assert (await Note.first(notes)).id == 1


@pytest.mark.parametrize("bad", [-1, "5", True, 1.5, 2**63, None])
async def test_bad_limit_and_offset_are_invalid_query(notes, bad):
    query = Note.query(notes)
    if bad is None:  # None clears, it is not an error
        assert await ids(query.limit(bad).offset(bad)) == [1, 2, 3, 4]
        return
    with pytest.raises(InvalidQuery, match="limit must be a whole number"):
        query.limit(bad)
    with pytest.raises(InvalidQuery, match="offset must be a whole number"):
        query.offset(bad)


async def test_page_counts_every_match_and_returns_one_page(notes):
    page = await Note.where(notes, score__isnull=False).order_by("-score").page(limit=2, offset=1)
    assert page.total == 3 and page.limit == 2 and page.offset == 1
    assert [n.id for n in page.items] == [2, 1]
    assert page.to_dict()["items"][0]["title"] == "beta"
    assert await User.first(notes) is None


INJECTION_LOOKING = [
    "' OR 1=1 --",
    "'; DROP TABLE users; --",
    '" OR ""="',
    "Robert'); DROP TABLE users;--",
    "%",
    "_",
    "\\",
    "a\u0000b",
    "名前 🙂",
    "x" * 128,
]


@pytest.mark.parametrize("name", INJECTION_LOOKING)
async def test_injection_looking_values_are_stored_and_matched_as_data(db, name):
    other = await User.create(db, name="someone else")
    user = await User.create(db, name=name)
    assert (await User.find(db, user.id)).name == name
    assert await ids(User.where(db, name=name)) == [user.id]
    assert await ids(User.where(db, name__contains=name)) == [user.id]
    assert await User.count(db) == 2 and (await User.find(db, other.id)).name == "someone else"


def test_model_declarations_are_checked():
    with pytest.raises(TypeError, match="lowercase identifier"):
        type("Bad", (Model,), {"table": "bad", "columns": ("id", "Name")})
    with pytest.raises(TypeError, match="lowercase identifier"):
        type("Bad", (Model,), {"table": "bad", "columns": ("id", "a__b")})
    with pytest.raises(TypeError, match="lowercase identifier"):
        type("Bad", (Model,), {"table": "bad; DROP", "columns": ("id",)})
    with pytest.raises(TypeError, match=r"would hide Model\.save"):
        type("Bad", (Model,), {"table": "bad", "columns": ("id", "save")})
    with pytest.raises(TypeError, match=r"would hide Model\.columns"):
        type("Bad", (Model,), {"table": "bad", "columns": ("id", "columns")})
    with pytest.raises(TypeError, match="not declared columns"):
        type("Bad", (Model,), {"table": "bad", "columns": ("id",), "repr_columns": ("name",)})


# -- transactions -----------------------------------------------------------------------------


async def test_writes_in_one_transaction_commit_together(db):
    async with db.transaction():
        a = await User.create(db, name="a")
        await a.update(name="a2")
        assert (await User.find(db, a.id)).name == "a2"  # reads inside see the unit's own writes
        await User.create(db, name="b")
    assert [u.name for u in await User.all(db)] == ["a2", "b"]


async def test_an_error_rolls_back_every_write_of_the_unit(db):
    await User.create(db, name="before")
    with pytest.raises(RuntimeError):
        async with db.transaction():
            await User.create(db, name="a")
            await (await User.find(db, 1)).update(name="changed")
            raise RuntimeError("boom")
    assert [u.name for u in await User.all(db)] == ["before"]
    await User.create(db, name="after")  # the writer is usable again
    assert await User.count(db) == 2


async def test_a_failed_nested_unit_rolls_back_alone(db):
    async with db.transaction():
        await User.create(db, name="kept")
        with pytest.raises(Conflict):
            await User.create(db, id=1, name="duplicate")  # its savepoint is rolled back
        await User.create(db, name="also kept")
    assert [u.name for u in await User.all(db)] == ["kept", "also kept"]


async def test_other_tasks_do_not_see_uncommitted_writes(db):
    inside = asyncio.Event()
    release = asyncio.Event()

    async def unit() -> None:
        async with db.transaction():
            await User.create(db, name="pending")
            inside.set()
            await release.wait()

    task = asyncio.create_task(unit())
    await inside.wait()
    assert await User.count(db) == 0  # a reader sees the last commit
    release.set()
    await task
    assert await User.count(db) == 1


async def test_a_failed_commit_is_rolled_back_and_the_writer_stays_usable(db):
    # A deferred foreign key is checked at COMMIT, which then fails with the transaction still open.
    await db.execute("CREATE TABLE parents (id INTEGER PRIMARY KEY)")
    await db.execute(
        "CREATE TABLE children (id INTEGER PRIMARY KEY, parent_id INTEGER NOT NULL "
        "REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED)"
    )
    with pytest.raises(Exception, match="FOREIGN KEY constraint failed"):
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO children (parent_id) VALUES (42)")
    assert not db.writer.in_transaction
    await User.create(db, name="next unit")
    assert await db.fetchval("SELECT COUNT(*) FROM children") == 0
    assert await User.count(db) == 1


async def test_cancelling_a_unit_at_any_point_leaves_nothing_half_done(db):
    for steps in range(12):
        started = asyncio.Event()

        async def unit(started: asyncio.Event = started) -> None:
            started.set()
            async with db.transaction() as tx:
                await tx.execute("INSERT INTO users (name) VALUES ('a')")
                await tx.execute("INSERT INTO users (name) VALUES ('b')")

        task = asyncio.create_task(unit())
        await started.wait()
        for _ in range(steps):
            await asyncio.sleep(0)
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass
        # Either both rows of the unit or neither; the next unit works.
        count = await User.count(db)
        assert count % 2 == 0
        await User.create(db, name="probe")
        await (await User.where(db, name="probe").first()).delete()
    assert not db.writer.in_transaction


async def test_read_connections_are_shared_fairly(db):
    await User.create(db, name="x")
    counts = await asyncio.gather(*(User.count(db) for _ in range(50)))
    assert counts == [1] * 50
