"""The job functions workers run: each takes SAQ's ctx (config, db, redis, http, job) and keyword arguments."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from server.models.database import Database
from server.models.migrate import schema_version

# slow_job is a demonstration; an hour is already far past any sane job timeout.
MAX_SLOW_JOB_SECONDS = 3600

DATABASE_STATS_KEY = "stats:database"
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
    if await schema_version(db) < 1:  # no users table before the first migration
        return None
    return int(await db.fetchval(COUNT_USERS_SQL))


async def record_database_stats(ctx: dict[str, Any]) -> dict[str, Any]:
    """Periodic: store the database's figures in Redis (size, connections; SQLite also checkpoints its WAL)."""
    db: Database = ctx["db"]
    stats: dict[str, Any] = {"at": time.time(), **await db.stats(), "users": await _count_users(db)}
    await ctx["redis"].set(DATABASE_STATS_KEY, json.dumps(stats))
    return stats


# Every job function a worker knows, by name (SAQ uses the function's __qualname__).
async def noop(ctx: dict[str, Any]) -> None:
    """Does nothing: a probe that a worker is dequeuing (and what the jobs benchmark runs)."""


TASKS = (slow_job, record_database_stats, noop)
