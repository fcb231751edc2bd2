"""Error reporting to Honeybadger: context captured on the loop, payloads built and sent by one thread.

honeybadger-python has no aiohttp integration, builds its payload on the caller's thread
(psutil stats, source lines: 30-50 ms the first time) and sends from a new non-daemon thread
per notice with no timeout (NOTES.md section 2). So we use only its payload builder, in our
own daemon thread fed by a bounded queue, and send the JSON ourselves with a timeout. On the
event loop we only take references to cheap request context. Secrets are filtered here:
honeybadger does not apply `params_filters` to a plain notice.

honeybadger is imported lazily, inside that thread: importing it creates a global client,
wraps `sys.excepthook`, reads HONEYBADGER_* variables, and (on the main thread only) replaces
the SIGTERM handler. Importing this module imports none of it.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import queue
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from aiohttp import web

from server.config import PROJECT_ROOT, HoneybadgerConfig
from server.metrics import process_metrics
from server.keys import (
    API_VERSION_KEY, BODY_KEY, CONFIG_KEY, HONEYBADGER_KEY, REPORTER_KEY, REQUEST_ID_KEY,
)

if TYPE_CHECKING:
    from saq.job import Job

log = logging.getLogger(__name__)

FILTERED = "[FILTERED]"
NOTICES_PATH = "/v1/notices/"
# honeybadger-python's list: these environments send nothing unless force_report_data is set.
DEVELOPMENT_ENVIRONMENTS = frozenset({"development", "dev", "test"})
# A client that went away is not a server error (CancelledError is a BaseException).
NOT_REPORTED: tuple[type[BaseException], ...] = (asyncio.CancelledError, ConnectionResetError)
# How deep secrets are looked for in params, bodies and contexts; deeper values are replaced.
MAX_DEPTH = 16
STACK_LIMIT = 40
DROP_WARNING_INTERVAL = 60.0
# Context keys a SAQ worker's ctx gets from `bind_job_reporting`.
WORKER_REPORTER = "honeybadger"
WORKER_REPORT_FAILURE = "report_job_failure"
WORKER_REPORT_SWEPT = "report_swept_job"

_STOP = object()


@dataclass(slots=True)
class _Report:
    """One notice as captured on the caller's thread: references and plain values only."""

    token: str
    exception: BaseException | None = None
    traceback: TracebackType | None = None
    error_class: str | None = None
    error_message: str | None = None
    # Where a notice without an exception was sent from: (file, line, function), newest first.
    stack: list[tuple[str, int, str]] | None = None
    context: dict[str, Any] = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    request_id: str | None = None
    url: str | None = None
    component: str | None = None
    action: str | None = None
    query: Mapping[str, str] | None = None
    body: Any = None
    params: Any = None
    headers: Mapping[str, str] | None = None
    method: str | None = None
    remote: str | None = None


@dataclass(frozen=True, slots=True)
class ReporterStats:
    sent: int
    failed: int  # the send failed (timeout, refused, non-2xx)
    dropped: int  # not queued: the backlog was full, or the reporter was closing
    abandoned: int  # queued, but the flush bound at shutdown ran out first
    pending: int  # queued or being sent


def normalize_filters(filters: Iterable[str]) -> tuple[str, ...]:
    return tuple(f.lower().replace("-", "_") for f in filters if f)


def is_secret(key: object, filters: tuple[str, ...]) -> bool:
    """A key is secret when one of the filters is part of it: `token` covers `X-Auth-Token`."""
    name = str(key).lower().replace("-", "_")
    return any(f in name for f in filters)


def filter_secrets(value: Any, filters: tuple[str, ...], depth: int = 0) -> Any:
    """A copy of `value` where every mapping entry under a secret key reads "[FILTERED]"."""
    if depth > MAX_DEPTH:
        return "[TOO DEEP]"
    if isinstance(value, Mapping):
        return {
            str(k): FILTERED if is_secret(k, filters) else filter_secrets(v, filters, depth + 1)
            for k, v in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [filter_secrets(v, filters, depth + 1) for v in value]
    return value


def _params(query: Mapping[str, str] | None, body: Any) -> dict[str, Any]:
    """Query parameters (repeated ones as lists) and the JSON body, as frameworks merge them."""
    params: dict[str, Any] = {}
    if query:
        getall = getattr(query, "getall", None)
        for name in query:
            values = getall(name) if getall is not None else [query[name]]
            params[name] = values[0] if len(values) == 1 else list(values)
    if isinstance(body, Mapping):
        params.update(body)
    elif body is not None:
        params["_json"] = body  # Rails' name for a JSON body that is not an object
    return params


def _cgi_data(headers: Mapping[str, str] | None, method: str | None, remote: str | None) -> dict[str, str]:
    data: dict[str, str] = {}
    if method:
        data["REQUEST_METHOD"] = method
    if remote:
        data["REMOTE_ADDR"] = remote
    headers = headers or {}
    getall = getattr(headers, "getall", None)
    for name in headers:
        values = getall(name) if getall is not None else [headers[name]]
        key = name.upper().replace("-", "_")
        if key not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            key = "HTTP_" + key
        data[key] = ", ".join(values)
    return data


def _project_path(filename: str) -> str:
    root = str(PROJECT_ROOT)
    return "[PROJECT_ROOT]" + filename[len(root):] if filename.startswith(root + "/") else filename


def _caller_stack(skip: int) -> list[tuple[str, int, str]]:
    """The calling frames, newest first, without reading any file (the thread reads the source)."""
    frames = itertools.islice(_walk(sys._getframe(skip + 1)), STACK_LIMIT)
    return [(f.f_code.co_filename, f.f_lineno, f.f_code.co_name) for f in frames]


def _walk(frame: Any) -> Iterable[Any]:
    while frame is not None:
        yield frame
        frame = frame.f_back


def _api_version(request: web.Request) -> int | None:
    for app in reversed(request.match_info.apps):
        if API_VERSION_KEY in app:
            return app[API_VERSION_KEY]
    return None


def _url(request: web.Request) -> str:
    # Without the query: its values are reported, filtered, in params.
    try:
        return str(request.url.with_query(None))
    except ValueError:  # a Host header yarl refuses
        return request.path


def _json_default(value: Any) -> str:
    try:
        return repr(value)
    except Exception:
        return "[unserializable]"


def _status_name(job: Job) -> str:
    return str(getattr(job.status, "value", job.status))


def _job_context(job: Job, *, will_retry: bool | None) -> dict[str, Any]:
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
                " error reporting is off", cfg.environment,
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
                stats.pending, bound,
            )
        log.info(
            "honeybadger: reporter closed; %d sent, %d failed, %d dropped (backlog full), %d unsent at shutdown",
            stats.sent, stats.failed, stats.dropped, stats.abandoned + stats.pending,
        )

    def stats(self) -> ReporterStats:
        with self._lock:
            return ReporterStats(self._sent, self._failed, self._dropped, self._abandoned, self._pending)

    # -- capture (caller's thread: cheap, no I/O) ----------------------------------------------

    def report_request(self, request: web.Request, exc: BaseException) -> None:
        """The errors middleware's reporter: an unhandled exception in a request (not a disconnect)."""
        if not self.enabled or isinstance(exc, NOT_REPORTED):
            return
        report = self._request_report(request, tags=("http",))
        report.exception = exc
        report.traceback = exc.__traceback__
        self._enqueue(report)

    def notify(
        self,
        error_class: str,
        error_message: str,
        *,
        context: Mapping[str, Any] | None = None,
        request: web.Request | None = None,
        tags: tuple[str, ...] = (),
    ) -> str | None:
        """Send a notice that is not an exception; returns its Honeybadger id, or None when not queued."""
        if not self.enabled:
            return None
        if request is not None:
            report = self._request_report(request, tags=tags)
        else:
            report = _Report(token=str(uuid.uuid4()), tags=tags)
        report.error_class = error_class
        report.error_message = error_message
        report.stack = _caller_stack(1)
        report.context.update(context or {})
        return self._enqueue(report)

    def report_job_failure(
        self, job: Job, exc: BaseException | None, *, final: bool, request_id: str | None = None
    ) -> str | None:
        """A SAQ job raised (or timed out): for the worker's `after_process`.

        `final` is True when SAQ will not retry it (status failed); `request_id` is the id of
        the request that enqueued it (taken from `job.meta["request_id"]` when not given).
        """
        if not self.enabled:
            return None
        rid = _job_request_id(job, request_id)
        report = self._job_report(job, rid, will_retry=not final, tags=("saq", "job-failed"))
        if exc is not None:
            report.exception = exc
            report.traceback = exc.__traceback__
        else:
            report.error_class = "JobFailed"
            report.error_message = f"job {job.function} failed: {job.error or 'no error recorded'}"
            report.stack = _caller_stack(1)
        return self._enqueue(report)

    def report_swept_job(self, job: Job, *, request_id: str | None = None) -> str | None:
        """A job found active with no live worker (the worker was killed) and swept by SAQ."""
        if not self.enabled:
            return None
        status = _status_name(job)
        will_retry = True if status == "queued" else False if status in ("aborted", "failed") else None
        rid = _job_request_id(job, request_id)
        report = self._job_report(job, rid, will_retry=will_retry, tags=("saq", "job-swept"))
        report.error_class = "JobSwept"
        report.error_message = (
            f"job {job.function} ({job.key}) was lost by its worker and swept: status {status},"
            f" attempt {job.attempts} of {job.retries}"
        )
        report.stack = _caller_stack(1)
        return self._enqueue(report)

    def _request_report(self, request: web.Request, *, tags: tuple[str, ...]) -> _Report:
        route = request.match_info.route
        resource = route.resource
        rid = request.get(REQUEST_ID_KEY)
        return _Report(
            token=str(uuid.uuid4()),
            tags=tags,
            request_id=rid,
            context={"request_id": rid, "api_version": _api_version(request), "route": route.name},
            url=_url(request),
            component=resource.canonical if resource is not None else request.path,
            action=request.method,
            query=request.rel_url.query,  # immutable: read later, on the thread
            body=request.get(BODY_KEY),
            headers=request.headers,  # immutable too
            method=request.method,
            remote=request.remote,
        )

    def _job_report(self, job: Job, rid: str | None, *, will_retry: bool | None, tags: tuple[str, ...]) -> _Report:
        return _Report(
            token=str(uuid.uuid4()),
            tags=tags,
            request_id=rid,
            context={"request_id": rid, "job": _job_context(job, will_retry=will_retry)},
            component="saq",
            action=job.function,
            params={"kwargs": dict(job.kwargs or {})},
        )

    def _enqueue(self, report: _Report) -> str | None:
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
                self.config.max_backlog, dropped,
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
                self._send(self._payload(item, hb_config, notice_class, read_source))
            except Exception as exc:  # one bad notice or send must not stop the thread
                self._count("failed", reason=exc)
            else:
                self._count("sent")

    def _past_deadline(self) -> bool:
        return self._deadline is not None and time.monotonic() >= self._deadline

    def _payload(
        self, item: _Report, hb_config: Any, notice_class: Any, read_source: Callable[..., Any]
    ) -> dict[str, Any]:
        notice = notice_class(
            exception=item.exception,
            exc_traceback=item.traceback,
            error_class=item.error_class,
            error_message=item.error_message,
            context=filter_secrets(item.context, self._filters),
            tags=list(item.tags),
            config=hb_config,
            request_id=item.request_id,
        )
        payload: dict[str, Any] = notice.payload
        error = payload["error"]
        error["token"] = item.token  # chosen on the loop, so callers can show the id
        if item.stack is not None:
            error["backtrace"] = [
                {"number": line, "file": _project_path(name), "method": func, "source": read_source((name, line))}
                for name, line, func in item.stack
            ]
        request = payload["request"]
        for key in ("url", "component", "action"):
            value = getattr(item, key)
            if value is not None:
                request[key] = value
        params = item.params if item.params is not None else _params(item.query, item.body)
        if params:
            request["params"] = filter_secrets(params, self._filters)
        if item.headers is not None or item.method is not None:
            request["cgi_data"] = filter_secrets(_cgi_data(item.headers, item.method, item.remote), self._filters)
        return payload

    def _send(self, payload: dict[str, Any]) -> None:
        data = json.dumps(payload, default=_json_default).encode()
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


async def honeybadger_ctx(app: web.Application) -> AsyncIterator[None]:
    """The app's reporter: unhandled request errors go to it through REPORTER_KEY."""
    reporter = HoneybadgerReporter(app[CONFIG_KEY].honeybadger, observer=reporter_observer())
    reporter.start()
    app[HONEYBADGER_KEY] = reporter
    if reporter.enabled:
        app[REPORTER_KEY] = reporter.report_request
    try:
        yield
    finally:
        await reporter.aclose()


def reporter_observer() -> ReporterObserver | None:
    """The process's metrics of the backlog and of what happens to notices, when metrics are on."""
    metrics = process_metrics()
    return metrics.honeybadger_event if metrics is not None else None


def bind_job_reporting(ctx: MutableMapping[str, Any], reporter: HoneybadgerReporter) -> None:
    """Give a SAQ worker's ctx the reporter and its job hooks (see `report_job_failure`)."""
    ctx[WORKER_REPORTER] = reporter
    ctx[WORKER_REPORT_FAILURE] = reporter.report_job_failure
    ctx[WORKER_REPORT_SWEPT] = reporter.report_swept_job


async def open_worker_reporting(ctx: MutableMapping[str, Any], config: HoneybadgerConfig) -> HoneybadgerReporter:
    """For a standalone worker's `startup` hook (after any fork): start a reporter and bind it."""
    reporter = HoneybadgerReporter(config)
    reporter.start()
    bind_job_reporting(ctx, reporter)
    return reporter


async def close_worker_reporting(ctx: MutableMapping[str, Any]) -> None:
    """For the worker's `shutdown` hook: flush within the bound."""
    reporter = ctx.get(WORKER_REPORTER)
    if isinstance(reporter, HoneybadgerReporter):
        await reporter.aclose()
