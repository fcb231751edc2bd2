"""Workers for several queues in one event loop: the web app's in-process worker and `python -m server worker`."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from saq import Worker

from server.config import Config
from server.resources import WorkerResources, close_resources, open_resources
from server.services.honeybadger.sender import HoneybadgerReporter, reporter_observer
from server.workers.failures import JobFailureReporter
from server.workers.reporting import job_failure_reporter
from server.workers.settings import worker_settings
from server.workers.stopping import request_stop
from server.workers.tasks import TASKS

log = logging.getLogger(__name__)


class WorkerGroup:
    """One SAQ worker per queue, sharing this loop and one set of resources.

    The workers leave signals alone (SAQ's own handlers would take SIGTERM from aiohttp, and each
    worker would replace the previous one's); whoever owns the loop calls `stop()`.
    """

    def __init__(self, workers: Sequence[Worker[Any]]) -> None:
        self.workers = list(workers)
        self._tasks: list[asyncio.Task[None]] = []

    @classmethod
    def for_queues(
        cls,
        config: Config,
        names: Iterable[str],
        *,
        resources: WorkerResources,
        functions: Iterable[Callable[..., Any]] = TASKS,
        reporter: JobFailureReporter | None = None,
    ) -> WorkerGroup:
        workers = []
        for name in names:
            settings = worker_settings(config, name, resources=resources, functions=functions, reporter=reporter)
            worker: Worker[Any] = Worker(**settings)
            worker.SIGNALS = []
            workers.append(worker)
        return cls(workers)

    async def start(self) -> None:
        """Start every worker in the background; returns at once."""
        for worker in self.workers:
            await worker.queue.connect()
            task = asyncio.create_task(worker.start(), name=f"saq-worker-{worker.queue.name}")
            task.add_done_callback(self._log_crash)
            self._tasks.append(task)
        # start() begins by replacing worker.event: let it, so that a stop() right away is not lost.
        await asyncio.sleep(0)

    @staticmethod
    def _log_crash(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("worker %s stopped on an error", task.get_name(), exc_info=task.exception())

    async def wait_any_stopped(self) -> None:
        """Return when any worker has stopped by itself (its start-up failed)."""
        if self._tasks:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)

    async def stop(self) -> None:
        """Stop all: running jobs get the grace period, then are cancelled and requeued."""
        stops = [request_stop(worker) for worker in self.workers]
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # A worker whose start() failed early never ran its stop(); this one is a no-op otherwise.
        await asyncio.gather(*(worker.stop() for worker in self.workers), return_exceptions=True)
        await asyncio.gather(*stops, return_exceptions=True)
        for worker in self.workers:
            try:
                await worker.queue.disconnect()
            except Exception:  # the other queues still need closing
                log.exception("closing queue %s failed", worker.queue.name)

    @property
    def failed(self) -> bool:
        return any(t.done() and not t.cancelled() and t.exception() is not None for t in self._tasks)


async def run_worker_process(config: Config, names: Sequence[str]) -> int:
    """`python -m server worker`: serve `names` until SIGTERM/SIGINT; 0 on a clean stop, 1 otherwise."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    resources = await open_resources(config)
    reporter = HoneybadgerReporter(config.honeybadger, observer=reporter_observer())
    reporter.start()
    try:
        group = WorkerGroup.for_queues(config, names, resources=resources, reporter=job_failure_reporter(reporter))
        await group.start()
        log.info("worker serving queues %s", ", ".join(names))
        stop_wait = asyncio.create_task(stop.wait())
        crash_wait = asyncio.create_task(group.wait_any_stopped())
        await asyncio.wait({stop_wait, crash_wait}, return_when=asyncio.FIRST_COMPLETED)
        stop_wait.cancel()
        crash_wait.cancel()
        log.info("worker stopping (grace %.1f s)", config.queue.shutdown_grace)
        await group.stop()
        return 1 if group.failed else 0
    finally:
        await close_resources(resources)
        await reporter.aclose()  # flushes within honeybadger.flush_timeout
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
