"""seed.py and `python -m server seed`: example data through the model API, safe to run again and again."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from server.config import PROJECT_ROOT, DatabaseConfig
from server.models.backends import make_database
from server.models.dialect import SQLITE
from server.models.migrate import migrate

pytestmark = pytest.mark.both_backends


@pytest.fixture
def seed_url(backend, request) -> str:
    """An empty database of the backend ("" for SQLite: the test names a new file)."""
    if backend == "sqlite":
        return ""
    return request.getfixturevalue("postgres_databases")(migrated=False)


def run(args: list[str], db_path: Path, cwd: Path, db_url: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, "DATABASE_PATH": str(db_path), "DATABASE_URL": db_url, "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def users(cfg: DatabaseConfig) -> list[tuple[int, str]]:
    db = make_database(cfg, small=True)
    await db.open()
    try:
        return [tuple(r) for r in await db.fetchall("SELECT id, name FROM users ORDER BY id")]
    finally:
        await db.close()


async def test_seed_py_on_a_fresh_database_then_again(tmp_path, seed_url):
    db_path = tmp_path / "var" / "seed.db"  # the folder does not exist yet either
    cfg = DatabaseConfig(url=seed_url, path=str(db_path))
    first = await asyncio.to_thread(run, [str(PROJECT_ROOT / "seed.py")], db_path, tmp_path, seed_url)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith(f"database {seed_url or db_path}: applied 0001_users")
    assert lines[1] == "User.create(id=1): created <User id=1 name='Seed user'>"
    assert lines[2] == "user.save(): wrote name -> <User id=1 name='Asdf'>"
    assert lines[3] == "User.where(name='Asdf').all(): [<User id=1 name='Asdf'>]"
    assert lines[-1] == "User.count(): 1"
    assert await users(cfg) == [(1, "Asdf")]

    second = await asyncio.to_thread(run, [str(PROJECT_ROOT / "seed.py")], db_path, tmp_path, seed_url)
    assert second.returncode == 0, second.stderr
    lines = second.stdout.splitlines()
    assert lines[0] == "User.get_or_none(1): found <User id=1 name='Asdf'>"
    assert lines[1] == "user.save(): nothing to write, the name is already 'Asdf'"
    assert await users(cfg) == [(1, "Asdf")]
    if not seed_url:
        assert list(tmp_path.iterdir()) == [tmp_path / "var"]  # nothing written outside the database's folder


async def test_server_seed_command_renames_an_existing_user_1(tmp_path, seed_url):
    db_path = tmp_path / "seed.db"
    cfg = DatabaseConfig(url=seed_url, path=str(db_path))
    if not seed_url:
        conn = sqlite3.connect(db_path)  # a database that already has users, made by an older schema step
        conn.executescript((SQLITE.migrations_dir / "0001_users.sql").read_text())
        conn.execute("PRAGMA user_version = 1")
        conn.commit()
        conn.close()
    db = make_database(cfg, small=True)
    await db.open()
    try:
        if seed_url:
            await migrate(db)
        await db.execute("INSERT INTO users (name) VALUES ('Someone'), ('Other')")
    finally:
        await db.close()
    result = await asyncio.to_thread(run, ["-m", "server", "seed"], db_path, PROJECT_ROOT, seed_url)
    assert result.returncode == 0, result.stderr
    assert "User.get_or_none(1): found <User id=1 name='Someone'>" in result.stdout
    assert "user.save(): wrote name -> <User id=1 name='Asdf'>" in result.stdout
    assert await users(cfg) == [(1, "Asdf"), (2, "Other")]
