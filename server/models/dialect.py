"""The SQL that differs between SQLite and PostgreSQL, chosen in one place per backend.

Model and query code asks its database's `dialect` instead of testing which backend it runs on.
Where both engines accept one form it is written once in the callers (`IS DISTINCT FROM`,
`TRUE`/`FALSE`, `FROM (...) AS sub`, `INSERT ... RETURNING`); what cannot be shared is here.
Each difference was checked on SQLite 3.40 and PostgreSQL 15 (docs/databases.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.models.sqltext import numbered_placeholders
from server.models.values import sql_value

MIGRATIONS_ROOT = Path(__file__).resolve().parent / "migrations"


def _same(sql: str) -> str:
    return sql


@dataclass(frozen=True, slots=True)
class Dialect:
    name: str
    # `?` placeholders as the driver wants them (PostgreSQL: $1, $2, ..., cached per statement).
    placeholders: Callable[[str], str]
    # `LIMIT ?` with no limit (an OFFSET alone needs a LIMIT): SQLite takes -1, PostgreSQL NULL.
    no_limit: int | None
    # SQLite's LIKE ignores ASCII case; PostgreSQL's ILIKE does the same under COLLATE "C".
    like: str
    # A caller's own LIKE pattern: SQLite has no escape character unless told, PostgreSQL has `\`.
    raw_like_escape: str
    # SQLite sorts NULL first ascending and last descending; PostgreSQL the other way round.
    explicit_null_order: bool
    bool_as_int: bool
    nul_in_text: bool
    migrations_dir: Path
    # Migrations bookkeeping: SQLite keeps the version in the file header (PRAGMA user_version);
    # PostgreSQL in a table, created under an advisory lock that serialises concurrent migrators
    # (two concurrent CREATE TABLE IF NOT EXISTS may otherwise fail with a unique violation).
    version_table_exists_sql: str | None
    create_version_table_sql: str | None
    lock_migrations_sql: str | None
    get_version_sql: str
    # The applied migrations past a version (one parameter) that older code cannot run on (those
    # not marked `-- expand`); None where only the number is kept (SQLite: any newer one counts).
    breaking_after_sql: str | None

    def set_version(self, version: int, name: str, expand: bool) -> tuple[str, tuple[Any, ...]]:
        """The statement (and its parameters) recording that migration `version` was applied."""
        if self.name == "sqlite":
            return f"PRAGMA user_version = {int(version)}", ()  # PRAGMA takes no parameters
        return "INSERT INTO schema_migrations (version, name, expand) VALUES (?, ?, ?)", (int(version), name, expand)

    def value(self, value: Any) -> Any:
        """A Python value as a parameter of this backend; raises InvalidQuery for what cannot be one."""
        return sql_value(value, bool_as_int=self.bool_as_int, nul_in_text=self.nul_in_text)

    def order_term(self, quoted_column: str, descending: bool, *, nullable: bool) -> str:
        """`column ASC|DESC`, with the NULL order SQLite uses by default made explicit where it differs."""
        direction = "DESC" if descending else "ASC"
        if not (self.explicit_null_order and nullable):
            return f"{quoted_column} {direction}"
        return f"{quoted_column} {direction} NULLS {'LAST' if descending else 'FIRST'}"

    def after_explicit_id_sql(self, quoted_table: str, primary_key: str) -> str | None:
        """A statement to run after inserting a row with an explicit primary key, or None.

        SQLite's AUTOINCREMENT continues after the largest id ever used; a PostgreSQL sequence
        does not see explicit ids, and its next value would collide. The sequence only moves
        forward, like AUTOINCREMENT (one parameter: the id just inserted).
        """
        if self.name != "postgresql":
            return None
        table = quoted_table.replace("'", "''")
        return (
            "SELECT setval(seq::regclass, GREATEST(?::bigint, COALESCE(pg_sequence_last_value(seq::regclass), 0))) "
            f"FROM pg_get_serial_sequence('{table}', '{primary_key}') AS seq WHERE seq IS NOT NULL"
        )


SQLITE = Dialect(
    name="sqlite",
    placeholders=_same,
    no_limit=-1,
    like="LIKE",
    raw_like_escape="",
    explicit_null_order=False,
    bool_as_int=True,
    nul_in_text=True,
    migrations_dir=MIGRATIONS_ROOT / "sqlite",
    version_table_exists_sql=None,
    create_version_table_sql=None,
    lock_migrations_sql=None,  # BEGIN IMMEDIATE already makes every other writer wait
    get_version_sql="PRAGMA user_version",
    breaking_after_sql=None,
)

POSTGRESQL = Dialect(
    name="postgresql",
    placeholders=numbered_placeholders,
    no_limit=None,
    like="ILIKE",
    raw_like_escape=" ESCAPE ''",
    explicit_null_order=True,
    bool_as_int=False,
    nul_in_text=False,
    migrations_dir=MIGRATIONS_ROOT / "postgresql",
    version_table_exists_sql="SELECT to_regclass('schema_migrations') IS NOT NULL",
    create_version_table_sql=(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
        "expand boolean NOT NULL DEFAULT false, applied_at timestamptz NOT NULL DEFAULT now())"
    ),
    # Any constant shared by every process of the deployment: "migrate" in ASCII.
    lock_migrations_sql="SELECT pg_advisory_xact_lock(109105103114097116)",
    get_version_sql="SELECT COALESCE(max(version), 0) FROM schema_migrations",
    breaking_after_sql="SELECT version, name FROM schema_migrations WHERE version > ? AND NOT expand ORDER BY version",
)
