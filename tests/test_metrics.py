"""/internal/metrics: Prometheus figures summed over every process, behind the internal credentials."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
from fixtures_jobs import (
    app_with_enqueue_route,
    auth_header,
    clean_env,
    jobs_test_config,
    post_job,
    running_workers,
    wait_for_job,
    write_config,
)
from prometheus_client.parser import text_string_to_metric_families

from server.app import create_app
from server.config import PROJECT_ROOT, HoneybadgerConfig
from server.keys import DB_KEY
from server.metrics import PUBLISH_INTERVAL, count_rate_limited, process_metrics, render
from server.services.honeybadger.sender import HoneybadgerReporter, reporter_observer
from testing.redis import free_port

USER_ROUTE = "/api/v1/users/{user_id}"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, by name and labels, read with prometheus_client's own parser."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(client, **kwargs) -> Samples:
    resp = await client.get("/internal/metrics", headers=kwargs.pop("headers", auth_header()))
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return parse(await resp.text())


# --- access --------------------------------------------------------------------------------------


async def test_metrics_need_the_internal_credentials(jobs_client):
    assert (await jobs_client.get("/internal/metrics")).status == 401
    assert (await jobs_client.get("/internal/metrics", headers=auth_header(password="nope"))).status == 401
    # No scraper token is configured: a bearer token opens nothing.
    resp = await jobs_client.get("/internal/metrics", headers={"Authorization": "Bearer anything"})
    assert resp.status == 401
    assert (await jobs_client.get("/internal/metrics", headers=auth_header())).status == 200


async def test_a_scraper_token_opens_the_metrics_and_nothing_else(tmp_path, redis_url, aiohttp_client):
    token = "scraper-token-for-the-test"
    # No internal password: the dashboards are not served at all, the metrics are, to the token.
    config = jobs_test_config(tmp_path, redis_url, internal={"password": ""}, metrics={"token": token})
    client = await aiohttp_client(create_app(config))
    bearer = {"Authorization": f"Bearer {token}"}
    resp = await client.get("/internal/metrics", headers=bearer)
    assert resp.status == 200
    assert "http_request_duration_seconds" in await resp.text()
    assert (await client.get("/internal/metrics", headers={"Authorization": "Bearer wrong"})).status == 404
    assert (await client.get("/internal/jobs/failed", headers=bearer)).status == 404


async def test_metrics_off_means_no_page_and_nothing_counted(tmp_path, redis_url, aiohttp_client):
    config = jobs_test_config(tmp_path, redis_url, metrics={"enabled": False})
    app = create_app(config)
    client = await aiohttp_client(app)
    assert (await client.get("/internal/metrics", headers=auth_header())).status == 404
    # This test process's metrics exist (other tests' apps count into them): an app with
    # metrics off adds nothing to them.
    metrics = process_metrics()
    assert metrics is not None

    def healthz_count() -> float:
        metrics.publish()
        labels = {"route": "/healthz", "method": "GET", "status": "200"}
        return value(parse(render(metrics).decode()), "http_request_duration_seconds_count", **labels)

    before = healthz_count()
    for _ in range(3):
        assert (await client.get("/healthz")).status == 200
    assert healthz_count() == before
    counted = await aiohttp_client(create_app(jobs_test_config(tmp_path, redis_url)))
    assert (await counted.get("/healthz")).status == 200
    assert healthz_count() == before + 1  # (what the check above would have seen)
    assert len(app.middlewares) == 1  # the one middleware, and no other


# --- what is counted, in this process ---------------------------------------------------------


async def test_requests_are_counted_by_route_template_method_and_status(jobs_client):
    before = await scrape(jobs_client)
    for _ in range(3):
        assert (await jobs_client.get("/api/v1/foo")).status == 200
    assert (await jobs_client.get("/api/v1/users/12345")).status == 404
    assert (await jobs_client.get("/no/such/page")).status == 404
    assert (await jobs_client.request("PROPFIND", "/api/v1/foo")).status == 405
    after = await scrape(jobs_client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    count = "http_request_duration_seconds_count"
    assert delta(count, route="/api/v1/foo", method="GET", status="200") == 3
    # A path parameter is counted under its template, never under the raw path.
    assert delta(count, route=USER_ROUTE, method="GET", status="404") >= 1
    routes = {dict(labels)["route"] for (name, labels) in after if name == count}
    assert not any("12345" in r for r in routes)
    assert delta(count, route="<unmatched>", method="GET", status="404") == 1
    # aiohttp resolves no route for a method it does not serve; an unknown method is OTHER.
    assert delta(count, route="<unmatched>", method="OTHER", status="405") == 1
    # The latency histogram's buckets agree with its count.
    assert (
        delta("http_request_duration_seconds_bucket", route="/api/v1/foo", method="GET", status="200", le="+Inf") == 3
    )
    assert delta("http_request_duration_seconds_sum", route="/api/v1/foo", method="GET", status="200") > 0
    # The scrape itself is in flight while it is answered (in this process).
    assert value(after, "http_requests_in_flight") >= 1


async def test_published_latencies_fall_in_the_buckets_histogram_observe_would_choose(jobs_client):
    metrics = process_metrics()
    assert metrics is not None
    for seconds in (0.001, 0.0011, 20.0):  # on a bound, just above it, above the last one
        metrics.observe_request("/test/bounds", "GET", 200, seconds)
    samples = await scrape(jobs_client)  # the scrape publishes this process's figures first
    labels = {"route": "/test/bounds", "method": "GET", "status": "200"}
    bucket = "http_request_duration_seconds_bucket"
    assert value(samples, bucket, **labels, le="0.001") == 1
    assert value(samples, bucket, **labels, le="0.0025") == 2
    assert value(samples, bucket, **labels, le="10.0") == 2
    assert value(samples, bucket, **labels, le="+Inf") == 3
    assert value(samples, "http_request_duration_seconds_count", **labels) == 3
    assert value(samples, "http_request_duration_seconds_sum", **labels) == pytest.approx(20.0021)


async def test_cache_results_are_counted_per_namespace(fake_cat_facts, tmp_path, redis_url, aiohttp_client):
    config = jobs_test_config(tmp_path, redis_url, cat_facts={"url": fake_cat_facts.url})
    client = await aiohttp_client(app_with_enqueue_route(config))
    before = await scrape(client)
    assert (await client.get("/api/v1/baz")).headers["X-Cache"] == "MISS"
    assert (await client.get("/api/v1/baz")).headers["X-Cache"] == "HIT"
    assert (await client.get("/api/v1/baz")).headers["X-Cache"] == "HIT"
    after = await scrape(client)
    for result, expected in (("miss", 1), ("hit", 2)):
        assert (
            value(after, "cache_requests_total", namespace="baz", result=result)
            - value(before, "cache_requests_total", namespace="baz", result=result)
            == expected
        )
    # ...and the miss enqueued the slow job.
    assert (
        value(after, "jobs_enqueued_total", queue="default", function="slow_job")
        - value(before, "jobs_enqueued_total", queue="default", function="slow_job")
        == 1
    )


async def test_job_outcomes_and_durations_are_counted(jobs_config, jobs_client):
    before = await scrape(jobs_client)
    async with running_workers(jobs_config, ["default"]):
        ok = await post_job(jobs_client, "slow_job", seconds=0.05)
        flaky = await post_job(jobs_client, "flaky", fail_times=1)
        bad = await post_job(jobs_client, "always_fails", reason="no", retries=2)
        for key in (ok, flaky, bad):
            await wait_for_job(jobs_client, key, {"complete", "failed"})
    after = await scrape(jobs_client)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("jobs_enqueued_total", queue="default", function="slow_job") == 1
    assert delta("jobs_completed_total", queue="default", function="slow_job") == 1
    assert delta("jobs_completed_total", queue="default", function="flaky") == 1
    assert delta("jobs_retried_total", queue="default", function="flaky") == 1
    assert delta("jobs_retried_total", queue="default", function="always_fails") == 1
    assert delta("jobs_failed_total", queue="default", function="always_fails") == 1
    assert delta("job_duration_seconds_count", queue="default", function="slow_job", outcome="completed") == 1
    assert delta("job_duration_seconds_sum", queue="default", function="slow_job", outcome="completed") >= 0.05
    # Read from Redis at scrape time: nothing waits or runs any more.
    assert value(after, "job_queue_depth", queue="default", state="queued") == 0
    assert value(after, "job_queue_depth", queue="default", state="active") == 0


async def test_rate_limit_rejections_have_a_counter_and_a_one_line_bump(jobs_client):
    before = await scrape(jobs_client)
    count_rate_limited("test-limit")
    count_rate_limited("test-limit")
    after = await scrape(jobs_client)
    assert (
        value(after, "rate_limit_rejections_total", limit="test-limit")
        - value(before, "rate_limit_rejections_total", limit="test-limit")
        == 2
    )


async def test_honeybadger_backlog_and_drops_are_counted(jobs_client, honeybadger_collector):
    honeybadger_collector.hang(30)  # every send hangs: the backlog fills
    reporter = HoneybadgerReporter(
        HoneybadgerConfig(**honeybadger_collector.honeybadger_config(max_backlog=2, flush_timeout=0.2)),
        observer=reporter_observer(),
    )
    reporter.start()
    before = await scrape(jobs_client)
    try:
        for n in range(6):
            reporter.notify("Test", f"notice {n}")
        after = await scrape(jobs_client)
    finally:
        honeybadger_collector.release()
        await reporter.aclose()
    dropped = value(after, "honeybadger_notices_total", outcome="dropped") - value(
        before, "honeybadger_notices_total", outcome="dropped"
    )
    # At most one notice is being sent and two wait; the others were dropped.
    assert 3 <= dropped <= 4
    assert value(after, "honeybadger_backlog") >= 2


async def test_database_writer_wait_is_observed(jobs_client):
    before = await scrape(jobs_client)
    db = jobs_client.server.app[DB_KEY]
    await asyncio.gather(*(db.execute("CREATE TABLE IF NOT EXISTS t_metrics (x)") for _ in range(3)))
    after = await scrape(jobs_client)
    assert value(after, "db_write_wait_seconds_count") - value(before, "db_write_wait_seconds_count") == 3


# --- two web processes sharing the metrics directory ----------------------------------------------


class ServeProcess:
    """`python -m server serve` on a port of its own (what circus runs, twice)."""

    def __init__(self, config_path: Path, port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        with open(log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server", "--config", str(config_path), "serve", "--port", str(port)],
                cwd=PROJECT_ROOT,
                env=clean_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait_ready(self, session: aiohttp.ClientSession, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log_path.read_text()
            try:
                async with session.get(f"{self.url}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise AssertionError(f"serve on {self.port} not ready: {self.log_path.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def serve_processes(tmp_path) -> Iterator[list[ServeProcess]]:
    started: list[ServeProcess] = []
    yield started
    for proc in started:
        proc.stop()


async def test_two_web_processes_sum_into_one_scrape(tmp_path, redis_url, fake_cat_facts, serve_processes):
    metrics_dir = tmp_path / "metrics"
    # Both embed a worker, as `python -m server serve` does in development: the jobs run there too.
    config = jobs_test_config(
        tmp_path,
        redis_url,
        cat_facts={"url": fake_cat_facts.url},
        queue={"embedded_worker": True},
        metrics={"dir": str(metrics_dir)},
    )
    config_path = write_config(tmp_path / "serve.yaml", config)
    a = ServeProcess(config_path, free_port(), tmp_path / "a.log")
    b = ServeProcess(config_path, free_port(), tmp_path / "b.log")
    serve_processes.extend([a, b])
    auth = auth_header()
    async with aiohttp.ClientSession() as session:
        await asyncio.gather(a.wait_ready(session), b.wait_ready(session))
        for url, times in ((a.url, 3), (b.url, 2)):
            for _ in range(times):
                async with session.get(f"{url}/api/v1/foo") as resp:
                    assert resp.status == 200
        async with session.get(f"{a.url}/api/v1/users/1") as resp:
            assert resp.status == 404
        async with session.get(f"{b.url}/api/v1/baz") as resp:
            assert resp.headers["X-Cache"] == "MISS"
            job_url = (await resp.json())["job"]["url"]
        async with session.get(f"{a.url}/api/v1/baz") as resp:
            assert resp.headers["X-Cache"] == "HIT"
        deadline = time.monotonic() + 30
        while True:
            async with session.get(f"{a.url}{job_url}") as resp:
                if (await resp.json())["status"] == "complete":
                    break
            assert time.monotonic() < deadline, "the slow job did not complete"
            await asyncio.sleep(0.1)
        scrapes = []
        for proc in (a, b):
            # Each process publishes its request figures every PUBLISH_INTERVAL: wait for the other's.
            await asyncio.sleep(PUBLISH_INTERVAL + 0.5)
            async with session.get(f"{proc.url}/internal/metrics", headers=auth) as resp:
                assert resp.status == 200
                scrapes.append(parse(await resp.text()))

    pids = {a.proc.pid, b.proc.pid}
    assert len([f for f in os.listdir(metrics_dir) if f.startswith("histogram_")]) == len(pids)
    for samples in scrapes:
        count = "http_request_duration_seconds_count"
        assert value(samples, count, route="/api/v1/foo", method="GET", status="200") == 5
        assert value(samples, count, route=USER_ROUTE, method="GET", status="404") == 1
        assert value(samples, count, route="/api/v1/baz", method="GET", status="200") == 2
        assert value(samples, "cache_requests_total", namespace="baz", result="miss") == 1
        assert value(samples, "cache_requests_total", namespace="baz", result="hit") == 1
        assert value(samples, "jobs_enqueued_total", queue="default", function="slow_job") == 1
        assert value(samples, "jobs_completed_total", queue="default", function="slow_job") == 1
        assert (
            value(samples, "job_duration_seconds_count", queue="default", function="slow_job", outcome="completed") == 1
        )
        assert value(samples, "job_queue_depth", queue="default", state="queued") == 0
        # Each scrape is in flight in the process answering it; the other is idle.
        assert value(samples, "http_requests_in_flight") == 1
    # The first scrape, answered by a, is counted in b's.
    internal = value(
        scrapes[1], "http_request_duration_seconds_count", route="/internal/metrics", method="GET", status="200"
    )
    assert internal == 1
