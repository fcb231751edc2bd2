"""The request id of the work in progress on every log line: its context variable and the process's log set-up."""

from __future__ import annotations

import contextvars
import logging
import sys

# The request being handled (set by the request_id middleware) or the request that enqueued the
# job being run (set by the workers); "-" outside both.
current_request_id: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")

LOG_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s [%(request_id)s] %(message)s"
# aiohttp's access log, with the id this request was answered under.
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs "%{User-Agent}i" rid=%{X-Request-ID}o'


def install_log_record_factory() -> None:
    """Give every log record a `request_id` (the request being handled, or '-'). Idempotent."""
    previous = logging.getLogRecordFactory()
    if getattr(previous, "adds_request_id", False):
        return

    def factory(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        record.request_id = current_request_id.get()
        return record

    factory.adds_request_id = True  # type: ignore[attr-defined]
    logging.setLogRecordFactory(factory)


def setup_logging(level: str = "INFO") -> None:
    """Configure the root logger once for a process (called by the CLI, never on import)."""
    install_log_record_factory()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
