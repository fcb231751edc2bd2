"""The seam for error reporting from workers: what a worker puts in ctx["report_job_failure"]."""

from __future__ import annotations

from server.config import Config
from server.workers.failures import JobFailureReporter


def make_job_failure_reporter(config: Config) -> JobFailureReporter | None:
    """The reporter a worker calls as `(job, exc, *, final, request_id)` for every failed attempt
    and every swept job; None reports nothing (failures are still recorded for /internal/jobs/failed).

    The error-reporting layer returns its Honeybadger notifier here; it must not block the loop.
    """
    return None
