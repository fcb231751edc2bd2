"""Migrations: numbered `.sql` files applied in order, each in a transaction, recorded in PRAGMA user_version."""

from __future__ import annotations

import asyncio
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from server.config import DatabaseConfig
from server.models.database import Database

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

FILENAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# The runner owns the transaction; a migration that commits would apply half of itself.
TRANSACTION_CONTROL_RE = re.compile(r"^\s*(BEGIN|COMMIT|END|ROLLBACK|SAVEPOINT|RELEASE|VACUUM)\b", re.IGNORECASE)

GET_VERSION_SQL = "PRAGMA user_version"


class SchemaError(Exception):
    """The database schema and the code do not match, or a migration failed; the message says what to do."""


class MigrationFileError(SchemaError):
    """The migration files themselves are wrong (bad name, gap, duplicate, transaction control)."""


class DatabaseTooNew(SchemaError):
    """The database was migrated by newer code than this."""


class PendingMigrations(SchemaError):
    """Migrations are missing and applying them at start-up is switched off."""


class MigrationFailed(SchemaError):
    """A migration raised; its transaction was rolled back."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.version:04d}_{self.name}"


@dataclass(frozen=True, slots=True)
class MigrationReport:
    before: int
    after: int
    latest: int
    applied: tuple[str, ...]


def split_statements(script: str) -> list[str]:
    """The statements of an SQL script, split where SQLite itself says a statement is complete.

    `sqlite3.complete_statement` knows string literals, comments and `CREATE TRIGGER ... END`, so
    semicolons inside those do not split. `executescript` cannot be used: it commits first.
    """
    statements: list[str] = []
    start = 0
    for index, char in enumerate(script):
        if char == ";" and sqlite3.complete_statement(script[start : index + 1]):
            statements.append(script[start : index + 1])
            start = index + 1
    statements.append(script[start:])
    return [s.strip() for s in statements if _has_code(s)]


def _has_code(chunk: str) -> bool:
    """False for a chunk of only whitespace, comments and semicolons."""
    text = re.sub(r"--[^\n]*", "", chunk)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    return bool(text.replace(";", "").strip())


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration in `directory`, in order; raises MigrationFileError when the set is not 1..N."""
    migrations: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = FILENAME_RE.match(path.name)
        if match is None:
            raise MigrationFileError(f"{path.name}: migration files are named NNNN_name.sql (lowercase name)")
        statements = tuple(split_statements(path.read_text(encoding="utf-8")))
        for statement in statements:
            control = TRANSACTION_CONTROL_RE.match(statement)
            if control is not None:
                raise MigrationFileError(
                    f"{path.name}: {control.group(1).upper()} is not allowed: "
                    "each migration already runs in its own transaction"
                )
        migrations.append(Migration(int(match.group(1)), match.group(2), statements))
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationFileError(
                f"{migration.label}.sql: expected migration {expected:04d} here; "
                "numbers start at 0001 and have no gaps or duplicates"
            )
    return migrations


async def schema_version(db: Database) -> int:
    return int(await db.fetchval(GET_VERSION_SQL))


def _too_new(db: Database, version: int, latest: int) -> DatabaseTooNew:
    return DatabaseTooNew(
        f"database {db.path} is at schema version {version}, newer than this code knows "
        f"(its latest migration is {latest:04d}); run the code that migrated it, or restore a "
        "backup made for this version"
    )


async def migrate(db: Database, directory: Path = MIGRATIONS_DIR) -> MigrationReport:
    """Apply every missing migration, each in its own transaction; safe to run from several processes at once.

    Raises DatabaseTooNew, MigrationFileError, or MigrationFailed (that migration rolled back,
    the ones before it kept).
    """
    migrations = await asyncio.to_thread(load_migrations, directory)
    latest = len(migrations)
    before = await schema_version(db)
    if before > latest:
        raise _too_new(db, before, latest)
    applied: list[str] = []
    version = before
    for migration in migrations[before:]:
        async with db.transaction() as tx:
            # Re-read under the write lock: another process may have applied it since.
            version = int(await tx.fetchval(GET_VERSION_SQL))
            if version > latest:
                raise _too_new(db, version, latest)
            if version >= migration.version:
                continue
            for number, statement in enumerate(migration.statements, start=1):
                try:
                    await tx.execute(statement)
                except sqlite3.Error as exc:
                    raise MigrationFailed(
                        f"migration {migration.label} failed at statement {number} and was rolled back "
                        f"(database {db.path} stays at version {version}): {exc}"
                    ) from exc
            # PRAGMA takes no parameters; the version is an int we produced.
            await tx.execute(f"PRAGMA user_version = {int(migration.version)}")
            version = migration.version
        applied.append(migration.label)
    return MigrationReport(before=before, after=max(version, before), latest=latest, applied=tuple(applied))


async def check_schema(db: Database, directory: Path = MIGRATIONS_DIR) -> int:
    """The schema version when it is what the code expects; raises DatabaseTooNew or PendingMigrations."""
    migrations = await asyncio.to_thread(load_migrations, directory)
    latest = len(migrations)
    version = await schema_version(db)
    if version > latest:
        raise _too_new(db, version, latest)
    if version < latest:
        pending = ", ".join(m.label for m in migrations[version:])
        raise PendingMigrations(
            f"database {db.path} is at schema version {version}, this code needs {latest} "
            f"(pending: {pending}); run `python -m server migrate`, or set database.auto_migrate: true"
        )
    return version


async def prepare_database(db: Database, *, auto_migrate: bool, directory: Path = MIGRATIONS_DIR) -> MigrationReport:
    """What start-up does: apply missing migrations when `auto_migrate`, else refuse unless up to date."""
    if auto_migrate:
        return await migrate(db, directory)
    version = await check_schema(db, directory)
    return MigrationReport(before=version, after=version, latest=version, applied=())


def describe(report: MigrationReport, path: str) -> str:
    """One line for people: what a migration run did."""
    if not report.applied:
        return f"database {path}: up to date at schema version {report.after}"
    return f"database {path}: applied {', '.join(report.applied)} (schema version {report.before} -> {report.after})"


async def migrate_command(cfg: DatabaseConfig, out: Callable[[str], object] = print) -> int:
    """`python -m server migrate`: apply what is missing and say what was done; raises SchemaError."""
    db = Database(cfg.path, busy_timeout_ms=cfg.busy_timeout_ms, read_connections=1)
    await db.open()
    try:
        report = await migrate(db)
    finally:
        await db.close()
    out(describe(report, db.path))
    return 0
