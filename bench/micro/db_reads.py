"""Where foo's time goes: our Database's reads against bare aiosqlite patterns, 64 concurrent readers.

    taskset -c 0 .venv/bin/python -m bench.micro.db_reads [--seconds 2]

No HTTP, no wrk: one process, one event loop (uvloop), a temporary SQLite file of 1,000 users,
`SELECT COUNT(*) FROM users` as fast as 64 coroutines can ask. Each aiosqlite call is a round
trip to the connection's thread, so what matters is how many trips a read takes and whether
concurrent reads can queue on a connection or must wait to borrow one.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiosqlite
import uvloop

from server.models.sqlite import SQLiteDatabase

SQL = "SELECT COUNT(*) FROM users"


async def rate(read: Callable[[], Awaitable[object]], seconds: float, concurrency: int = 64) -> float:
    done = 0
    stop = time.perf_counter() + seconds

    async def reader() -> None:
        nonlocal done
        while time.perf_counter() < stop:
            await read()
            done += 1

    await asyncio.gather(*(reader() for _ in range(concurrency)))
    return done / seconds


async def main(path: Path, seconds: float) -> None:
    for readers in (1, 2, 4):
        db = SQLiteDatabase(path, read_connections=readers)
        await db.open()
        print(
            f"server Database.fetchval, {readers} reader(s) borrowed per read: "
            f"{await rate(lambda db=db: db.fetchval(SQL), seconds):>9,.0f} reads/s"
        )
        await db.close()
    conn = await aiosqlite.connect(path)

    async def execute_fetchone() -> object:
        async with conn.execute(SQL) as cursor:
            return await cursor.fetchone()

    three_trips = await rate(execute_fetchone, seconds)
    print(f"one shared connection, execute + fetchone (3 trips): {three_trips:>9,.0f} reads/s")
    print(
        f"one shared connection, execute_fetchall (1 trip):    "
        f"{await rate(lambda: conn.execute_fetchall(SQL), seconds):>9,.0f} reads/s"
    )
    await conn.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "micro.db"
        with sqlite3.connect(path) as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL)")
            db.executemany("INSERT INTO users (name) VALUES (?)", ((f"u{i}",) for i in range(1000)))
        uvloop.run(main(path, args.seconds))
