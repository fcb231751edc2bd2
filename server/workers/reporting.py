"""The seam for error reporting from workers: what a worker puts in ctx["report_job_failure"]."""

from __future__ import annotations

from server.config import Config
from server.workers.failures import JobFailureReporter


def make_job_failure_reporter(config: Config) -> JobFailureReporter | None:
    """The reporter a worker calls as `(job, exc, *, final, request_id)` for every failed attempt
    and every swept job; None reports nothing (failures are still recorded for /internal/jobs/failed).

    Used by the `saq` CLI settings; `python -m server worker` and the embedded worker pass the
    reporter of their process instead. Its sending thread is a daemon: it ends with the process.
    """
    from server.services.honeybadger import HoneybadgerReporter, reporter_observer

    reporter = HoneybadgerReporter(config.honeybadger, observer=reporter_observer())
    reporter.start()  # logs in one line when reporting is off
    return reporter.report_job_failure if reporter.enabled else None
