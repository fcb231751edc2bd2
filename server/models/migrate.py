"""Migrations: numbered `.sql` files per backend, applied in order, each in a transaction, recorded.

`migrations/sqlite/` and `migrations/postgresql/` hold the same numbered files (a test checks the
labels match), each written in its engine's SQL. SQLite records the version in PRAGMA
user_version; PostgreSQL in a `schema_migrations` table, each migration behind an advisory lock,
so processes on several hosts may start (and migrate) at once.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from server.config import DatabaseConfig
from server.models.backends import make_database
from server.models.database import Database, Reads
from server.models.dialect import MIGRATIONS_ROOT, SQLITE, Dialect
from server.models.sqltext import SqlTextError, leading_words, split_script

__all__ = [
    "MIGRATIONS_ROOT",
    "DatabaseTooNew",
    "MigrationFailed",
    "MigrationFileError",
    "PendingMigrations",
    "SchemaError",
    "check_schema",
    "load_migrations",
    "migrate",
    "migrate_command",
    "prepare_database",
    "schema_version",
    "split_statements",
]

log = logging.getLogger(__name__)

FILENAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# The runner owns the transaction; a migration that commits would apply half of itself.
TRANSACTION_CONTROL = {"BEGIN", "COMMIT", "END", "ROLLBACK", "ABORT", "START", "SAVEPOINT", "RELEASE", "VACUUM"}


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


# A migration whose header says `-- expand` only adds (tables, nullable columns, indexes...):
# code from before it keeps working on the schema it leaves (README, "Expand and contract").
EXPAND_RE = re.compile(r"^\s*--\s*expand\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    statements: tuple[str, ...]
    expand: bool = False

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
    """The statements of a SQLite script, split where SQLite itself says a statement is complete.

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


def _statements(path: Path, dialect: Dialect) -> tuple[str, ...]:
    script = path.read_text(encoding="utf-8")
    if dialect is SQLITE:
        statements = split_statements(script)
    else:
        try:
            statements = split_script(script)
        except SqlTextError as exc:
            raise MigrationFileError(f"{path.name}: {exc}") from None
    for statement in statements:
        words = leading_words(statement, 4)
        if words and words[0] in TRANSACTION_CONTROL:
            raise MigrationFileError(
                f"{path.name}: {words[0]} is not allowed: each migration already runs in its own transaction"
            )
        if "CONCURRENTLY" in words:  # CREATE [UNIQUE] INDEX CONCURRENTLY, DROP INDEX ..., REINDEX ...
            raise MigrationFileError(
                f"{path.name}: {' '.join(words[:3])}... cannot run inside a transaction, and each migration "
                "runs in one; build such an index outside the migrations (README, expand/contract)"
            )
    return tuple(statements)


def _marked_expand(path: Path) -> bool:
    """Whether the comment lines heading the file include `-- expand`."""
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        if not line.lstrip().startswith("--"):
            return False
        if EXPAND_RE.match(line):
            return True
    return False


def load_migrations(directory: Path, dialect: Dialect = SQLITE) -> list[Migration]:
    """Every migration in `directory`, in order; raises MigrationFileError when the set is not 1..N."""
    migrations: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = FILENAME_RE.match(path.name)
        if match is None:
            raise MigrationFileError(f"{path.name}: migration files are named NNNN_name.sql (lowercase name)")
        expand = _marked_expand(path)
        migrations.append(Migration(int(match.group(1)), match.group(2), _statements(path, dialect), expand))
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise MigrationFileError(
                f"{migration.label}.sql: expected migration {expected:04d} here; "
                "numbers start at 0001 and have no gaps or duplicates"
            )
    return migrations


async def _version(reads: Reads, dialect: Dialect) -> int:
    if dialect.version_table_exists_sql is not None and not await reads.fetchval(dialect.version_table_exists_sql):
        return 0
    return int(await reads.fetchval(dialect.get_version_sql))


async def schema_version(db: Database) -> int:
    """The number of the last migration applied to `db` (0 for a new database)."""
    return await _version(db, db.dialect)


def _too_new(db: Database, version: int, latest: int, breaking: str = "") -> DatabaseTooNew:
    return DatabaseTooNew(
        f"database {db.label} is at schema version {version}, newer than this code knows "
        f"(its latest migration is {latest:04d}){breaking}; run the code that migrated it, or restore a "
        "backup made for this version"
    )


async def _refuse_unless_compatible(db: Database, reads: Reads, version: int, latest: int) -> None:
    """Raise DatabaseTooNew unless every migration past `latest` was marked `-- expand`.

    Expand-only migrations leave a schema the older code still runs on: during a rolling deploy
    the hosts not yet updated keep starting after `migrate` ran (PostgreSQL records the mark;
    SQLite keeps only the number, so any newer schema is refused there).
    """
    sql = db.dialect.breaking_after_sql
    if sql is None:
        raise _too_new(db, version, latest)
    rows = await reads.fetchall(sql, (latest,))
    if rows:
        labels = ", ".join(f"{r[0]:04d}_{r[1]}" for r in rows)
        raise _too_new(db, version, latest, f", and {labels} not marked -- expand")
    log.warning(
        "database %s is at schema version %d, past this code's %d, by expand-only migrations: starting",
        db.label,
        version,
        latest,
    )


async def _load(db: Database, directory: Path | None) -> list[Migration]:
    return await asyncio.to_thread(load_migrations, directory or db.dialect.migrations_dir, db.dialect)


async def migrate(db: Database, directory: Path | None = None) -> MigrationReport:
    """Apply every missing migration, each in its own transaction; safe to run from several processes at once.

    `directory` defaults to the backend's own folder. Raises DatabaseTooNew, MigrationFileError,
    or MigrationFailed (that migration rolled back, the ones before it kept).
    """
    dialect = db.dialect
    migrations = await _load(db, directory)
    latest = len(migrations)
    before = await schema_version(db)
    if before > latest:
        await _refuse_unless_compatible(db, db, before, latest)
    applied: list[str] = []
    version = before
    for migration in migrations[before:]:
        async with db.transaction() as tx:
            if dialect.lock_migrations_sql is not None:
                await tx.execute_raw(dialect.lock_migrations_sql)  # held until this transaction ends
            if dialect.create_version_table_sql is not None:
                await tx.execute_raw(dialect.create_version_table_sql)
            # Re-read under the lock: another process may have applied it since.
            version = await _version(tx, dialect)
            if version > latest:
                await _refuse_unless_compatible(db, tx, version, latest)
            if version >= migration.version:
                continue
            for number, statement in enumerate(migration.statements, start=1):
                try:
                    await tx.execute_raw(statement)
                except Exception as exc:  # any failure: the unit rolls back (CancelledError passes)
                    raise MigrationFailed(
                        f"migration {migration.label} failed at statement {number} and was rolled back "
                        f"(database {db.label} stays at version {version}): {exc}"
                    ) from exc
            sql, params = dialect.set_version(migration.version, migration.name, migration.expand)
            await tx.execute(sql, params)
            version = migration.version
        applied.append(migration.label)
    return MigrationReport(before=before, after=max(version, before), latest=latest, applied=tuple(applied))


async def check_schema(db: Database, directory: Path | None = None) -> int:
    """The schema version when it is what the code expects; raises DatabaseTooNew or PendingMigrations."""
    migrations = await _load(db, directory)
    latest = len(migrations)
    version = await schema_version(db)
    if version > latest:
        await _refuse_unless_compatible(db, db, version, latest)
        return version
    if version < latest:
        pending = ", ".join(m.label for m in migrations[version:])
        raise PendingMigrations(
            f"database {db.label} is at schema version {version}, this code needs {latest} "
            f"(pending: {pending}); run `python -m server migrate`, or set database.auto_migrate: true"
        )
    return version


async def prepare_database(db: Database, *, auto_migrate: bool, directory: Path | None = None) -> MigrationReport:
    """What start-up does: apply missing migrations when `auto_migrate`, else refuse unless up to date."""
    if auto_migrate:
        return await migrate(db, directory)
    version = await check_schema(db, directory)
    return MigrationReport(before=version, after=version, latest=version, applied=())


def describe(report: MigrationReport, label: str) -> str:
    """One line for people: what a migration run did."""
    if not report.applied:
        return f"database {label}: up to date at schema version {report.after}"
    return f"database {label}: applied {', '.join(report.applied)} (schema version {report.before} -> {report.after})"


async def migrate_command(cfg: DatabaseConfig, out: Callable[[str], object] = print, *, check: bool = False) -> int:
    """`python -m server migrate [--check]`: apply what is missing (or only check) and say so; raises SchemaError."""
    db = make_database(cfg, small=True)
    await db.open()
    try:
        if check:
            version = await check_schema(db)
            out(f"database {db.label}: this code can run on schema version {version}")
            return 0
        report = await migrate(db)
    finally:
        await db.close()
    out(describe(report, db.label))
    return 0
