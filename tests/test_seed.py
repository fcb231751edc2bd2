"""seed.py and `python -m server seed`: example data through the model API, safe to run again and again."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from server.config import PROJECT_ROOT
from server.models.migrate import MIGRATIONS_DIR


def run(args: list[str], db_path: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env={**os.environ, "DATABASE_PATH": str(db_path), "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def users(db_path: Path) -> list[tuple[int, str]]:
    conn = sqlite3.connect(db_path)
    try:
        return conn.execute("SELECT id, name FROM users ORDER BY id").fetchall()
    finally:
        conn.close()


def test_seed_py_on_a_fresh_database_then_again(tmp_path):
    db_path = tmp_path / "var" / "seed.db"  # the folder does not exist yet either
    first = run([str(PROJECT_ROOT / "seed.py")], db_path, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith(f"database {db_path}: applied 0001_users")
    assert lines[1] == "User.create(id=1): created <User id=1 name='Seed user'>"
    assert lines[2] == "user.save(): wrote name -> <User id=1 name='Asdf'>"
    assert lines[3] == "User.where(name='Asdf').all(): [<User id=1 name='Asdf'>]"
    assert lines[-1] == "User.count(): 1"
    assert users(db_path) == [(1, "Asdf")]

    second = run([str(PROJECT_ROOT / "seed.py")], db_path, cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    lines = second.stdout.splitlines()
    assert lines[0] == "User.get_or_none(1): found <User id=1 name='Asdf'>"
    assert lines[1] == "user.save(): nothing to write, the name is already 'Asdf'"
    assert users(db_path) == [(1, "Asdf")]
    assert list(tmp_path.iterdir()) == [tmp_path / "var"]  # nothing written outside the database's folder


def test_server_seed_command_renames_an_existing_user_1(tmp_path):
    db_path = tmp_path / "seed.db"
    conn = sqlite3.connect(db_path)  # a database that already has users, made by an older schema step
    conn.executescript((MIGRATIONS_DIR / "0001_users.sql").read_text())
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO users (name) VALUES ('Someone'), ('Other')")
    conn.commit()
    conn.close()
    result = run(["-m", "server", "seed"], db_path, cwd=PROJECT_ROOT)
    assert result.returncode == 0, result.stderr
    assert "User.get_or_none(1): found <User id=1 name='Someone'>" in result.stdout
    assert "user.save(): wrote name -> <User id=1 name='Asdf'>" in result.stdout
    assert users(db_path) == [(1, "Asdf"), (2, "Other")]
