"""What every database backend offers the models: reads, writes, units of work, a ping and figures.

Two backends implement it: `SQLiteDatabase` (server/models/sqlite.py, the embedded default) and
`PostgresDatabase` (server/models/postgres.py). SQL is written once with `?` placeholders; each
backend's `dialect` holds the SQL that differs. Driver errors come out as the same domain errors
on both (server/models/errors.py).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any

from server.models.dialect import Dialect

Params = Sequence[Any]
# A row indexes by position and by column name (sqlite3.Row and asyncpg.Record both do).
Row = Any


class Reads(ABC):
    """fetchone/fetchval on top of fetchall (shared by the databases and their transactions)."""

    __slots__ = ()

    @abstractmethod
    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """Every row of a query."""

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        """The first row (the statement's other rows are read too: add LIMIT 1 where many match)."""
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def fetchval(self, sql: str, params: Params = ()) -> Any:
        """The first column of the first row, or None."""
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]


class Transaction(Reads):
    """Statements of one unit of work: committed together, or rolled back together on an error."""

    __slots__ = ()

    @abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; the number of rows it changed."""

    @abstractmethod
    async def execute_returning(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one write statement with a RETURNING clause; the rows it returned."""

    @abstractmethod
    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        """Run one statement once per row of parameters."""

    @abstractmethod
    async def execute_raw(self, sql: str) -> None:
        """Run one statement exactly as written: no parameters, no placeholder rewriting (migrations)."""


class Database(Reads):
    """A database: open it, use it, close it. Reads and single writes outside a unit are atomic alone.

    `transaction()` opens a unit of work. Model calls made inside it by the same task join it
    (they run on its connection and see its uncommitted writes); `transaction()` called again
    inside a unit is a savepoint, rolled back alone when its block raises.
    """

    dialect: Dialect

    @property
    @abstractmethod
    def label(self) -> str:
        """Where the data lives, for messages and logs (a file path, or a URL without password)."""

    @abstractmethod
    async def open(self) -> None:
        """Connect; raises DatabaseUnavailable when the database cannot be reached."""

    @abstractmethod
    async def close(self) -> None:
        """Close every connection; safe to call twice."""

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """One unit of work (a savepoint when the task is already inside one)."""

    @abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one write statement atomically (inside the caller's unit when there is one); rows changed."""

    @abstractmethod
    async def execute_returning(self, sql: str, params: Params = ()) -> list[Row]:
        """Run one write statement with a RETURNING clause atomically; the rows it returned."""

    @abstractmethod
    def in_use(self) -> int:
        """How many connections are lent to units of work right now."""

    @abstractmethod
    async def stats(self) -> dict[str, Any]:
        """Figures for operators: size on disk, connections; read-only, cheap."""

    async def ping(self) -> None:
        """Raise unless a read round trip works."""
        await self.fetchval("SELECT 1")
