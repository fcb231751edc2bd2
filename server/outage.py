"""A Redis outage as one user of Redis sees it: logged once when it starts and once when it ends,
and Redis left alone for a while after each failure, so that requests do not wait on it.

The response cache (cache/store.py) and the rate limiter (auth/limiter.py) each keep one: each
says in its own words what the outage means for requests.
"""

from __future__ import annotations

import logging
import time


class Outage:
    """One user's view of a Redis outage. `down` is logged as a warning when the outage starts,
    with the error's type and message (`%s: %s`); `back` when it ends, with its length (`%.1f`)."""

    __slots__ = ("_back", "_down", "_log", "down_since", "retry_at", "retry_interval")

    def __init__(self, retry_interval: float, *, log: logging.Logger, down: str, back: str) -> None:
        self.retry_interval = retry_interval
        self._log, self._down, self._back = log, down, back
        self.down_since: float | None = None
        self.retry_at = 0.0

    def usable(self) -> bool:
        """False while Redis failed less than `retry_interval` ago: skip it instead of waiting on it."""
        return self.down_since is None or time.monotonic() >= self.retry_at

    def failed(self, exc: BaseException) -> None:
        now = time.monotonic()
        if self.down_since is None:
            self.down_since = now
            self._log.warning(self._down, type(exc).__name__, exc)
        else:
            self._log.debug("Redis still failing: %r", exc)
        self.retry_at = now + self.retry_interval

    def succeeded(self) -> None:
        if self.down_since is not None:
            self._log.info(self._back, time.monotonic() - self.down_since)
            self.down_since = None
