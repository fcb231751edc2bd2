"""The SQLite backend: one writer connection behind a lock, reader connections shared round-robin."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiosqlite

from server.models.database import Database, Params, Row, Transaction
from server.models.dialect import SQLITE
from server.models.errors import DatabaseUnavailable, InvalidQuery, UniqueViolation
from server.models.faults import StorageBusy, storage_fault

log = logging.getLogger(__name__)


def translate(exc: sqlite3.Error) -> Exception:
    """The domain error for a driver error (the same ones PostgreSQL's are mapped to), else `exc`.

    Storage faults (locked, full, read-only, I/O) stay as they are: server/models/faults.py
    tells them apart and the error middleware answers them 503.
    """
    message = str(exc)
    if isinstance(exc, sqlite3.IntegrityError):
        if message.startswith("UNIQUE constraint failed"):
            return UniqueViolation(message)
        return InvalidQuery(message)  # CHECK, NOT NULL, FOREIGN KEY
    if isinstance(exc, sqlite3.DataError):
        return InvalidQuery(message)
    return exc


class SQLiteTransaction(Transaction):
    """Statements inside one `BEGIN IMMEDIATE ... COMMIT` (or a savepoint) on the writer connection."""

    __slots__ = ("_conn",)

    def __init__(self, conn: aiosqlite.Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        try:
            cursor = await self._conn.execute(sql, params)
        except sqlite3.Error as exc:
            raise translate(exc) from exc
        return cursor.rowcount

    async def execute_returning(self, sql: str, params: Params = ()) -> list[Row]:
        return await self.fetchall(sql, params)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        try:
            await self._conn.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    async def execute_raw(self, sql: str) -> None:
        await self.execute(sql)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        # execute_fetchall is one hop to the connection's thread; execute + fetch + close are three.
        try:
            return list(await self._conn.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise translate(exc) from exc


class SQLiteDatabase(Database):
    """Owns the connections. Writes are serialised; reads run on separate connections.

    A single shared connection would let one request's rollback swallow another's writes, and
    deferred transactions lose updates under concurrency (docs/decisions.md, "SQLite: locking and the
    single writer"): every
    write unit here is `BEGIN IMMEDIATE` on the one writer connection, under one lock, with
    nothing else awaited. Other processes on the same file wait for SQLite's own lock (busy_timeout).

    Inside `transaction()`, the task that holds it may call `transaction()` again (a savepoint)
    and its reads go to the writer connection, so it sees its own uncommitted writes. Writes from
    other tasks wait for the unit to finish: don't start other tasks' writes from inside one.
    """

    dialect = SQLITE

    def __init__(
        self,
        path: str | Path,
        *,
        busy_timeout_ms: int = 5000,
        read_connections: int = 2,
        on_write_wait: Callable[[float], None] | None = None,
        max_waiting_writers: int = 256,
    ) -> None:
        self.path = str(path)
        # Called with the seconds each write unit waited for the writer (this process's lock,
        # then SQLite's lock held by other processes): the metrics' database wait.
        self.on_write_wait = on_write_wait
        self._busy_timeout_ms = busy_timeout_ms
        # Writers queued behind the write lock (another write holds it, perhaps itself waiting on
        # SQLite's lock for busy_timeout): past this many, a write fails at once (StorageBusy).
        self._max_waiting_writers = max_waiting_writers
        self._waiting_writers = 0
        self._read_count = read_connections
        self._writer: aiosqlite.Connection | None = None
        self._readers: list[aiosqlite.Connection] = []
        self._next_reader = 0
        self._write_lock = asyncio.Lock()
        # The task inside the current write unit, and how deep its savepoints go.
        self._owner: asyncio.Task[Any] | None = None
        self._depth = 0

    @property
    def label(self) -> str:
        return self.path

    async def _connect(self) -> aiosqlite.Connection:
        pending = aiosqlite.connect(self.path, timeout=self._busy_timeout_ms / 1000, isolation_level=None)
        # aiosqlite's worker thread is not a daemon: one connection left open by a failed start-up
        # would keep the process from ever exiting. Closing is still the rule; this is the backstop.
        pending._thread.daemon = True
        try:
            conn = await pending
        except sqlite3.Error as exc:
            if storage_fault(exc) is not None:
                raise DatabaseUnavailable(f"cannot open {self.path}: {exc}") from exc
            raise
        try:
            conn.row_factory = aiosqlite.Row
            await conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
            await self._enable_wal(conn)
            await conn.execute("PRAGMA synchronous=NORMAL")
            await conn.execute("PRAGMA foreign_keys=ON")
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, sqlite3.Error):
                raise translate(exc) from exc
            raise
        return conn

    async def _enable_wal(self, conn: aiosqlite.Connection) -> None:
        """Switch to WAL, retrying while another connection holds the file.

        On a fresh file opened by several processes at once (two web processes under circus),
        SQLite may answer SQLITE_BUSY at once instead of calling the busy handler: a reader
        upgrading its lock while another waits would deadlock. Only the first switch can collide.
        """
        deadline = asyncio.get_running_loop().time() + self._busy_timeout_ms / 1000
        while True:
            try:
                await conn.execute("PRAGMA journal_mode=WAL")
                return
            except aiosqlite.OperationalError as exc:
                if "locked" not in str(exc) or asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.02)

    async def open(self) -> None:
        """Open the writer and the readers; creates the file (and its folder) when missing."""
        if self.path != ":memory:" and not self.path.startswith("file:"):
            await asyncio.to_thread(Path(self.path).parent.mkdir, parents=True, exist_ok=True)
        try:
            self._writer = await self._connect()
            for _ in range(self._read_count):
                self._readers.append(await self._connect())
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        """Close every connection; safe to call twice."""
        async with self._write_lock:
            conns = [c for c in [self._writer, *self._readers] if c is not None]
            self._writer = None
            self._readers = []
        for conn in conns:
            await conn.close()

    @property
    def writer(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise RuntimeError("database is not open")
        return self._writer

    def _in_own_transaction(self) -> bool:
        return self._owner is not None and self._owner is asyncio.current_task()

    def in_use(self) -> int:
        return 0 if self._owner is None else 1

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[SQLiteTransaction]:
        """One write unit: `BEGIN IMMEDIATE`, committed on success, rolled back on any error.

        Called again by the task already inside a unit, it opens a savepoint instead: rolled back
        alone on error, committed with the outer unit.
        """
        if self._in_own_transaction():
            async with self._savepoint() as tx:
                yield tx
            return
        on_wait = self.on_write_wait
        waiting_since = time.perf_counter() if on_wait is not None else 0.0
        async with self._writing():
            conn = self.writer
            self._owner = asyncio.current_task()
            try:
                try:
                    await conn.execute("BEGIN IMMEDIATE")
                except asyncio.CancelledError:
                    # The BEGIN was queued on the connection's thread and may still run there.
                    await self._rollback(conn)
                    raise
                if on_wait is not None:
                    on_wait(time.perf_counter() - waiting_since)
                try:
                    yield SQLiteTransaction(conn)
                except BaseException:
                    await self._rollback(conn)
                    raise
                try:
                    await conn.execute("COMMIT")
                except BaseException as exc:
                    # A failed COMMIT can leave the transaction open; later units must not inherit it.
                    await self._rollback(conn)
                    if isinstance(exc, sqlite3.Error):
                        raise translate(exc) from exc
                    raise
            finally:
                self._owner = None

    @asynccontextmanager
    async def _single_write(self) -> AsyncIterator[SQLiteTransaction]:
        """The writer for one statement outside a unit: it commits alone (autocommit), and the lock
        keeps it out of other tasks' units. The metrics get the wait for this process's lock."""
        on_wait = self.on_write_wait
        waiting_since = time.perf_counter() if on_wait is not None else 0.0
        async with self._writing():
            if on_wait is not None:
                on_wait(time.perf_counter() - waiting_since)
            yield SQLiteTransaction(self.writer)

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[None]:
        """The write lock, waited for at most busy_timeout and only by a bounded number of
        writers; raises StorageBusy (a 503) instead of queueing without bound while SQLite is locked."""
        if self._write_lock.locked() and self._waiting_writers >= self._max_waiting_writers:
            raise StorageBusy(f"{self._waiting_writers} writers already wait for the database")
        self._waiting_writers += 1
        try:
            async with asyncio.timeout(self._busy_timeout_ms / 1000):
                await self._write_lock.acquire()
        except TimeoutError:
            raise StorageBusy(f"waited {self._busy_timeout_ms} ms for the write lock") from None
        finally:
            self._waiting_writers -= 1
        try:
            yield
        finally:
            self._write_lock.release()

    @asynccontextmanager
    async def _savepoint(self) -> AsyncIterator[SQLiteTransaction]:
        conn = self.writer
        self._depth += 1
        name = f"sp_{self._depth}"
        try:
            await conn.execute(f"SAVEPOINT {name}")
            try:
                yield SQLiteTransaction(conn)
            except BaseException:
                try:
                    await conn.execute(f"ROLLBACK TO {name}")
                    await conn.execute(f"RELEASE {name}")
                except sqlite3.OperationalError as exc:
                    # SQLite rolls the whole transaction back by itself on some errors (disk
                    # full, I/O): the savepoint is gone, and the first error is the one to raise.
                    if "no such savepoint" not in str(exc):
                        raise
                raise
            await conn.execute(f"RELEASE {name}")
        finally:
            self._depth -= 1

    @staticmethod
    async def _rollback(conn: aiosqlite.Connection) -> None:
        # aiosqlite runs statements in the order they are queued, so this ROLLBACK comes after any
        # statement of the unit still pending, and before the next unit's BEGIN.
        try:
            await conn.execute("ROLLBACK")
        except sqlite3.OperationalError as exc:
            if "no transaction is active" not in str(exc):  # SQLite may have rolled back already
                log.error("rollback failed: %s", exc)

    async def execute(self, sql: str, params: Params = ()) -> int:
        if self._in_own_transaction():
            return await SQLiteTransaction(self.writer).execute(sql, params)
        async with self._single_write() as tx:
            return await tx.execute(sql, params)

    async def execute_returning(self, sql: str, params: Params = ()) -> list[Row]:
        if self._in_own_transaction():
            return await SQLiteTransaction(self.writer).fetchall(sql, params)
        async with self._single_write() as tx:
            return await tx.fetchall(sql, params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        """Every row of a query, read on a reader (on the writer inside the caller's own transaction)."""
        if self._in_own_transaction():
            return await SQLiteTransaction(self.writer).fetchall(sql, params)
        # One statement is one hop to a reader's thread, atomic there: the readers are shared
        # round-robin rather than borrowed, so reads queue up on them instead of on a lock
        # (borrowing capped the process at `read_connections` reads in flight).
        readers = self._readers
        if not readers:
            raise RuntimeError("database is not open")
        self._next_reader = (self._next_reader + 1) % len(readers)
        try:
            return list(await readers[self._next_reader].execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    async def stats(self) -> dict[str, Any]:
        """The file's size and free space, and the WAL after a passive checkpoint."""
        # PASSIVE never waits for readers or the writer; it only moves what it can from the WAL.
        checkpoint = await self.fetchone("PRAGMA wal_checkpoint(PASSIVE)")
        page_size = int(await self.fetchval("PRAGMA page_size"))
        return {
            "backend": self.dialect.name,
            "size_bytes": int(await self.fetchval("PRAGMA page_count")) * page_size,
            "free_bytes": int(await self.fetchval("PRAGMA freelist_count")) * page_size,
            "wal_frames": checkpoint[1] if checkpoint is not None else None,
            "wal_checkpointed": checkpoint[2] if checkpoint is not None else None,
            "connections": 1 + len(self._readers),
            "connections_in_use": self.in_use(),
        }
