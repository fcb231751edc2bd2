"""The database a config names: PostgreSQL when `database.url` is set, else SQLite at `database.path`."""

from __future__ import annotations

from collections.abc import Callable

from server.config import DatabaseConfig
from server.models.database import Database
from server.models.postgres import PostgresDatabase
from server.models.sqlite import SQLiteDatabase


def make_database(
    cfg: DatabaseConfig, *, small: bool = False, on_write_wait: Callable[[float], None] | None = None
) -> Database:
    """The configured Database, not yet open. `small`: as few connections as works (CLI commands).
    `on_write_wait` gets the seconds each SQLite write unit waited for the writer (the metrics)."""
    if cfg.url:
        return PostgresDatabase(
            cfg.url,
            min_size=1 if small else cfg.pool_min_size,
            max_size=2 if small else cfg.pool_max_size,
            statement_cache_size=cfg.statement_cache_size,
            connect_timeout=cfg.connect_timeout,
            # How long a statement waits for a free connection, like SQLite's wait for its lock.
            acquire_timeout=cfg.busy_timeout_ms / 1000,
        )
    return SQLiteDatabase(
        cfg.path,
        busy_timeout_ms=cfg.busy_timeout_ms,
        read_connections=1 if small else cfg.read_connections,
        on_write_wait=on_write_wait,
        max_waiting_writers=cfg.max_waiting_writers,
    )
