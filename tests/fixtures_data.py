"""Fixtures for the data layer: a migrated SQLite database of the test's own, migration folders."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from server.models.database import Database
from server.models.migrate import migrate


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    """A Database on a fresh file with every migration applied."""
    database = Database(tmp_path / "data.db", busy_timeout_ms=5000, read_connections=2)
    await database.open()
    await migrate(database)
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def migrations_dir(tmp_path: Path) -> Callable[..., Path]:
    """Write migration files ({"0001_a.sql": "..."}) into a fresh folder and return it."""
    counter = iter(range(1000))

    def write(files: dict[str, str]) -> Path:
        folder = tmp_path / f"migrations-{next(counter)}"
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_text(text)
        return folder

    return write
