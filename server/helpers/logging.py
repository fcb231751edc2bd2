"""Process-wide logging set-up: readable text (the default) or one JSON object per line."""

from __future__ import annotations

import json
import logging
import sys
from datetime import UTC, datetime
from typing import Any

from server.log_context import install_log_record_factory

LOG_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s [%(request_id)s] %(message)s"
# aiohttp's access log, with the id this request was answered under.
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs "%{User-Agent}i" rid=%{X-Request-ID}o'
FORMATS = ("text", "json")


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
