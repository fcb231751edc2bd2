"""Fixtures for the background-job tests: fast queue settings, in-process workers, worker processes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from support import deep_merge, make_test_config

from server.app import create_app
from server.config import ENV_OVERRIDES, PROJECT_ROOT, Config
from server.resources import close_resources, open_resources
from server.workers.enqueue import enqueue
from server.workers.runner import WorkerGroup
from server.workers.tasks import TASKS

INTERNAL_USER = "admin"
INTERNAL_PASSWORD = "test-internal-password"

# Short intervals so that retries, sweeps and shutdowns take a second or two, not a minute.
FAST_QUEUE = {
    "concurrency": 2,
    "high_concurrency": 2,
    "low_concurrency": 1,
    "job_timeout": 10,
    "job_retries": 3,
    "retry_delay": 0.1,
    "retry_backoff_max": 0,
    "shutdown_grace": 3.0,
    "sweep_interval": 1,
    "dequeue_timeout": 0.2,
    # Effectively never during a test; the cron test sets its own.
    "stats_cron": "0 0 1 1 *",
}


def jobs_test_config(tmp_path: Path, redis_url: str, **overrides: Any) -> Config:
    """A test config with fast queue settings and the internal pages on."""
    base = {"queue": FAST_QUEUE, "internal": {"username": INTERNAL_USER, "password": INTERNAL_PASSWORD}}
    return make_test_config(database=tmp_path / "jobs.db", redis_url=redis_url, **deep_merge(base, overrides))


def auth_header(user: str = INTERNAL_USER, password: str = INTERNAL_PASSWORD) -> dict[str, str]:
    from aiohttp import encode_basic_auth

    return {"Authorization": encode_basic_auth(user, password)}


# Job functions only the tests use, run by the same workers as the real ones.
async def flaky(ctx: dict[str, Any], *, fail_times: int) -> dict[str, int]:
    attempt = ctx["job"].attempts
    if attempt <= fail_times:
        raise RuntimeError(f"flaky failure on attempt {attempt}")
    return {"succeeded_on": attempt}


async def always_fails(ctx: dict[str, Any], *, reason: str) -> None:
    raise ValueError(reason)


TEST_TASKS = (*TASKS, flaky, always_fails)


async def post_enqueue(request: web.Request) -> web.Response:
    """A handler that enqueues what the body says, as baz does for slow_job."""
    body = await request.json()
    job = await enqueue(
        request.config_dict, body["function"], priority=body.get("priority", "default"), **body.get("kwargs", {})
    )
    return web.json_response({"key": job.key}, status=202)


def app_with_enqueue_route(config: Config) -> web.Application:
    app = create_app(config)
    app.router.add_post("/test/enqueue", post_enqueue)
    return app


@contextlib.asynccontextmanager
async def running_workers(
    config: Config,
    names: Iterable[str] | None = None,
    functions: Iterable[Callable[..., Any]] = TEST_TASKS,
    reporter: Callable[..., None] | None = None,
) -> AsyncIterator[WorkerGroup]:
    """Real SAQ workers for `names` (default: every queue) in this loop, with resources of their own."""
    resources = await open_resources(config)
    group = WorkerGroup.for_queues(
        config, names or config.queue.names, resources=resources, functions=functions, reporter=reporter
    )
    await group.start()
    try:
        yield group
    finally:
        await group.stop()
        await close_resources(resources)


async def post_job(
    client: Any, function: str, priority: str = "default", request_id: str | None = None, **kwargs: Any
) -> str:
    """Enqueue through the test route (a handler calling enqueue(), as baz does); the job key."""
    headers = {"X-Request-ID": request_id} if request_id else {}
    resp = await client.post(
        "/test/enqueue", json={"function": function, "priority": priority, "kwargs": kwargs}, headers=headers
    )
    assert resp.status == 202, await resp.text()
    return (await resp.json())["key"]


async def wait_for_job(client: Any, key: str, statuses: Iterable[str], timeout: float = 30.0) -> dict[str, Any]:
    """Poll GET /api/v1/jobs/{key} until its status is one of `statuses`; the last body."""
    wanted = set(statuses)
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        resp = await client.get(f"/api/v1/jobs/{key}")
        if resp.status == 200:
            body = await resp.json()
            if body["status"] in wanted:
                return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {key} not in {sorted(wanted)} after {timeout} s; last seen {body}")


@pytest.fixture
def jobs_config(tmp_path, redis_url) -> Config:
    return jobs_test_config(tmp_path, redis_url)


@pytest.fixture
async def jobs_client(redis_url, aiohttp_client, jobs_config):
    """The real app (no in-process worker) plus a route that enqueues."""
    return await aiohttp_client(app_with_enqueue_route(jobs_config))


class CapturingReporter:
    """A job failure reporter (what the error-reporting layer plugs in) that keeps what it is given."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, job: Any, exc: BaseException, *, final: bool, request_id: str | None) -> None:
        self.calls.append({"key": job.key, "exc": exc, "final": final, "request_id": request_id})


@pytest.fixture
def job_reporter() -> CapturingReporter:
    return CapturingReporter()


@pytest.fixture
async def workers(redis_url, jobs_config, job_reporter) -> AsyncIterator[WorkerGroup]:
    async with running_workers(jobs_config, reporter=job_reporter) as group:
        yield group


def write_config(path: Path, config: Config) -> Path:
    path.write_text(yaml.safe_dump(config.to_dict()))
    return path


def clean_env() -> dict[str, str]:
    """This environment without the variables that would override a config file."""
    return {k: v for k, v in os.environ.items() if k not in ENV_OVERRIDES}


class WorkerProcess:
    """`python -m server worker` as a child process (what circus runs)."""

    def __init__(self, config_path: Path, *args: str, log_path: Path) -> None:
        self.args = [sys.executable, "-m", "server", "--config", str(config_path), "worker", *args]
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.args, cwd=PROJECT_ROOT, env=clean_env(), stdout=log, stderr=subprocess.STDOUT
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu_seconds(self) -> float:
        """User + system CPU time the process has used so far (Linux /proc)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def worker_processes(tmp_path) -> Iterator[Callable[..., WorkerProcess]]:
    """Start `python -m server worker` processes; each is stopped at the end of the test."""
    started: list[WorkerProcess] = []

    def start(config: Config, *args: str) -> WorkerProcess:
        path = write_config(tmp_path / f"worker-{len(started)}.yaml", config)
        proc = WorkerProcess(path, *args, log_path=tmp_path / f"worker-{len(started)}.log").start()
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.stop()
