"""Fixtures for the data layer: both backends, a migrated database of the test's own, migration folders.

A module marked `pytestmark = pytest.mark.both_backends` runs each test that (directly or
through `db`, `config`, `client`...) uses the `backend` fixture once on SQLite and once on
PostgreSQL. PostgreSQL is one throwaway server for the session (testing/postgres.py); each test
gets a fresh database copied from a migrated template. Where PostgreSQL cannot run, its half
of the tests is skipped, with the reason in the summary.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from server.config import PROJECT_ROOT, DatabaseConfig
from server.models.backends import make_database
from server.models.database import Database
from server.models.migrate import migrate
from testing.postgres import DatabaseFactory, PostgresProcess, unavailable_reason

BACKENDS = ("sqlite", "postgresql")
MIGRATED_TEMPLATE = "migrated_template"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "both_backends: run the module's database tests on SQLite and PostgreSQL")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_backends"):
        metafunc.parametrize("backend", BACKENDS, indirect=True)


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The database backend of this test: "sqlite" unless the module runs on both."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[DatabaseFactory]:
    """One throwaway PostgreSQL for the session, a migrated template, and copies made ahead."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"PostgreSQL tests skipped: {reason}")
    with PostgresProcess() as server:
        server.create_database(MIGRATED_TEMPLATE)
        result = subprocess.run(  # through the real command, as a deploy runs it
            [sys.executable, "-m", "server", "migrate"],
            cwd=PROJECT_ROOT,
            env={**os.environ, "DATABASE_URL": server.url(MIGRATED_TEMPLATE), "LOG_LEVEL": "WARNING"},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        factory = DatabaseFactory(server, {MIGRATED_TEMPLATE: 2, "template1": 1})
        try:
            yield factory
        finally:
            factory.close()


@pytest.fixture
def postgres_databases(request: pytest.FixtureRequest) -> Iterator[Callable[..., str]]:
    """Make PostgreSQL databases for this test (`migrated=False`: empty); all dropped after it."""
    factory: DatabaseFactory = request.getfixturevalue("postgres_server")
    made: list[str] = []

    def make(*, migrated: bool = True) -> str:
        name = factory.take(MIGRATED_TEMPLATE if migrated else "template1")
        made.append(name)
        return factory.server.url(name)

    yield make
    for name in made:
        factory.drop(name)


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest) -> str:
    """The test config's database.url: "" (SQLite) or a fresh migrated PostgreSQL database."""
    if backend == "sqlite":
        return ""
    make: Callable[..., str] = request.getfixturevalue("postgres_databases")
    return make()


@pytest.fixture
def database_config(tmp_path: Path, database_url: str) -> DatabaseConfig:
    return DatabaseConfig(url=database_url, path=str(tmp_path / "data.db"), read_connections=2)


@pytest.fixture
async def db(database_config: DatabaseConfig) -> AsyncIterator[Database]:
    """An open Database of the test's backend with every migration applied."""
    database = make_database(database_config)
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
