"""Settings for a raw SAQ worker (`saq bench.saq_settings.settings`): the bench's jobs yardstick.

Only a no-op function, the queue and the concurrency our worker uses, on uvloop like ours; no
hooks, no resources. python -m bench sets BENCH_REDIS_URL, BENCH_QUEUE and BENCH_CONCURRENCY.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import uvloop
from saq import Queue

# The saq CLI makes its loop with asyncio.new_event_loop(): this makes that loop uvloop's.
asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


async def noop(ctx: dict[str, Any]) -> None:
    return None


settings = {
    "queue": Queue.from_url(
        os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"), name=os.environ.get("BENCH_QUEUE", "bench")
    ),
    "functions": [noop],
    "concurrency": int(os.environ.get("BENCH_CONCURRENCY", "4")),
    # As our worker does: a short blocking dequeue (docs/decisions.md, "SAQ and redis-py versions").
    "dequeue_timeout": float(os.environ.get("BENCH_DEQUEUE_TIMEOUT", "1")),
}
