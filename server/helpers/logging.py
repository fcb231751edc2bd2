"""Process-wide logging set-up: one format, with the request id on every line."""

from __future__ import annotations

import logging
import sys

from server.middlewares.request_id import install_log_record_factory

LOG_FORMAT = "%(asctime)s %(levelname)s %(process)d %(name)s [%(request_id)s] %(message)s"
# aiohttp's access log, with the id this request was answered under.
ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tfs "%{User-Agent}i" rid=%{X-Request-ID}o'


def setup_logging(level: str = "INFO") -> None:
    """Configure the root logger once for a process (called by the CLI, never on import)."""
    install_log_record_factory()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
