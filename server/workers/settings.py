"""Worker settings, one dict per queue: `saq server.workers.settings.default` or `python -m server worker`.

The module-level callables (`high`, `default`, `low`) read the config when the worker starts
(`SERVER_CONFIG`, else config.yaml), never on import. `worker_settings()` builds the same dict
for the in-process worker and `python -m server worker`, which share one set of resources
between the queues of a process.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any

from saq import CronJob
from saq.job import Job, Status

from server.config import DEFAULT_CONFIG_PATH, Config, load_config
from server.log_context import current_job, current_request_id, current_traceparent
from server.metrics import job_outcome, process_metrics, setup_process_metrics
from server.resources import WorkerResources, close_resources, open_resources
from server.services.queues import JobQueue, concurrency_for, make_queue_client
from server.workers.failures import (
    JobFailureReporter,
    handle_failure,
    handle_swept,
    request_id_of,
    traceparent_of,
)
from server.workers.reporting import CTX_REPORT_FAILURE, close_job_reporting, open_job_reporting
from server.workers.stopping import request_stop
from server.workers.tasks import TASKS, record_database_stats

log = logging.getLogger(__name__)

CONFIG_ENV = "SERVER_CONFIG"


def cron_jobs_for(config: Config, queue_name: str) -> list[CronJob[Any]]:
    """The periodic jobs, scheduled by the workers of the lowest-priority queue only."""
    if queue_name != config.queue.names[-1]:
        return []
    # One attempt: the next tick is the retry.
    stats: CronJob[Any] = CronJob(
        record_database_stats, cron=config.queue.stats_cron, timeout=config.queue.job_timeout, retries=1
    )
    return [stats]


def worker_settings(
    config: Config,
    queue_name: str,
    *,
    queue: JobQueue | None = None,
    resources: WorkerResources | None = None,
    functions: Iterable[Callable[..., Any]] = TASKS,
    reporter: JobFailureReporter | None = None,
) -> dict[str, Any]:
    """Keyword arguments for `saq.Worker` serving one queue.

    With `resources`, jobs use them and the worker neither opens nor closes them (the web app's,
    or a worker process's shared set); without, the worker opens its own on startup. Failures
    go to `reporter`; without one, the worker starts a reporter of its own on startup and
    flushes it on shutdown.
    """
    cfg = config.queue
    if queue is None:
        queue = JobQueue(make_queue_client(config, worker=True), queue_name)

    async def startup(ctx: dict[str, Any]) -> None:
        if resources is None:
            ctx["owned_resources"] = owned = await open_resources(config)
            shared = owned
        else:
            shared = resources
        ctx.update(config=config, db=shared.db, redis=shared.redis, http=shared.http)
        if reporter is None:
            await open_job_reporting(ctx, config.honeybadger)
        else:
            ctx[CTX_REPORT_FAILURE] = reporter
        queue.on_swept = partial(_on_swept, ctx)
        worker = ctx["worker"]
        if worker.SIGNALS:
            # Run by the `saq` CLI, which stops by setting the event and then waits for its upkeep
            # loops (sleeping up to a sweep interval) until the grace period runs out. This stop
            # cancels them once no sweep runs (docs/decisions.md, "SAQ: stopping a worker"). SAQ removes these
            # handlers on exit.
            loop = asyncio.get_running_loop()
            for signum in worker.SIGNALS:
                loop.add_signal_handler(signum, request_stop, worker)

    async def shutdown(ctx: dict[str, Any]) -> None:
        queue.on_swept = None
        owned = ctx.pop("owned_resources", None)
        if owned is not None:
            await close_resources(owned)
        await close_job_reporting(ctx)

    async def before_process(ctx: dict[str, Any]) -> None:
        # Log lines of the job (and SAQ's own about it) carry the job, and the id and trace context
        # of the request that asked for it. Set for every job: the task running them is reused.
        job = ctx["job"]
        current_request_id.set(request_id_of(job) or "-")
        current_traceparent.set(traceparent_of(job))
        current_job.set((job.key, job.function))

    async def after_process(ctx: dict[str, Any]) -> None:
        exc = ctx.get("exception")  # only when the function raised or timed out, not on cancel/abort
        count_attempt(ctx["job"], raised=exc is not None)
        try:
            if exc is not None:
                await handle_failure(ctx["redis"], ctx.get(CTX_REPORT_FAILURE), ctx["job"], exc, keep=cfg.failed_keep)
        finally:
            current_job.set(None)
            current_traceparent.set(None)
            current_request_id.set("-")

    return {
        "queue": queue,
        "functions": list(functions),
        "concurrency": concurrency_for(config, queue_name),
        "cron_jobs": cron_jobs_for(config, queue_name),
        "startup": startup,
        "shutdown": shutdown,
        "before_process": before_process,
        "after_process": after_process,
        # schedule must stay a whole number of seconds: SAQ uses it as a SETEX lock.
        "timers": {"sweep": cfg.sweep_interval, "schedule": 1, "abort": 1, "worker_info": 10},
        "dequeue_timeout": cfg.dequeue_timeout,
        "shutdown_grace_period_s": cfg.shutdown_grace,
        "metadata": {"host": socket.gethostname(), "pid": os.getpid(), "queue": queue_name},
    }


def count_attempt(job: Job, *, raised: bool) -> None:
    """The metrics of one finished attempt: its outcome and how long it ran."""
    metrics = process_metrics()
    if metrics is None:
        return
    outcome = job_outcome(str(job.status.value), raised)
    if outcome is None:
        return
    seconds = time.time() - job.started / 1000 if job.started else None
    metrics.count_attempt(job.queue.name if job.queue else "?", job.function, outcome, seconds)


async def _on_swept(ctx: dict[str, Any], queue: JobQueue, jobs: list[Job]) -> None:
    metrics = process_metrics()
    if metrics is not None:
        for job in jobs:
            metrics.count_swept(queue.name, job.function, "aborted" if job.status == Status.ABORTED else "requeued")
    redis = ctx.get("redis")
    if redis is None:  # swept before startup finished: nothing to record with
        return
    await handle_swept(redis, ctx.get(CTX_REPORT_FAILURE), jobs, keep=ctx["config"].queue.failed_keep)


def settings_for(queue_name: str) -> dict[str, Any]:
    """Settings for the `saq` CLI, from the config file named by $SERVER_CONFIG (else config.yaml)."""
    config = load_config(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    setup_process_metrics(config)
    if queue_name not in config.queue.names:
        raise ValueError(f"queue {queue_name!r} is not in queue.names {list(config.queue.names)}")
    return worker_settings(config, queue_name)


def high() -> dict[str, Any]:
    return settings_for("high")


def default() -> dict[str, Any]:
    return settings_for("default")


def low() -> dict[str, Any]:
    return settings_for("low")
