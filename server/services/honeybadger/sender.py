"""The Honeybadger sender: notices queued cheaply on the caller's thread, built and sent by one daemon thread.

honeybadger-python has no aiohttp integration, builds its payload on the caller's thread
(psutil stats, source lines: 30-50 ms the first time) and sends from a new non-daemon thread
per notice with no timeout (docs/decisions.md, "honeybadger-python"). So we use only its
payload builder, in our own daemon thread fed by a bounded queue, and send the JSON ourselves
with a timeout. Secrets are filtered here (payload.py): honeybadger does not apply
`params_filters` to a plain notice.

honeybadger is imported lazily, inside that thread: importing it creates a global client,
wraps `sys.excepthook`, reads HONEYBADGER_* variables, and (on the main thread only) replaces
the SIGTERM handler. Importing this module imports none of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from server.config import PROJECT_ROOT, HoneybadgerConfig
from server.metrics import process_metrics
from server.services.honeybadger.payload import Report, build_payload, caller_stack, json_default, normalize_filters

log = logging.getLogger(__name__)

NOTICES_PATH = "/v1/notices/"
# honeybadger-python's list: these environments send nothing unless force_report_data is set.
DEVELOPMENT_ENVIRONMENTS = frozenset({"development", "dev", "test"})
DROP_WARNING_INTERVAL = 60.0

_STOP = object()


@dataclass(frozen=True, slots=True)
class ReporterStats:
    sent: int
    failed: int  # the send failed (timeout, refused, non-2xx)
    dropped: int  # not queued: the backlog was full, or the reporter was closing
    abandoned: int  # queued, but the flush bound at shutdown ran out first
    pending: int  # queued or being sent


def new_report(**fields: Any) -> Report:
    """A Report with a fresh token (the notice id Honeybadger will show)."""
    return Report(token=str(uuid.uuid4()), **fields)


def _load_honeybadger() -> tuple[Any, Any, Any]:
    """Import honeybadger-python (on the reporter thread) and undo what it does to the process."""
    hook = sys.excepthook
    try:
        # On a thread other than the main one its import leaves the SIGTERM handler alone.
        from honeybadger.config import Configuration
        from honeybadger.notice import Notice
        from honeybadger.payload import read_source
    finally:
        # It wraps sys.excepthook to report crashes through its global client, which we do not
        # configure and which sends from a non-daemon thread with no timeout (a hung endpoint
        # would then hold the exit of a crashing process).
        sys.excepthook = hook
    return Configuration, Notice, read_source


# Told, under the reporter's lock, of every notice queued ("queued") or leaving the backlog
# ("sent", "failed", "dropped", "abandoned"), with the backlog after it: the metrics.
ReporterObserver = Callable[[str, int], None]


def reporter_observer() -> ReporterObserver | None:
    """The process's metrics of the backlog and of what becomes of notices, when metrics are on."""
    metrics = process_metrics()
    return metrics.honeybadger_event if metrics is not None else None


class HoneybadgerReporter:
    """Reports errors to Honeybadger from one daemon thread; every public method is cheap and never blocks."""

    def __init__(self, config: HoneybadgerConfig, observer: ReporterObserver | None = None) -> None:
        self.config = config
        self._observer = observer
        self._filters = normalize_filters(config.params_filters)
        self._url = config.endpoint.rstrip("/") + NOTICES_PATH
        self._queue: queue.Queue[Any] = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._deadline: float | None = None
        self._sent = self._failed = self._dropped = self._abandoned = self._pending = 0
        self._last_drop_warning: float | None = None
        self._send_failing = False

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        return self._thread is not None and not self._closing

    def start(self) -> None:
        """Start the sending thread, or log in one line why reporting is off."""
        cfg = self.config
        if not cfg.api_key:
            log.info("honeybadger: no API key (HONEYBADGER_API_KEY); error reporting is off")
            return
        if cfg.environment in DEVELOPMENT_ENVIRONMENTS and not cfg.force_report_data:
            log.info(
                "honeybadger: environment %r sends nothing unless honeybadger.force_report_data is set;"
                " error reporting is off",
                cfg.environment,
            )
            return
        self._thread = threading.Thread(target=self._run, name="honeybadger-reporter", daemon=True)
        self._thread.start()
        log.info("honeybadger: reporting errors to %s as environment %r", cfg.endpoint, cfg.environment)

    async def aclose(self) -> None:
        """Send what is queued for at most `flush_timeout` seconds, then give up on the rest.

        The thread is a daemon, so a send still hanging after that holds neither this call nor
        the process exit.
        """
        thread = self._thread
        if thread is None or self._closing:
            return
        bound = self.config.flush_timeout
        with self._lock:  # a report from another thread lands either before the stop or nowhere
            self._closing = True
            self._deadline = time.monotonic() + bound
            self._queue.put_nowait(_STOP)
        await asyncio.to_thread(thread.join, bound)
        stats = self.stats()
        if thread.is_alive():
            log.warning(
                "honeybadger: %d notice(s) not sent within the %.1fs flush bound; dropped",
                stats.pending,
                bound,
            )
        log.info(
            "honeybadger: reporter closed; %d sent, %d failed, %d dropped (backlog full), %d unsent at shutdown",
            stats.sent,
            stats.failed,
            stats.dropped,
            stats.abandoned + stats.pending,
        )

    def stats(self) -> ReporterStats:
        with self._lock:
            return ReporterStats(self._sent, self._failed, self._dropped, self._abandoned, self._pending)

    # -- capture (caller's thread: cheap, no I/O) ----------------------------------------------

    def submit(self, report: Report) -> str | None:
        """Queue a captured notice; its token, or None when reporting is off or the backlog is full."""
        if not self.enabled:
            return None
        return self._enqueue(report)

    def notify(
        self,
        error_class: str,
        error_message: str,
        *,
        context: Mapping[str, Any] | None = None,
        tags: tuple[str, ...] = (),
        report: Report | None = None,
    ) -> str | None:
        """Send a notice that is not an exception; returns its Honeybadger id, or None when not queued.

        `report` may carry context captured elsewhere (a request's, see middlewares/reporting.py)
        and the stack it was sent from; by default the stack is the caller's.
        """
        if not self.enabled:
            return None
        report = report if report is not None else new_report(tags=tags)
        report.error_class = error_class
        report.error_message = error_message
        if report.stack is None:
            report.stack = caller_stack(1)
        report.context.update(context or {})
        return self._enqueue(report)

    def _enqueue(self, report: Report) -> str | None:
        with self._lock:
            if not self._closing and self._queue.qsize() < self.config.max_backlog:
                self._pending += 1
                self._queue.put_nowait(report)
                self._observe("queued")
                return report.token
            self._dropped += 1
            self._observe("dropped")
            dropped = self._dropped
            now = time.monotonic()
            # One line per burst (at most one a minute), not one per dropped notice.
            warn = self._last_drop_warning is None or now - self._last_drop_warning >= DROP_WARNING_INTERVAL
            if warn:
                self._last_drop_warning = now
        if warn and not self._closing:
            log.warning(
                "honeybadger: backlog of %d notices is full; dropping new ones (%d dropped so far)",
                self.config.max_backlog,
                dropped,
            )
        return None

    # -- the thread --------------------------------------------------------------------------

    def _run(self) -> None:
        load_error: Exception | None = None
        try:
            configuration, notice_class, read_source = _load_honeybadger()
            hb_config = configuration(
                api_key=self.config.api_key,
                environment=self.config.environment,
                endpoint=self.config.endpoint,
                params_filters=list(self.config.params_filters),
                force_report_data=True,  # start() already decided that we report
                project_root=str(PROJECT_ROOT),
                report_local_variables=False,  # locals hold secrets we could not filter reliably
            )
        except Exception as exc:
            log.exception("honeybadger: cannot load honeybadger-python; no notice can be sent")
            hb_config, load_error = None, exc
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if self._past_deadline():
                self._count("abandoned")
                continue
            if hb_config is None:
                self._count("failed", reason=load_error)
                continue
            try:
                self._send(build_payload(item, self._filters, hb_config, notice_class, read_source))
            except Exception as exc:  # one bad notice or send must not stop the thread
                self._count("failed", reason=exc)
            else:
                self._count("sent")

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _send(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, default=json_default).encode()
        request = urllib.request.Request(
            self._url,
            data=data,
            method="POST",
            headers={
                "X-Api-Key": self.config.api_key,
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": "aiohttp-api-server honeybadger-reporter",
            },
        )
        timeout = self.config.timeout
        if self._deadline is not None:  # closing: no send may outlive the flush bound by much
            timeout = max(0.1, min(timeout, self._deadline - time.monotonic()))
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()

    def _observe(self, outcome: str) -> None:
        """Tell the observer; the caller holds the lock, so backlog figures arrive in order."""
        if self._observer is not None:
            try:
                self._observer(outcome, self._pending)
            except Exception:  # counting must never stop reporting
                log.debug("honeybadger: observer failed", exc_info=True)

    def _count(self, outcome: str, reason: BaseException | None = None) -> None:
        with self._lock:
            self._pending -= 1
            self._observe(outcome)
            if outcome == "abandoned":
                self._abandoned += 1
                return
            failed = outcome == "failed"
            if failed:
                self._failed += 1
            else:
                self._sent += 1
            first_failure = failed and not self._send_failing
            recovered = not failed and self._send_failing
            self._send_failing = failed
            failures = self._failed
        # One line when sending starts failing and one when it works again, not one per notice.
        if first_failure:
            log.warning("honeybadger: cannot send a notice to %s: %s", self._url, _describe(reason))
        elif failed:
            log.debug("honeybadger: send failed again: %s", _describe(reason))
        if recovered:
            log.info("honeybadger: sending works again (%d failed so far)", failures)


def _describe(exc: BaseException | None) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code}"
    if isinstance(exc, urllib.error.URLError):
        return f"{type(exc.reason).__name__}: {exc.reason}"
    return f"{type(exc).__name__}: {exc}" if exc is not None else "unknown"
