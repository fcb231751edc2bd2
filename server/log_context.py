"""What every log line says about the work it belongs to: the request id, the W3C trace context,
and the job being run. Set by the request_id middleware and the workers' hooks; read by the
log record factory installed here, so any logger's lines carry them."""

from __future__ import annotations

import contextvars
import logging
import re

current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# The incoming `traceparent` header of the request (or of the request that enqueued the job).
current_traceparent: contextvars.ContextVar[str | None] = contextvars.ContextVar("traceparent", default=None)
# (job key, function name) while a worker runs a job.
current_job: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("job", default=None)

# W3C Trace Context level 1: version-traceid-parentid-flags, lowercase hex. Version ff is
# invalid; a later version may append fields after the flags (only its first four are read).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_ZERO_TRACE = "0" * 32
_ZERO_PARENT = "0" * 16


def valid_traceparent(value: str | None) -> str | None:
    """The header when it is a valid W3C `traceparent`, else None (the spec says: ignore it)."""
    if value is None or len(value) > 512:
        return None
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, parent_id, _flags, rest = match.groups()
    if version == "ff" or trace_id == _ZERO_TRACE or parent_id == _ZERO_PARENT:
        return None
    if version == "00" and rest:
        return None  # version 00 has exactly four fields
    return match.group(0)[:55]


def install_log_record_factory() -> None:
    """Give every log record `request_id` ('-' outside a request), `traceparent` and `job_key` /
    `job_function` (None when absent). Idempotent."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "adds_request_id", False):
        return

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = current_request_id.get()
        record.traceparent = current_traceparent.get()
        job = current_job.get()
        record.job_key, record.job_function = job if job is not None else (None, None)
        return record

    factory.adds_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)
