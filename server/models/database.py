"""The SQLite database: one writer connection behind a lock, a small pool of readers."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

log = logging.getLogger(__name__)

Params = Sequence[Any] | dict[str, Any]


class Transaction:
    """Statements run inside one `BEGIN IMMEDIATE ... COMMIT` on the writer connection."""

    __slots__ = ("_conn",)

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> aiosqlite.Cursor:
        return await self._conn.execute(sql, params)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        await self._conn.executemany(sql, rows)

    async def fetchone(self, sql: str, params: Params = ()) -> aiosqlite.Row | None:
        async with self._conn.execute(sql, params) as cursor:
            return await cursor.fetchone()

    async def fetchall(self, sql: str, params: Params = ()) -> list[aiosqlite.Row]:
        async with self._conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def fetchval(self, sql: str, params: Params = ()) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]


class Database:
    """Owns the connections. Writes are serialised; reads run on separate connections.

    A single shared connection would let one request's rollback swallow another's writes, and
    deferred transactions lose updates under concurrency (NOTES.md §4): every write unit here is
    `BEGIN IMMEDIATE` on the one writer connection, under one lock, with nothing else awaited.
    """

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000, read_connections: int = 2) -> None:
        self.path = str(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._read_count = read_connections
        self._writer: aiosqlite.Connection | None = None
        self._readers: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
        self._all_readers: list[aiosqlite.Connection] = []
        self._write_lock = asyncio.Lock()

    async def _connect(self) -> aiosqlite.Connection:
        conn = await aiosqlite.connect(
            self.path, timeout=self._busy_timeout_ms / 1000, isolation_level=None
        )
        conn.row_factory = aiosqlite.Row
        await conn.execute("PRAGMA journal_mode=WAL")
        await conn.execute("PRAGMA synchronous=NORMAL")
        await conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
        await conn.execute("PRAGMA foreign_keys=ON")
        return conn

    async def open(self) -> None:
        """Open the writer and the readers; creates the file (and its folder) when missing."""
        if self.path != ":memory:" and not self.path.startswith("file:"):
            await asyncio.to_thread(Path(self.path).parent.mkdir, parents=True, exist_ok=True)
        self._writer = await self._connect()
        for _ in range(self._read_count):
            conn = await self._connect()
            self._all_readers.append(conn)
            self._readers.put_nowait(conn)

    async def close(self) -> None:
        """Close every connection; safe to call twice."""
        async with self._write_lock:
            conns = [c for c in [self._writer, *self._all_readers] if c is not None]
            self._writer = None
            self._all_readers = []
            self._readers = asyncio.Queue()
        for conn in conns:
            await conn.close()

    @property
    def writer(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise RuntimeError("database is not open")
        return self._writer

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """One write unit: `BEGIN IMMEDIATE`, committed on success, rolled back on any error."""
        async with self._write_lock:
            conn = self.writer
            await conn.execute("BEGIN IMMEDIATE")
            try:
                yield Transaction(conn)
            except BaseException:
                await conn.execute("ROLLBACK")
                raise
            else:
                await conn.execute("COMMIT")

    async def execute(self, sql: str, params: Params = ()) -> tuple[int | None, int]:
        """Run one write statement in its own transaction; returns (lastrowid, rowcount)."""
        async with self.transaction() as tx:
            cursor = await tx.execute(sql, params)
            return cursor.lastrowid, cursor.rowcount

    @asynccontextmanager
    async def reader(self) -> AsyncIterator[aiosqlite.Connection]:
        """Borrow a read connection (WAL: readers never block the writer or each other)."""
        conn = await self._readers.get()
        try:
            yield conn
        finally:
            self._readers.put_nowait(conn)

    async def fetchone(self, sql: str, params: Params = ()) -> aiosqlite.Row | None:
        async with self.reader() as conn, conn.execute(sql, params) as cursor:
            return await cursor.fetchone()

    async def fetchall(self, sql: str, params: Params = ()) -> list[aiosqlite.Row]:
        async with self.reader() as conn, conn.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def fetchval(self, sql: str, params: Params = ()) -> Any:
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]

    async def ping(self) -> None:
        """Raise unless a read round trip works."""
        await self.fetchval("SELECT 1")
