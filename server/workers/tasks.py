"""The job functions workers run: each takes SAQ's ctx (config, db, redis, http, job) and keyword arguments."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiosqlite

from server.models.database import Database

# slow_job is a demonstration; an hour is already far past any sane job timeout.
MAX_SLOW_JOB_SECONDS = 3600

DATABASE_STATS_KEY = "stats:database"
PAGE_COUNT_SQL = "PRAGMA page_count"
PAGE_SIZE_SQL = "PRAGMA page_size"
FREELIST_COUNT_SQL = "PRAGMA freelist_count"
# PASSIVE never waits for readers or the writer; it only moves what it can from the WAL.
WAL_CHECKPOINT_SQL = "PRAGMA wal_checkpoint(PASSIVE)"
COUNT_USERS_SQL = "SELECT COUNT(*) FROM users"


async def slow_job(ctx: dict[str, Any], *, seconds: float) -> dict[str, float]:
    """Sleep `seconds` (the old boilerplate's example job); raises ValueError outside 0..3600."""
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ValueError(f"seconds must be a number, got {seconds!r}")
    if not 0 <= seconds <= MAX_SLOW_JOB_SECONDS:
        raise ValueError(f"seconds must be between 0 and {MAX_SLOW_JOB_SECONDS}, got {seconds}")
    await asyncio.sleep(seconds)
    return {"slept": seconds}


async def _count_users(db: Database) -> int | None:
    try:
        return int(await db.fetchval(COUNT_USERS_SQL))
    except aiosqlite.OperationalError:  # no users table before the first migration
        return None


async def record_database_stats(ctx: dict[str, Any]) -> dict[str, Any]:
    """Periodic: checkpoint the WAL and store the database's size figures in Redis."""
    db: Database = ctx["db"]
    checkpoint = await db.fetchone(WAL_CHECKPOINT_SQL)
    page_size = int(await db.fetchval(PAGE_SIZE_SQL))
    stats: dict[str, Any] = {
        "at": time.time(),
        "size_bytes": int(await db.fetchval(PAGE_COUNT_SQL)) * page_size,
        "free_bytes": int(await db.fetchval(FREELIST_COUNT_SQL)) * page_size,
        "wal_frames": checkpoint[1] if checkpoint is not None else None,
        "wal_checkpointed": checkpoint[2] if checkpoint is not None else None,
        "users": await _count_users(db),
    }
    await ctx["redis"].set(DATABASE_STATS_KEY, json.dumps(stats))
    return stats


# Every job function a worker knows, by name (SAQ uses the function's __qualname__).
async def noop(ctx: dict[str, Any]) -> None:
    """Does nothing: a probe that a worker is dequeuing (and what the jobs benchmark runs)."""


TASKS = (slow_job, record_database_stats, noop)
