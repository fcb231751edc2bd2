"""Failed jobs: kept in a capped Redis list (SAQ keeps no history) and handed to a reporter."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable
from typing import Any, Protocol, cast

from redis.asyncio import Redis
from redis.exceptions import RedisError
from saq.job import Job, Status

log = logging.getLogger(__name__)

FAILED_JOBS_KEY = "jobs:failed"
# Long arguments and tracebacks are cut: the list is for reading, not for replaying.
MAX_ARGUMENTS_CHARS = 1000
MAX_ERROR_CHARS = 8000


class JobFailureReporter(Protocol):
    """What the error-reporting layer plugs into a worker's ctx["report_job_failure"]."""

    def __call__(self, job: Job, exc: BaseException, *, final: bool, request_id: str | None) -> object: ...


class JobSwept(Exception):
    """A job was taken back from a worker that stopped answering (killed, hung or past its timeout)."""


def request_id_of(job: Job) -> str | None:
    """The id of the request that enqueued the job, when one did."""
    value = (job.meta or {}).get("request_id")
    return value if isinstance(value, str) else None


def traceparent_of(job: Job) -> str | None:
    """The W3C trace context of the request that enqueued the job, when it sent one."""
    value = (job.meta or {}).get("traceparent")
    return value if isinstance(value, str) else None


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def failure_entry(job: Job, *, outcome: str, final: bool) -> dict[str, Any]:
    """What the failed-jobs page shows of one failure."""
    return {
        "at": time.time(),
        "key": job.key,
        "queue": job.queue.name if job.queue is not None else None,
        "function": job.function,
        "arguments": _cut(repr(job.kwargs or {}), MAX_ARGUMENTS_CHARS),
        "attempts": job.attempts,
        "retries": job.retries,
        "outcome": outcome,
        "final": final,
        "error": _cut(job.error or "", MAX_ERROR_CHARS),
        "request_id": request_id_of(job),
    }


async def record_failure(redis: Redis, entry: dict[str, Any], *, keep: int) -> None:
    """Prepend one entry, keeping the newest `keep`. Redis errors propagate."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.lpush(FAILED_JOBS_KEY, json.dumps(entry, default=str))
        pipe.ltrim(FAILED_JOBS_KEY, 0, keep - 1)
        await pipe.execute()


async def recent_failures(redis: Redis, limit: int) -> list[dict[str, Any]]:
    """The newest recorded failures first. Redis errors propagate."""
    raw = await cast("Awaitable[list[bytes]]", redis.lrange(FAILED_JOBS_KEY, 0, limit - 1))
    entries = []
    for item in raw:
        try:
            entries.append(json.loads(item))
        except ValueError:
            log.warning("skipping an unreadable failed-job entry")
    return entries


def call_reporter(reporter: JobFailureReporter | None, job: Job, exc: BaseException, *, final: bool) -> None:
    """Hand one failure to the reporter, if any; a failing reporter is logged, never raised."""
    if reporter is None:
        return
    try:
        reporter(job, exc, final=final, request_id=request_id_of(job))
    except Exception:
        log.exception("job failure reporter failed for %s", job.key)


async def handle_failure(
    redis: Redis, reporter: JobFailureReporter | None, job: Job, exc: BaseException, *, keep: int
) -> None:
    """A job attempt raised or timed out: report it, then record it."""
    final = job.status == Status.FAILED
    call_reporter(reporter, job, exc, final=final)
    entry = failure_entry(job, outcome="failed" if final else "will retry", final=final)
    try:
        await record_failure(redis, entry, keep=keep)
    except RedisError as err:
        log.warning("could not record the failure of job %s: %r", job.key, err)


async def handle_swept(redis: Redis, reporter: JobFailureReporter | None, jobs: list[Job], *, keep: int) -> None:
    """Jobs a sweep took back from dead or stuck workers: report and record each."""
    for job in jobs:
        final = job.status == Status.ABORTED
        exc = JobSwept(
            f"job {job.key} ({job.function}) was swept from queue "
            f"{job.queue.name if job.queue else '?'} after attempt {job.attempts}; "
            + ("no attempts left" if final else "requeued")
        )
        call_reporter(reporter, job, exc, final=final)
        entry = failure_entry(job, outcome="swept, aborted" if final else "swept, requeued", final=final)
        entry["error"] = str(exc)  # SAQ stores only "swept"
        try:
            await record_failure(redis, entry, keep=keep)
        except RedisError as err:
            log.warning("could not record the sweep of job %s: %r", job.key, err)
