"""The PostgreSQL backend (asyncpg): a pool, a connection per unit of work, `?` rewritten once per statement."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg import exceptions as pg
from asyncpg.pool import PoolConnectionProxy

from server.models.database import Database, Params, Row, Transaction
from server.models.dialect import POSTGRESQL
from server.models.errors import DatabaseUnavailable, InvalidQuery, UniqueViolation
from server.models.faults import StorageBusy, StorageFault, storage_fault
from server.models.sqltext import numbered_placeholders

# Errors of the connection itself, with no SQLSTATE: the server refused, vanished or did not answer.
_CONNECTION_ERRORS = (OSError, asyncio.TimeoutError, pg.ClientCannotConnectError)
# A connection lent by the pool (the only kind used here); subscripted for the type checker only.
Connection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"
_DRIVER_ERRORS = (pg.PostgresError, pg.InterfaceError)
# Set by a read while it gives its connection back: a read leaves no session state behind.
_READ_ONLY_RELEASE: contextvars.ContextVar[bool] = contextvars.ContextVar("db_read_only_release", default=False)
_CLOSED_MESSAGES = ("connection is closed", "pool is closing", "pool is closed", "connection was closed")


def translate(exc: Exception) -> Exception:
    """The domain error for a driver error (the same ones SQLite's are mapped to), else `exc`."""
    if isinstance(exc, pg.UniqueViolationError):
        return UniqueViolation(f"UNIQUE constraint failed: {exc.table_name} ({exc.constraint_name})")
    if isinstance(exc, pg.NotNullViolationError):
        return InvalidQuery(f"NOT NULL constraint failed: {exc.table_name}.{exc.column_name}")
    if isinstance(exc, pg.CheckViolationError):
        return InvalidQuery(f"CHECK constraint failed: {exc.constraint_name}")
    if isinstance(exc, pg.ForeignKeyViolationError):
        return InvalidQuery(f"FOREIGN KEY constraint failed: {exc.constraint_name}")
    if isinstance(exc, (pg.IntegrityConstraintViolationError, pg.DataError)):
        return InvalidQuery(str(exc))
    if isinstance(exc, _CONNECTION_ERRORS) or (
        isinstance(exc, pg.InterfaceError) and str(exc).startswith(_CLOSED_MESSAGES)
    ):
        # A 503 (server/models/faults.py); server errors that carry a SQLSTATE (too many
        # connections, shutting down, read-only, disk full...) are classified there as they are.
        return StorageFault(f"{type(exc).__name__}: {exc}", kind="down")
    return exc


def _rowcount(status: str) -> int:
    """Rows changed, from a command tag ("UPDATE 3", "INSERT 0 1"); -1 for commands without a count."""
    last = status.rpartition(" ")[2]
    return int(last) if last.isdigit() else -1


def redact(url: str) -> str:
    """`url` without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=f"{user}{host}"))


class PostgresTransaction(Transaction):
    """Statements of one unit on its pool connection (`?` rewritten to `$n`)."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    async def execute(self, sql: str, params: Params = ()) -> int:
        try:
            return _rowcount(await self._conn.execute(numbered_placeholders(sql), *params))
        except Exception as exc:
            raise _mapped(exc) from exc

    async def execute_returning(self, sql: str, params: Params = ()) -> list[Row]:
        return await self.fetchall(sql, params)

    async def executemany(self, sql: str, rows: Iterable[Params]) -> None:
        try:
            await self._conn.executemany(numbered_placeholders(sql), rows)
        except Exception as exc:
            raise _mapped(exc) from exc

    async def execute_raw(self, sql: str) -> None:
        try:
            await self._conn.execute(sql)  # no arguments: the simple query protocol, as written
        except Exception as exc:
            raise _mapped(exc) from exc

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        try:
            return list(await self._conn.fetch(numbered_placeholders(sql), *params))
        except Exception as exc:
            raise _mapped(exc) from exc


def _mapped(exc: Exception) -> Exception:
    mapped = translate(exc)
    if mapped is exc:
        raise exc
    return mapped


async def _reset_session(conn: asyncpg.Connection) -> None:
    """The pool's reset of a connection given back, after asyncpg rolled back any transaction.

    asyncpg's default (`RESET ALL`, `UNLISTEN *`, `CLOSE ALL`, unlocking advisory locks) is one more
    round trip on every release: twice the round trips of a read. A read outside a unit changes no
    session state, so its connection skips it; everything else (units of work, which may run any
    statement, and single writes) still gets it. A read must therefore not change session state
    (SET, LISTEN, session advisory locks): do that inside a unit.
    """
    if _READ_ONLY_RELEASE.get():
        return
    query = conn.get_reset_query()
    if query:
        await conn.execute(query)


@dataclass(slots=True)
class _Unit:
    task: asyncio.Task[Any] | None
    conn: Connection
    tx: PostgresTransaction


class PostgresDatabase(Database):
    """A pool of connections. A unit of work holds one connection from BEGIN to COMMIT.

    The unit is remembered in a context variable together with the task that opened it: model
    calls made by that task join the unit's connection (child tasks inherit the variable but
    not the unit, since one connection runs one statement at a time). Reads and single writes
    outside a unit borrow a connection for one statement (autocommit).
    """

    dialect = POSTGRESQL

    def __init__(
        self,
        url: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        statement_cache_size: int = 100,
        connect_timeout: float = 5.0,
        acquire_timeout: float = 5.0,
        application_name: str = "aiohttp-api-server",
    ) -> None:
        self.url = url
        self._pool_args: dict[str, Any] = {
            "min_size": min_size,
            "max_size": max_size,
            # 0 behind PgBouncer in transaction mode (prepared statements do not survive there).
            "statement_cache_size": statement_cache_size,
            "timeout": connect_timeout,
            "server_settings": {"application_name": application_name},
            "reset": _reset_session,
        }
        self._acquire_timeout = acquire_timeout
        self._max_size = max_size
        # Connections lent out right now, counted here: asyncpg's get_size()/get_idle_size() walk
        # every holder, measured at 10-20 us a read when asked on each acquire.
        self._borrowed = 0
        self._pool: asyncpg.Pool | None = None
        self._unit: contextvars.ContextVar[_Unit | None] = contextvars.ContextVar(f"db_unit_{id(self)}", default=None)

    @property
    def label(self) -> str:
        return redact(self.url)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("database is not open")
        return self._pool

    async def open(self) -> None:
        try:
            self._pool = await asyncpg.create_pool(self.url, **self._pool_args)
        except Exception as exc:
            if storage_fault(translate(exc)) is None and storage_fault(exc) is None:
                raise
            raise DatabaseUnavailable(f"cannot connect to {self.label}: {exc}") from exc

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    def _own_unit(self) -> _Unit | None:
        unit = self._unit.get()
        if unit is not None and unit.task is asyncio.current_task():
            return unit
        return None

    def in_use(self) -> int:
        return self._borrowed

    async def _acquire(self) -> Connection:
        """A connection of the pool, waiting at most acquire_timeout for one (then 503)."""
        pool = self.pool
        try:
            if self._borrowed < self._max_size:
                # One is free (or may be opened, bounded by connect_timeout): no wait to bound.
                conn = await pool.acquire()
            else:
                # All lent: wait in the pool's queue, bounded by a timer on this task. asyncpg's
                # own acquire(timeout=) runs the wait in a task of its own (wait_for), dearer.
                try:
                    async with asyncio.timeout(self._acquire_timeout):
                        conn = await pool.acquire()
                except TimeoutError:
                    raise StorageBusy(
                        f"waited {self._acquire_timeout * 1000:.0f} ms for a free connection", kind="connections"
                    ) from None
        except StorageBusy:
            raise
        except Exception as exc:
            raise _mapped(exc) from exc
        self._borrowed += 1
        return conn

    async def _release(self, conn: Connection) -> None:
        self._borrowed -= 1
        await self.pool.release(conn)

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Connection]:
        conn = await self._acquire()
        try:
            yield conn
        finally:
            await self._release(conn)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[PostgresTransaction]:
        """A unit on a connection of its own (a savepoint inside the task's current unit)."""
        unit = self._own_unit()
        if unit is not None:
            try:
                async with unit.conn.transaction():  # asyncpg nests as SAVEPOINT
                    yield unit.tx
            except _DRIVER_ERRORS as exc:  # from SAVEPOINT/RELEASE; the block's own errors pass as they are
                raise _mapped(exc) from exc
            return
        async with self._connection() as conn:
            unit = _Unit(asyncio.current_task(), conn, PostgresTransaction(conn))
            token = self._unit.set(unit)
            try:
                async with conn.transaction():
                    yield unit.tx
            except _DRIVER_ERRORS as exc:  # from BEGIN/COMMIT (a deferred constraint fails there)
                raise _mapped(exc) from exc
            finally:
                self._unit.reset(token)

    async def execute(self, sql: str, params: Params = ()) -> int:
        if self._own_unit() is not None:
            # A failed statement aborts a PostgreSQL transaction, not a SQLite one: a savepoint
            # leaves the caller's unit usable after an error, as on SQLite.
            async with self.transaction() as tx:
                return await tx.execute(sql, params)
        async with self._connection() as conn:
            return await PostgresTransaction(conn).execute(sql, params)

    async def execute_returning(self, sql: str, params: Params = ()) -> list[Row]:
        if self._own_unit() is not None:
            async with self.transaction() as tx:
                return await tx.fetchall(sql, params)
        async with self._connection() as conn:
            return await PostgresTransaction(conn).fetchall(sql, params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        unit = self._own_unit()
        if unit is not None:
            return await unit.tx.fetchall(sql, params)
        # The hot path of every read: no context manager, one acquire, one release without reset.
        conn = await self._acquire()
        try:
            return await conn.fetch(numbered_placeholders(sql), *params)
        except Exception as exc:
            raise _mapped(exc) from exc
        finally:
            marked = _READ_ONLY_RELEASE.set(True)
            try:
                await self._release(conn)
            finally:
                _READ_ONLY_RELEASE.reset(marked)

    async def stats(self) -> dict[str, Any]:
        """The database's size, and connections: this process's pool, and the server's to this database."""
        row = await self.fetchone(
            "SELECT pg_database_size(current_database()), "
            "(SELECT count(*) FROM pg_stat_activity WHERE datname = current_database())"
        )
        pool = self.pool
        return {
            "backend": self.dialect.name,
            "size_bytes": int(row[0]) if row is not None else None,
            "server_connections": int(row[1]) if row is not None else None,
            "connections": pool.get_size(),
            "connections_in_use": self.in_use(),
        }
