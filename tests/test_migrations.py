"""Migrations on both backends: fresh, partial, newer databases, rollback, concurrency, files, CLI, start-up."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp import web
from support import make_test_config

from server.app import create_app
from server.config import PROJECT_ROOT, DatabaseConfig
from server.models.backends import make_database
from server.models.database import Database
from server.models.dialect import MIGRATIONS_ROOT, POSTGRESQL, SQLITE
from server.models.migrate import (
    DatabaseTooNew,
    MigrationFailed,
    MigrationFileError,
    PendingMigrations,
    check_schema,
    load_migrations,
    migrate,
    prepare_database,
    schema_version,
    split_statements,
)
from server.models.sqlite import SQLiteDatabase
from server.models.sqltext import split_script

pytestmark = pytest.mark.both_backends
MIGRATIONS_DIR = SQLITE.migrations_dir

THREE = {
    "0001_first.sql": "CREATE TABLE a (id INTEGER PRIMARY KEY);",
    "0002_second.sql": "CREATE TABLE b (id INTEGER PRIMARY KEY);\nINSERT INTO b (id) VALUES (1);",
    "0003_third.sql": "ALTER TABLE b ADD COLUMN note TEXT;",
}


@pytest.fixture
def empty_url(backend, request) -> str:
    """database.url of an empty database of the test's backend ("" for SQLite: a new file)."""
    if backend == "sqlite":
        return ""
    return request.getfixturevalue("postgres_databases")(migrated=False)


@pytest.fixture
def empty_config(tmp_path, empty_url) -> DatabaseConfig:
    return DatabaseConfig(url=empty_url, path=str(tmp_path / "m.db"), read_connections=1)


@pytest.fixture
async def fresh(empty_config):
    database = make_database(empty_config)
    await database.open()
    try:
        yield database
    finally:
        await database.close()


async def set_version(cfg: DatabaseConfig, version: int) -> None:
    """Make the database look migrated to `version` by other code."""
    db = make_database(cfg, small=True)
    await db.open()
    try:
        if db.dialect is SQLITE:
            await db.execute(f"PRAGMA user_version = {version}")
        else:
            await db.execute(POSTGRESQL.create_version_table_sql or "")
            await db.execute("INSERT INTO schema_migrations (version, name) VALUES (?, 'from elsewhere')", (version,))
    finally:
        await db.close()


async def tables(db: Database) -> set[str]:
    if db.dialect is SQLITE:
        rows = await db.fetchall("SELECT name FROM sqlite_master WHERE type = 'table'")
        return {r[0] for r in rows} - {"sqlite_sequence"}
    rows = await db.fetchall("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
    return {r[0] for r in rows} - {"schema_migrations"}


def assert_no_unit_open(db: Database) -> None:
    assert db.in_use() == 0
    if db.dialect is SQLITE:
        assert not db.writer.in_transaction


NO_SUCH_TABLE = {"sqlite": "no such table: nowhere", "postgresql": 'relation "nowhere" does not exist'}


# -- the project's own migrations ---------------------------------------------------------------


async def test_fresh_database_gets_every_migration(fresh):
    report = await migrate(fresh)
    latest = len(load_migrations(fresh.dialect.migrations_dir, fresh.dialect))
    assert report.before == 0 and report.after == report.latest == latest
    assert report.applied[0] == "0001_users"
    assert await schema_version(fresh) == latest
    assert "users" in await tables(fresh)
    again = await migrate(fresh)
    assert again.applied == () and again.after == latest


# -- partial, newer, failing --------------------------------------------------------------------


async def test_partial_database_gets_only_what_is_missing(fresh, migrations_dir):
    first = migrations_dir({"0001_first.sql": THREE["0001_first.sql"]})
    assert (await migrate(fresh, first)).applied == ("0001_first",)
    report = await migrate(fresh, migrations_dir(THREE))
    assert report.applied == ("0002_second", "0003_third")
    assert (report.before, report.after) == (1, 3)
    assert await tables(fresh) == {"a", "b"}
    assert [tuple(r) for r in await fresh.fetchall("SELECT id, note FROM b")] == [(1, None)]


async def test_newer_database_is_refused_and_left_alone(fresh, migrations_dir, empty_config):
    folder = migrations_dir(THREE)
    await migrate(fresh, folder)
    await set_version(empty_config, 5)
    with pytest.raises(DatabaseTooNew) as info:
        await migrate(fresh, folder)
    message = str(info.value)
    assert "is at schema version 5, newer than this code knows (its latest migration is 0003)" in message
    with pytest.raises(DatabaseTooNew):
        await check_schema(fresh, folder)
    assert await schema_version(fresh) == 5


async def test_older_code_starts_on_a_schema_newer_only_by_expand_migrations(fresh, migrations_dir):
    old_code = migrations_dir({k: THREE[k] for k in ("0001_first.sql", "0002_second.sql")})
    expand = {
        **THREE,
        "0003_third.sql": "-- expand: a nullable column, older code ignores it\n" + THREE["0003_third.sql"],
    }
    assert [m.expand for m in load_migrations(migrations_dir(expand), fresh.dialect)] == [False, False, True]
    await migrate(fresh, migrations_dir(expand))  # the new code's deploy step
    if fresh.dialect is SQLITE:  # only the number is kept: any newer schema is refused
        with pytest.raises(DatabaseTooNew):
            await check_schema(fresh, old_code)
        return
    assert await check_schema(fresh, old_code) == 3  # hosts still on the old code keep starting
    assert (await migrate(fresh, old_code)).applied == ()
    contract = migrations_dir({**expand, "0004_drop.sql": "DROP TABLE a;"})
    await migrate(fresh, contract)
    with pytest.raises(DatabaseTooNew, match="0004_drop not marked -- expand"):
        await check_schema(fresh, old_code)


async def test_a_failing_migration_is_rolled_back_and_earlier_ones_kept(fresh, migrations_dir):
    folder = migrations_dir(
        {
            "0001_first.sql": THREE["0001_first.sql"],
            "0002_broken.sql": (
                "CREATE TABLE c (id INTEGER);\nINSERT INTO c VALUES (1);\nINSERT INTO nowhere VALUES (1);"
            ),
        }
    )
    with pytest.raises(MigrationFailed) as info:
        await migrate(fresh, folder)
    message = str(info.value)
    assert "migration 0002_broken failed at statement 3 and was rolled back" in message
    assert "stays at version 1" in message and NO_SUCH_TABLE[fresh.dialect.name] in message
    assert await schema_version(fresh) == 1
    assert await tables(fresh) == {"a"}  # c, created by the failed migration, is gone
    assert_no_unit_open(fresh)


async def test_concurrent_runners_apply_each_migration_once(empty_config, migrations_dir):
    # CREATE TABLE without IF NOT EXISTS: a second application would fail. On PostgreSQL the
    # version table itself is created by the first runner while the others wait on the lock.
    folder = migrations_dir(THREE)
    dbs = [make_database(empty_config, small=True) for _ in range(4)]
    await asyncio.gather(*(d.open() for d in dbs))
    try:
        reports = await asyncio.gather(*(migrate(d, folder) for d in dbs))
    finally:
        await asyncio.gather(*(d.close() for d in dbs))
    applied = [label for report in reports for label in report.applied]
    assert sorted(applied) == ["0001_first", "0002_second", "0003_third"]
    assert all(report.after == 3 for report in reports)


async def test_prepare_without_auto_migrate_refuses_pending_and_accepts_current(fresh, migrations_dir):
    folder = migrations_dir(THREE)
    with pytest.raises(PendingMigrations) as info:
        await prepare_database(fresh, auto_migrate=False, directory=folder)
    message = str(info.value)
    assert "is at schema version 0, this code needs 3" in message
    assert "pending: 0001_first, 0002_second, 0003_third" in message
    assert "run `python -m server migrate`" in message
    assert await tables(fresh) == set()
    await prepare_database(fresh, auto_migrate=True, directory=folder)
    report = await prepare_database(fresh, auto_migrate=False, directory=folder)
    assert report.after == 3 and report.applied == ()


# -- files --------------------------------------------------------------------------------------


def test_split_statements_follows_sqlite():
    script = """
    -- a comment; with a semicolon
    CREATE TABLE t (x TEXT DEFAULT 'a;b');  /* block; comment */
    CREATE TRIGGER tr AFTER INSERT ON t BEGIN
        UPDATE t SET x = 'c;d';
        DELETE FROM t WHERE x = ';';
    END;
    INSERT INTO t VALUES ('e'); INSERT INTO t VALUES ('f')
    -- trailing comment
    """
    statements = split_statements(script)
    assert len(statements) == 4
    assert statements[0].endswith("CREATE TABLE t (x TEXT DEFAULT 'a;b');")
    assert statements[1].startswith("/* block; comment */\n    CREATE TRIGGER")
    assert statements[1].endswith("END;")
    assert statements[2] == "INSERT INTO t VALUES ('e');"
    assert statements[3] == "INSERT INTO t VALUES ('f')\n    -- trailing comment"
    assert split_statements("-- nothing\n;;  \n/* here */") == []


def test_split_script_follows_postgresql():
    script = """
    -- a comment; with a semicolon
    CREATE TABLE t (x text DEFAULT 'a;b', y text DEFAULT E'c\\';d');  /* block; /* nested; */ comment */
    CREATE FUNCTION f() RETURNS trigger LANGUAGE plpgsql AS $body$
        BEGIN NEW.x := 'e;f'; RETURN NEW; END;
    $body$;
    CREATE FUNCTION g() RETURNS int LANGUAGE sql BEGIN ATOMIC SELECT CASE WHEN true THEN 1 END; END;
    SELECT $$;$$, "semi;colon" FROM t
    """
    statements = split_script(script)
    assert len(statements) == 4
    assert statements[0].endswith("""CREATE TABLE t (x text DEFAULT 'a;b', y text DEFAULT E'c\\';d');""")
    assert statements[1].startswith("/* block;") and statements[1].endswith("$body$;")
    assert statements[2].startswith("CREATE FUNCTION g()") and statements[2].endswith("END; END;")
    assert statements[3] == 'SELECT $$;$$, "semi;colon" FROM t'
    assert split_script("-- nothing\n;;  \n/* here */") == []


TRIGGERS = {
    "sqlite": """
        CREATE TABLE t (x TEXT, n INTEGER DEFAULT 0);  -- ; here
        CREATE TRIGGER t_count AFTER INSERT ON t BEGIN
            UPDATE t SET n = n + 1 WHERE rowid = new.rowid;
        END;
        INSERT INTO t (x) VALUES ('a;b');
    """,
    "postgresql": """
        CREATE TABLE t (x text, n integer DEFAULT 0);  -- ; here
        CREATE FUNCTION t_count() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN NEW.n := NEW.n + 1; RETURN NEW; END;
        $$;
        CREATE TRIGGER t_count BEFORE INSERT ON t FOR EACH ROW EXECUTE FUNCTION t_count();
        INSERT INTO t (x) VALUES ('a;b');
    """,
}


async def test_triggers_and_comments_apply(fresh, migrations_dir):
    folder = migrations_dir({"0001_t.sql": TRIGGERS[fresh.dialect.name]})
    await migrate(fresh, folder)
    assert [tuple(r) for r in await fresh.fetchall("SELECT x, n FROM t")] == [("a;b", 1)]


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"0001_First.sql": "SELECT 1;"}, "named NNNN_name.sql"),
        ({"1_first.sql": "SELECT 1;"}, "named NNNN_name.sql"),
        ({"0001_a.sql": "SELECT 1;", "0003_c.sql": "SELECT 1;"}, "0003_c.sql: expected migration 0002"),
        ({"0001_a.sql": "SELECT 1;", "0001_b.sql": "SELECT 1;"}, "0001_b.sql: expected migration 0002"),
        ({"0002_a.sql": "SELECT 1;"}, "expected migration 0001"),
        ({"0001_a.sql": "BEGIN;\nCREATE TABLE x (id);\nCOMMIT;"}, "BEGIN is not allowed"),
        ({"0001_a.sql": "CREATE TABLE x (id);\ncommit;"}, "COMMIT is not allowed"),
        ({"0001_a.sql": "/* first */ -- then\n  Rollback;"}, "ROLLBACK is not allowed"),
        ({"0001_a.sql": "CREATE INDEX CONCURRENTLY i ON t (x);"}, "cannot run inside a transaction"),
    ],
)
async def test_bad_migration_files_are_refused_before_anything_runs(fresh, migrations_dir, files, message):
    with pytest.raises(MigrationFileError, match=message):
        await migrate(fresh, migrations_dir(files))
    assert await schema_version(fresh) == 0


def test_other_files_in_the_folder_are_ignored(migrations_dir):
    folder = migrations_dir({"0001_a.sql": "SELECT 1;", "README.md": "notes"})
    assert [m.label for m in load_migrations(folder)] == ["0001_a"]


def test_both_backends_have_the_same_migrations():
    sqlite = [m.label for m in load_migrations(SQLITE.migrations_dir, SQLITE)]
    postgresql = [m.label for m in load_migrations(POSTGRESQL.migrations_dir, POSTGRESQL)]
    assert sqlite == postgresql
    assert sqlite[0] == "0001_users"
    assert sorted(p.name for p in MIGRATIONS_ROOT.iterdir() if p.is_dir()) == ["postgresql", "sqlite"]


async def test_postgresql_records_each_migration_it_applied(fresh):
    if fresh.dialect is SQLITE:
        pytest.skip("SQLite keeps only the number, in PRAGMA user_version")
    report = await migrate(fresh)
    rows = await fresh.fetchall("SELECT version, name FROM schema_migrations ORDER BY version")
    assert [f"{r['version']:04d}_{r['name']}" for r in rows] == list(report.applied)


# -- start-up and the command line ---------------------------------------------------------------


async def test_app_start_up_applies_migrations(tmp_path, redis_url, aiohttp_client, empty_config):
    config = make_test_config(database=tmp_path / "app.db", redis_url=redis_url, database_url=empty_config.url)
    client = await aiohttp_client(create_app(config))
    assert (await client.get("/api/v1/users")).status == 200


async def start_up(config) -> None:
    """Start the app as run_app does; raises what its start-up raises."""
    runner = web.AppRunner(create_app(config))
    try:
        await runner.setup()
    finally:
        await runner.cleanup()


async def test_app_refuses_to_start_on_a_newer_database(tmp_path, redis_url, empty_config):
    await set_version(empty_config, 999)
    config = make_test_config(database=Path(empty_config.path), redis_url=redis_url, database_url=empty_config.url)
    with pytest.raises(DatabaseTooNew, match="schema version 999, newer than this code"):
        await start_up(config)


async def test_app_without_auto_migrate_refuses_pending_migrations(tmp_path, redis_url, empty_config):
    config = make_test_config(database=tmp_path / "app.db", redis_url=redis_url, database_url=empty_config.url)
    config = dataclasses.replace(config, database=dataclasses.replace(config.database, auto_migrate=False))
    with pytest.raises(PendingMigrations, match="python -m server migrate"):
        await start_up(config)


def run_cli(*args: str, db_path: Path, db_url: str = "", **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=PROJECT_ROOT,
        env={**os.environ, "DATABASE_PATH": str(db_path), "DATABASE_URL": db_url, "LOG_LEVEL": "WARNING", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_migrate_command_says_what_it_did(empty_config):
    db_path, url = Path(empty_config.path), empty_config.url
    first = await asyncio.to_thread(run_cli, "-m", "server", "migrate", db_path=db_path, db_url=url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.strip().startswith(f"database {url or db_path}: applied 0001_users")
    second = await asyncio.to_thread(run_cli, "-m", "server", "migrate", db_path=db_path, db_url=url)
    assert second.returncode == 0, second.stderr
    assert "up to date at schema version" in second.stdout

    await set_version(empty_config, 999)
    newer = await asyncio.to_thread(run_cli, "-m", "server", "migrate", db_path=db_path, db_url=url)
    assert newer.returncode == 1
    assert newer.stderr.startswith("migrate: database ") and "newer than this code" in newer.stderr
    assert "Traceback" not in newer.stderr


async def test_serve_refuses_a_newer_database_with_one_clear_line(empty_config):
    await set_version(empty_config, 999)
    result = await asyncio.to_thread(
        run_cli, "-m", "server", "serve", "--port", "0", db_path=Path(empty_config.path), db_url=empty_config.url
    )
    assert result.returncode == 1
    assert "serve: database " in result.stderr and "schema version 999, newer than this code" in result.stderr
    assert "Traceback" not in result.stderr


async def test_serve_without_auto_migrate_names_the_command_to_run(empty_config):
    result = await asyncio.to_thread(
        run_cli,
        "-m",
        "server",
        "serve",
        "--port",
        "0",
        db_path=Path(empty_config.path),
        db_url=empty_config.url,
        DATABASE_AUTO_MIGRATE="false",
    )
    assert result.returncode == 1
    assert "pending: 0001_users" in result.stderr and "run `python -m server migrate`" in result.stderr
    assert "Traceback" not in result.stderr


async def test_many_processes_opening_a_fresh_file_at_once_all_succeed(tmp_path):
    # Switching a fresh file to WAL can answer "database is locked" without waiting (SQLite's
    # deadlock avoidance): seen in 3 of 30 rounds of 8 raw connections before Database retried.
    for round_ in range(10):
        path = tmp_path / f"fresh-{round_}.db"
        dbs = [SQLiteDatabase(path, read_connections=1) for _ in range(8)]
        results = await asyncio.gather(*(d.open() for d in dbs), return_exceptions=True)
        try:
            assert [r for r in results if r is not None] == []
            assert await dbs[0].fetchval("PRAGMA journal_mode") == "wal"
        finally:
            await asyncio.gather(*(d.close() for d in dbs))
