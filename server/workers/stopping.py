"""Stopping a SAQ worker within its grace period, without losing a job to a half-done sweep."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from saq import Worker

from server.services.queues import JobQueue

log = logging.getLogger(__name__)

# Stop tasks in flight, kept referenced until they end.
_stopping: set[asyncio.Task[None]] = set()


async def _cancel_upkeep(queue: object, upkeep: list[asyncio.Task[object]]) -> None:
    if isinstance(queue, JobQueue):
        # A sweep cancelled between its abort and its retry would leave the job in no list.
        await queue.wait_sweep_idle()
    for task in upkeep:
        task.cancel()


def request_stop(worker: Worker[Any]) -> asyncio.Task[None]:
    """Make `worker.start()` return: no new jobs; running ones get the grace period.

    SAQ's stop() waits for every task, including upkeep loops sleeping up to a sweep interval, so
    a plain stop always burns the grace period (docs/decisions.md, "SAQ: stopping a worker").
    Those loops are cancelled here, once no sweep is running; they would do nothing more anyway.
    Safe to call more than once.
    """
    upkeep = [task for task in worker.tasks if task.get_name() != "process"]
    worker.event.set()
    task = asyncio.get_running_loop().create_task(_cancel_upkeep(worker.queue, upkeep))
    _stopping.add(task)
    task.add_done_callback(_stopping.discard)
    return task
