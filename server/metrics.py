"""Prometheus metrics of every process (web, workers), summed at /internal/metrics.

prometheus_client's multiprocess mode: each process writes its figures to memory-mapped files
in one directory (`metrics.dir`), and a scrape reads and sums them all, so two web processes and
several workers answer as one system. prometheus_client picks that mode when it is *imported*,
from the environment variable PROMETHEUS_MULTIPROC_DIR. So this module is the one place that
sets it, from the config, before anything imports prometheus_client: `setup_process_metrics`
runs first thing in every process (`python -m server ...`, the `saq` settings, `make dev`'s
factory, the test session), and no other module of ours imports prometheus_client.
If prometheus_client was imported before, with another directory, setup raises MetricsError.

The figures live in one object per process (`ProcessMetrics`), as the files do. Label values
come from a closed set (route templates, namespaces, queue and function names), never from
raw request data, so the number of series stays bounded.

What every request updates (its latency, the in-flight count, cache results) is added up in
plain Python on the event loop and written to the files by `publish()`: every second
(PUBLISH_INTERVAL, the app's metrics_ctx), before this process answers a scrape, and at shutdown.
Writing each request to the files costs about 12 us here (a lock, a pid check and a write per value,
three values a request); the request itself costs under 100 us (docs/decisions.md, "Metrics").
A scrape may so miss up to a second of another process's requests, and a killed process's last
second: the next scrape has them, or they are gone with the process.

Over 300 lines: the metric definitions, the set-up that must come before prometheus_client's
import, the batching and the rendering share that one rule and the process-wide state.
"""

from __future__ import annotations

import atexit
import bisect
import logging
import os
import re
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from server.config import Config

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Request latencies here are mostly under a few milliseconds: finer buckets at the low end.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0)
WAIT_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
UNMATCHED_ROUTE = "<unmatched>"
# Seconds between two writes of the per-request figures to this process's files.
PUBLISH_INTERVAL = 1.0
_LIVE_GAUGE_FILE = re.compile(r"^gauge_live\w*?_(\d+)\.db$")


class MetricsError(RuntimeError):
    """Metrics cannot be set up as configured (prometheus_client was imported too early)."""


class ProcessMetrics:
    """The metric objects of this process. Created by `setup_process_metrics`, never on import."""

    def __init__(self, multiprocess_dir: Path | None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess_dir = multiprocess_dir
        # Used for scrapes in single-process mode only (no directory configured); in multiprocess
        # mode the files are the source and a fresh registry reads them per scrape.
        self.registry = CollectorRegistry(auto_describe=True)
        reg = self.registry
        # Its _count series is the number of requests by route, method and status.
        self.http_requests = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route template, method and status.",
            ["route", "method", "status"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.http_in_flight = Gauge(
            "http_requests_in_flight",
            "HTTP requests being answered now.",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.cache_requests = Counter(
            "cache_requests",
            "Answers of cached routes, by cache namespace and result (hit, miss, bypass).",
            ["namespace", "result"],
            registry=reg,
        )
        self.rate_limited = Counter(
            "rate_limit_rejections",
            "Requests refused with 429 by a rate limit, by limit name.",
            ["limit"],
            registry=reg,
        )
        job_labels = ["queue", "function"]
        self.jobs_enqueued = Counter("jobs_enqueued", "Jobs enqueued by the web app.", job_labels, registry=reg)
        self.jobs_completed = Counter("jobs_completed", "Job attempts that completed.", job_labels, registry=reg)
        self.jobs_failed = Counter("jobs_failed", "Jobs that failed with no attempt left.", job_labels, registry=reg)
        self.jobs_retried = Counter(
            "jobs_retried",
            "Job attempts that failed, timed out or were interrupted, and will run again.",
            job_labels,
            registry=reg,
        )
        self.jobs_aborted = Counter("jobs_aborted", "Jobs aborted while running.", job_labels, registry=reg)
        self.jobs_swept = Counter(
            "jobs_swept",
            "Jobs taken back from dead or stuck workers, by outcome (requeued, aborted).",
            [*job_labels, "outcome"],
            registry=reg,
        )
        self.job_duration = Histogram(
            "job_duration_seconds",
            "Run time of a job attempt, by queue, function and outcome.",
            [*job_labels, "outcome"],
            buckets=JOB_BUCKETS,
            registry=reg,
        )
        self.honeybadger_backlog = Gauge(
            "honeybadger_backlog",
            "Error notices waiting to be sent to Honeybadger.",
            registry=reg,
            multiprocess_mode="livesum",
        )
        self.honeybadger_notices = Counter(
            "honeybadger_notices",
            "Error notices by outcome: sent, failed (the send failed), "
            "dropped (backlog full), abandoned (unsent at shutdown).",
            ["outcome"],
            registry=reg,
        )
        self.db_write_wait = Histogram(
            "db_write_wait_seconds",
            "Time a database write waited for the writer connection.",
            buckets=WAIT_BUCKETS,
            registry=reg,
        )
        # This process's requests being answered now (published as http_requests_in_flight).
        self.in_flight = 0
        self._bounds = (*LATENCY_BUCKETS, float("inf"))
        # Not yet published: per (route, method, status), a count per bucket and, last, the sum.
        self._requests: dict[tuple[str, str, int], list[float]] = {}
        self._cache: dict[tuple[str, str], int] = {}

    # -- HTTP (on the event loop's thread) --------------------------------------------------

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        pending = self._requests.get(key)
        if pending is None:
            pending = self._requests[key] = [0.0] * (len(self._bounds) + 1)
        # The first bucket whose bound is >= seconds, as Histogram.observe chooses it.
        pending[bisect.bisect_left(self._bounds, seconds)] += 1
        pending[-1] += seconds

    def count_cache(self, namespace: str, result: str) -> None:
        key = (namespace, result)
        self._cache[key] = self._cache.get(key, 0) + 1

    def publish(self) -> None:
        """Write the per-request figures counted since the last call to this process's files.

        Histograms have no public way to add many observations at once: this adds to the
        histogram child's sum and bucket values as Histogram.observe does (tests/test_metrics.py
        checks the result against the text exposition).
        """
        self.http_in_flight.set(self.in_flight)
        requests, self._requests = self._requests, {}
        for (route, method, status), pending in requests.items():
            child = self.http_requests.labels(route, method, str(status))
            child._sum.inc(pending[-1])
            for bucket, count in zip(child._buckets, pending[:-1], strict=True):
                if count:
                    bucket.inc(count)
        cache, self._cache = self._cache, {}
        for (namespace, result), count in cache.items():
            self.cache_requests.labels(namespace, result.lower()).inc(count)

    # -- jobs -----------------------------------------------------------------------------------

    def count_enqueued(self, queue: str, function: str) -> None:
        self.jobs_enqueued.labels(queue, function).inc()

    def count_attempt(self, queue: str, function: str, outcome: str, seconds: float | None) -> None:
        """One finished attempt: outcome completed, failed, retried or aborted."""
        counter = {
            "completed": self.jobs_completed,
            "failed": self.jobs_failed,
            "retried": self.jobs_retried,
            "aborted": self.jobs_aborted,
        }[outcome]
        counter.labels(queue, function).inc()
        if seconds is not None and seconds >= 0:
            self.job_duration.labels(queue, function, outcome).observe(seconds)

    def count_swept(self, queue: str, function: str, outcome: str) -> None:
        self.jobs_swept.labels(queue, function, outcome).inc()

    # -- Honeybadger and the database ---------------------------------------------------------

    def honeybadger_event(self, outcome: str, backlog: int) -> None:
        """The reporter's observer: a notice was queued ("queued") or left it (the outcome)."""
        if outcome != "queued":
            self.honeybadger_notices.labels(outcome).inc()
        self.honeybadger_backlog.set(backlog)

    def observe_write_wait(self, seconds: float) -> None:
        self.db_write_wait.observe(seconds)


# The process's metrics, once set up (one per process: so are prometheus_client's files).
_process: ProcessMetrics | None = None


def _same_dir(a: str | None, b: Path) -> bool:
    return a is not None and Path(a).resolve() == b.resolve()


def setup_process_metrics(config: Config) -> ProcessMetrics | None:
    """Point prometheus_client at `metrics.dir` and create this process's metrics; idempotent.

    Call it before anything imports prometheus_client. Returns None when metrics are disabled.
    Raises MetricsError when prometheus_client was already imported with another directory, or
    when the process was set up before with another one.
    """
    global _process
    cfg = config.metrics
    if not cfg.enabled:
        return _process
    directory = Path(cfg.dir)
    if _process is not None:
        if _process.multiprocess_dir is not None and not _same_dir(str(_process.multiprocess_dir), directory):
            raise MetricsError(
                f"metrics.dir is {directory} but this process already writes its metrics to "
                f"{_process.multiprocess_dir}; one process has one metrics directory"
            )
        return _process
    current = os.environ.get(MULTIPROC_ENV)
    if "prometheus_client.values" in sys.modules and not _same_dir(current, directory):
        raise MetricsError(
            f"prometheus_client was imported before the metrics were set up (with "
            f"{MULTIPROC_ENV}={current!r}, not metrics.dir {directory}); set up metrics first"
        )
    directory.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(directory)
    prune_dead_processes(directory)
    _process = ProcessMetrics(directory)
    # The in-flight and backlog gauges of this process stop counting when it exits.
    atexit.register(mark_process_dead, os.getpid(), directory)
    return _process


def process_metrics() -> ProcessMetrics | None:
    """This process's metrics, or None when they are off or not set up."""
    return _process


def count_rate_limited(limit: str) -> None:
    """Count one request refused (429) by the rate limit named `limit`; call it where the 429 is made."""
    if _process is not None:
        _process.rate_limited.labels(limit).inc()


def reset_metrics_dir(directory: str | Path) -> None:
    """Empty the directory (the launcher does, before any process of the system starts)."""
    path = Path(directory)
    if path.is_dir():
        for child in path.iterdir():
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child)
            else:
                child.unlink(missing_ok=True)
    path.mkdir(parents=True, exist_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prune_dead_processes(directory: Path) -> None:
    """Drop the live gauges (in flight, backlog) of processes that died without cleaning up
    (killed): theirs would otherwise count forever. Their counters stay: what they counted happened."""
    try:
        names = os.listdir(directory)
    except OSError:
        return
    for name in names:
        match = _LIVE_GAUGE_FILE.match(name)
        if match and not _alive(int(match.group(1))):
            (directory / name).unlink(missing_ok=True)


def mark_process_dead(pid: int, directory: Path) -> None:
    from prometheus_client import multiprocess

    try:
        multiprocess.mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]
    except OSError:
        pass


@dataclass(frozen=True, slots=True)
class ExtraGauge:
    """A gauge family whose values are read at scrape time (queue depth), not from the files."""

    name: str
    documentation: str
    labels: tuple[str, ...]
    samples: Iterable[tuple[tuple[str, ...], float]]


def render(metrics: ProcessMetrics, extra: Iterable[ExtraGauge] = ()) -> bytes:
    """The Prometheus text exposition of every process's metrics, plus `extra` gauges."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.multiprocess import MultiProcessCollector

    if metrics.multiprocess_dir is not None:
        registry = CollectorRegistry()
        MultiProcessCollector(registry, path=str(metrics.multiprocess_dir))  # type: ignore[no-untyped-call]
    else:
        registry = metrics.registry
    families = []
    for gauge in extra:
        family = GaugeMetricFamily(gauge.name, gauge.documentation, labels=list(gauge.labels))
        for label_values, value in gauge.samples:
            family.add_metric(list(label_values), value)
        families.append(family)
    text = generate_latest(registry)
    if families:
        extra_registry = CollectorRegistry()
        extra_registry.register(_Static(families))
        text += generate_latest(extra_registry)
    return text


class _Static:
    def __init__(self, families: list[Any]) -> None:
        self._families = families

    def collect(self) -> Iterable[Any]:
        return self._families


def job_outcome(status: str, raised: bool) -> str | None:
    """How a job attempt ended for the counters, from SAQ's status after it, or None (nothing to count)."""
    if status == "complete":
        return "completed"
    if status == "failed":
        return "failed"
    if status == "aborted":
        return "aborted"
    if status in ("queued", "scheduled"):
        return "retried"  # failed, timed out, or cancelled at shutdown: it runs again
    return "failed" if raised else None


def route_label(resource: Any) -> str:
    """The route template of a matched resource (`/api/v1/users/{id}`), or "<unmatched>"."""
    if resource is None:
        return UNMATCHED_ROUTE
    return str(resource.canonical)
