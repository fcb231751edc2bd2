"""What every log line says about the work in progress, and the process's log set-up.

The request id, the W3C trace context (`traceparent`) and the job being run live in context
variables: the request_id middleware sets the first two for a request, the workers' hooks all
three for a job (from what the enqueuing request left in `job.meta`). A log record factory puts
them on every record, whatever the logger. Lines are text (the default) or one JSON object each.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

# The request being handled (set by the request_id middleware) or the request that enqueued the
# job being run (set by the workers); "-" outside both.
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")
# The valid incoming `traceparent` of that request, or None.
current_traceparent: contextvars.ContextVar[str | None] = contextvars.ContextVar("traceparent", default=None)
# (job key, function name) while a worker runs a job.
current_job: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("job", default=None)

LOG_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s [%(request_id)s] %(message)s"
# aiohttp's access log, with the id this request was answered under.
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs "%{User-Agent}i" rid=%{X-Request-ID}o'
FORMATS = ("text", "json")

# W3C Trace Context level 1: version-traceid-parentid-flags, lowercase hex. Version ff is
# invalid; a later version may append fields after the flags (only the first four are kept).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_TRACEPARENT_MAX = 512


def valid_traceparent(value: str | None) -> str | None:
    """The header when it is a valid W3C `traceparent`, else None (the spec says: ignore it)."""
    if value is None or len(value) > _TRACEPARENT_MAX:
        return None
    match = _TRACEPARENT.fullmatch(value.strip())
    if match is None:
        return None
    version, trace_id, parent_id, _flags, rest = match.groups()
    if version == "ff" or trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    if version == "00" and rest:
        return None  # version 00 has exactly four fields
    return match.group(0)[:55]


def install_log_record_factory() -> None:
    """Give every log record `request_id` ('-' outside a request), `traceparent`, `job_key` and
    `job_function` (None when there is none). Idempotent."""
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


class TextFormatter(logging.Formatter):
    """LOG_FORMAT, plus the trace context at the end of the lines that have one."""

    def __init__(self) -> None:
        super().__init__(LOG_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        traceparent = getattr(record, "traceparent", None)
        return f"{line} traceparent={traceparent}" if traceparent else line


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line: what log collectors (Loki, Elasticsearch,
    CloudWatch...) parse without a pattern. Keys: time (UTC, ISO 8601), level, logger, message,
    request_id, pid; traceparent, job_key and job_function when there are; exception and stack
    as text when the record has them (newlines escaped, so still one line)."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", "-"),
            "pid": record.process,
        }
        for key in ("traceparent", "job_key", "job_function"):
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def make_formatter(fmt: str) -> logging.Formatter:
    """The formatter of `logging.format`: "text" or "json"; raises ValueError for another name."""
    if fmt == "json":
        return JsonFormatter()
    if fmt == "text":
        return TextFormatter()
    raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")


def setup_logging(level: str = "INFO", fmt: str = "text") -> None:
    """Configure the root logger once for a process (called by the CLI, never on import)."""
    install_log_record_factory()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
