"""Capturing a failed job for the error reporter, and the reporter a worker's hooks use."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from saq.job import Job

from server.config import HoneybadgerConfig
from server.services.honeybadger.payload import caller_stack
from server.services.honeybadger.sender import HoneybadgerReporter, new_report, reporter_observer
from server.workers.failures import JobFailureReporter, JobSwept

# What a worker's ctx holds: the reporter it opened (closed by its shutdown hook), and the
# callable its after_process hook and sweeps report through.
CTX_REPORTER = "honeybadger"
CTX_REPORT_FAILURE = "report_job_failure"


def _status_name(job: Job) -> str:
    return str(getattr(job.status, "value", job.status))


def job_context(job: Job, *, will_retry: bool | None) -> dict[str, Any]:
    """What a notice says of the job: its function, key, queue, attempt and status."""
    queue_obj = getattr(job, "queue", None)
    return {
        "function": job.function,
        "key": job.key,
        "queue": getattr(queue_obj, "name", None),
        "attempt": job.attempts,
        "retries": job.retries,
        "will_retry": will_retry,
        "status": _status_name(job),
        "timeout": job.timeout,
    }


def _job_request_id(job: Job, request_id: str | None) -> str | None:
    if request_id:
        return request_id
    meta = getattr(job, "meta", None) or {}
    value = meta.get("request_id") if isinstance(meta, Mapping) else None
    return str(value) if value else None


def report_job_failure(
    reporter: HoneybadgerReporter, job: Job, exc: BaseException | None, *, final: bool, request_id: str | None = None
) -> str | None:
    """A job attempt raised, timed out or was swept (`JobSwept`): its notice id, or None.

    `final` is True when SAQ will not retry it; `request_id` is the id of the request that
    enqueued it (taken from `job.meta["request_id"]` when not given).
    """
    if not reporter.enabled:
        return None
    rid = _job_request_id(job, request_id)
    tags = ("saq", "job-swept") if isinstance(exc, JobSwept) else ("saq", "job-failed")
    report = new_report(
        tags=tags,
        request_id=rid,
        context={"request_id": rid, "job": job_context(job, will_retry=not final)},
        component="saq",
        action=job.function,
        params={"kwargs": dict(job.kwargs or {})},
    )
    if exc is not None:
        report.exception = exc
        report.traceback = exc.__traceback__
    else:
        report.error_class = "JobFailed"
        report.error_message = f"job {job.function} failed: {job.error or 'no error recorded'}"
        report.stack = caller_stack(1)
    return reporter.submit(report)


def job_failure_reporter(reporter: HoneybadgerReporter) -> JobFailureReporter:
    """The callable a worker's hooks call as `(job, exc, *, final, request_id)`."""

    def report(job: Job, exc: BaseException, *, final: bool, request_id: str | None) -> str | None:
        return report_job_failure(reporter, job, exc, final=final, request_id=request_id)

    return report


async def open_job_reporting(ctx: MutableMapping[str, Any], config: HoneybadgerConfig) -> None:
    """For a worker that has no reporter of its process (the `saq` CLI): start one (after any fork)."""
    reporter = HoneybadgerReporter(config, observer=reporter_observer())
    reporter.start()  # logs in one line when reporting is off
    ctx[CTX_REPORTER] = reporter
    ctx[CTX_REPORT_FAILURE] = job_failure_reporter(reporter)


async def close_job_reporting(ctx: MutableMapping[str, Any]) -> None:
    """For that worker's shutdown hook: flush within honeybadger.flush_timeout."""
    reporter = ctx.pop(CTX_REPORTER, None)
    if isinstance(reporter, HoneybadgerReporter):
        await reporter.aclose()
