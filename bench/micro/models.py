"""Model-layer throughput on a temp SQLite file: `python -m bench.micro.models [N]` (ops/s; not a test)."""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from server.models.migrate import migrate
from server.models.sqlite import SQLiteDatabase
from server.models.user import User


async def timed(label: str, count: int, run: Callable[[], Awaitable[object]]) -> None:
    start = time.perf_counter()
    await run()
    elapsed = time.perf_counter() - start
    print(f"{label:<44} {count / elapsed:>9,.0f} ops/s  {elapsed / count * 1e6:>7.0f} us/op")


async def main(n: int) -> None:
    with tempfile.TemporaryDirectory() as folder:
        db = SQLiteDatabase(Path(folder) / "bench.db", read_connections=2)
        await db.open()
        await migrate(db)

        async def sequential_creates() -> None:
            for i in range(n):
                await User.create(db, name=f"user-{i}")

        async def concurrent_creates() -> None:
            await asyncio.gather(*(User.create(db, name=f"c-{i}") for i in range(n)))

        async def one_unit() -> None:
            async with db.transaction():
                for i in range(n):
                    await User.create(db, name=f"t-{i}")

        async def finds() -> None:
            for i in range(n):
                await User.find(db, i % n + 1)

        async def concurrent_finds() -> None:
            await asyncio.gather(*(User.find(db, i % n + 1) for i in range(n)))

        async def updates() -> None:
            user = await User.find(db, 1)
            for i in range(n):
                await user.update(name=f"renamed-{i}")

        async def counts() -> None:
            for _ in range(n):
                await User.count(db)

        async def pages() -> None:
            for i in range(n):
                await User.where(db, name__like="user-1%").order_by("-created_at").page(limit=20, offset=i % 50)

        await timed("create, one after another", n, sequential_creates)
        await timed("create, all at once (one writer, lock)", n, concurrent_creates)
        await timed("create, all in one transaction", n, one_unit)
        await timed("update one column", n, updates)
        await timed("find by id, one after another", n, finds)
        await timed("find by id, all at once (2 readers)", n, concurrent_finds)
        await timed("count()", n, counts)
        await timed("where(name__like).order_by().page(20)", n, pages)
        await db.close()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
