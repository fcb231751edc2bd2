"""Background jobs through real SAQ workers: the job API, retries, failures, scheduling, cron, abort, priorities."""

from __future__ import annotations

import json
import time
from datetime import datetime

import aiohttp
import pytest
import redis.asyncio as aioredis
from fixtures_auth import bearer
from fixtures_jobs import (
    app_with_enqueue_route,
    auth_header,
    jobs_test_config,
    post_job,
    running_workers,
    wait_for_job,
)
from saq.job import Status
from saq.queue.redis import RedisQueue
from saq.utils import now

from server.keys import QUEUES_KEY
from server.services.queues import UnknownPriority
from server.workers.enqueue import enqueue
from server.workers.failures import JobSwept
from server.workers.tasks import DATABASE_STATS_KEY

JOB_FIELDS = {"key", "function", "status", "result", "error", "attempts", "queued", "started", "completed"}


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value).timestamp()


async def test_slow_job_completes_and_is_readable_through_the_api(jobs_client, workers):
    key = await post_job(jobs_client, "slow_job", request_id="req-slow-1", seconds=0.2)
    body = await wait_for_job(jobs_client, key, {"complete"})
    assert set(body) == JOB_FIELDS
    assert body["key"] == key
    assert body["function"] == "slow_job"
    assert body["result"] == {"slept": 0.2}
    assert body["error"] is None
    assert body["attempts"] == 1
    assert parse_time(body["queued"]) <= parse_time(body["started"]) <= parse_time(body["completed"])
    # Every API version serves the job, and the job carries the request that asked for it.
    assert (await (await jobs_client.get(f"/api/v2/jobs/{key}")).json()) == body
    job = await jobs_client.server.app[QUEUES_KEY]["default"].job(key)
    assert job.meta == {"request_id": "req-slow-1", "owner": "anonymous"}


async def test_job_defaults_are_finite_and_retried(jobs_client, jobs_config):
    key = await post_job(jobs_client, "slow_job", seconds=0)  # no worker: it stays queued
    job = await jobs_client.server.app[QUEUES_KEY]["default"].job(key)
    assert job.status.value == "queued"
    assert job.timeout == jobs_config.queue.job_timeout > 0
    assert job.retries == jobs_config.queue.job_retries >= 2
    body = await (await jobs_client.get(f"/api/v1/jobs/{key}")).json()
    assert body["status"] == "queued" and body["started"] is None and body["completed"] is None


async def test_unknown_or_malformed_job_key_is_404(jobs_client):
    for path in ("/api/v1/jobs/no-such-job", "/api/v1/jobs/" + "x" * 129, "/api/v1/jobs/a*b", "/api/v2/jobs/%20"):
        resp = await jobs_client.get(path)
        assert resp.status == 404, path
        body = await resp.json()
        assert body["status"] == 404
        assert resp.headers["Content-Type"].startswith("application/problem+json")


async def test_a_failed_attempt_is_retried_then_succeeds(jobs_client, workers):
    key = await post_job(jobs_client, "flaky", fail_times=1)
    body = await wait_for_job(jobs_client, key, {"complete", "failed"})
    assert body["status"] == "complete"
    assert body["attempts"] == 2
    assert body["result"] == {"succeeded_on": 2}
    page = await (await jobs_client.get("/internal/jobs/failed", headers=auth_header())).text()
    assert "flaky failure on attempt 1" in page and "will retry" in page


async def test_final_failure_is_recorded_and_shown_on_the_failed_jobs_page(jobs_client, workers, job_reporter):
    key = await post_job(jobs_client, "always_fails", request_id="req-fail-7", reason="kaboom <b>", retries=2)
    body = await wait_for_job(jobs_client, key, {"failed", "complete"})
    assert body["status"] == "failed"
    assert body["attempts"] == 2
    assert body["error"] == "ValueError: kaboom <b>"  # the last line, never the traceback

    resp = await jobs_client.get("/internal/jobs/failed", headers=auth_header())
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/html")
    page = await resp.text()
    assert page.count('class="failed-job"') == 2  # both attempts, the newest (final) first
    first = page.split('class="failed-job"')[1]
    for text in ("always_fails", key, "req-fail-7", "2 of 2", ">failed<", "ValueError: kaboom &lt;b&gt;"):
        assert text in first, text
    assert "&#39;reason&#39;: &#39;kaboom &lt;b&gt;&#39;" in first  # the arguments, escaped
    assert "<b>" not in page
    # Each failed attempt went to the reporter, the last one as final, with the request id.
    assert [(c["key"], c["final"], c["request_id"]) for c in job_reporter.calls] == [
        (key, False, "req-fail-7"),
        (key, True, "req-fail-7"),
    ]
    assert all(isinstance(c["exc"], ValueError) for c in job_reporter.calls)


async def test_a_job_past_its_timeout_fails(jobs_client, workers):
    key = await post_job(jobs_client, "slow_job", seconds=30, timeout=1, retries=1)
    body = await wait_for_job(jobs_client, key, {"failed", "complete"})
    assert body["status"] == "failed"
    assert "TimeoutError" in body["error"]


async def test_a_scheduled_job_runs_on_time(jobs_client, workers):
    at = int(time.time()) + 2
    key = await post_job(jobs_client, "slow_job", seconds=0, scheduled=at)
    early = await (await jobs_client.get(f"/api/v1/jobs/{key}")).json()
    assert early["status"] == "queued" and early["started"] is None
    body = await wait_for_job(jobs_client, key, {"complete"})
    assert parse_time(body["started"]) >= at


@pytest.mark.both_backends
async def test_the_cron_task_fires_and_touches_the_database(
    tmp_path, redis_url, aiohttp_client, backend, database_url, make_token
):
    config = jobs_test_config(
        tmp_path, redis_url, queue={"stats_cron": "* * * * * */1"}, database_url=database_url
    )  # every second
    # The cron job's key is known to all: its result is only for a token with jobs:read.
    token = await make_token(("jobs:read",), config=config)
    client = await aiohttp_client(app_with_enqueue_route(config), headers=bearer(token))
    async with running_workers(config, names=["low"]):
        body = await wait_for_job(client, "cron:record_database_stats", {"complete"})
    assert body["function"] == "record_database_stats"
    async with aiohttp.ClientSession() as anonymous:
        resp = await anonymous.get(client.make_url("/api/v1/jobs/cron:record_database_stats"))
        assert resp.status == 404
    assert body["result"]["size_bytes"] > 0
    redis = aioredis.from_url(redis_url)
    try:
        stats = json.loads(await redis.get(DATABASE_STATS_KEY))
    finally:
        await redis.aclose()
    assert stats["size_bytes"] > 0 and time.time() - stats["at"] < 60
    assert stats["backend"] == backend and stats["users"] == 0
    assert stats["connections"] >= 1 and stats["connections_in_use"] >= 0


async def test_a_running_job_is_aborted_from_the_dashboard(jobs_client, workers):
    key = await post_job(jobs_client, "slow_job", seconds=30)
    await wait_for_job(jobs_client, key, {"active"})
    resp = await jobs_client.post(f"/internal/saq/api/queues/default/jobs/{key}/abort", headers=auth_header())
    assert resp.status == 200
    body = await wait_for_job(jobs_client, key, {"aborted", "complete", "failed"})
    assert body["status"] == "aborted"
    assert body["error"] == "aborted from ui"


async def test_a_high_priority_job_overtakes_a_backlog_of_low_ones(jobs_client, workers):
    low = [await post_job(jobs_client, "slow_job", priority="low", seconds=0.3) for _ in range(6)]
    high = await post_job(jobs_client, "slow_job", priority="high", seconds=0)
    high_body = await wait_for_job(jobs_client, high, {"complete"})
    low_bodies = [await wait_for_job(jobs_client, key, {"complete"}) for key in low]
    last_low = max(parse_time(b["completed"]) for b in low_bodies)
    assert parse_time(high_body["completed"]) < last_low
    # The low queue's single slot ran its jobs one after another, in order.
    starts = [parse_time(b["started"]) for b in low_bodies]
    assert starts == sorted(starts)


async def test_an_unknown_priority_is_refused(jobs_client):
    with pytest.raises(UnknownPriority, match="urgent"):
        await enqueue(jobs_client.server.app, "slow_job", priority="urgent", seconds=0)


async def test_in_process_worker_finishes_a_running_job_on_shutdown(tmp_path, redis_url, aiohttp_client):
    config = jobs_test_config(tmp_path, redis_url, queue={"embedded_worker": True, "shutdown_grace": 8.0})
    client = await aiohttp_client(app_with_enqueue_route(config))
    key = await post_job(client, "slow_job", seconds=1.0)
    await wait_for_job(client, key, {"active"})
    started = time.monotonic()
    await client.close()  # runs the app's cleanup: the worker stops
    took = time.monotonic() - started
    job = await stored_job(redis_url, "default", key)
    assert job.status.value == "complete"
    # It waited for the job, not for the whole grace period (SAQ's upkeep loops would make it).
    assert took < config.queue.shutdown_grace


async def test_in_process_worker_requeues_a_job_that_outlives_the_grace_period(tmp_path, redis_url, aiohttp_client):
    config = jobs_test_config(tmp_path, redis_url, queue={"embedded_worker": True, "shutdown_grace": 0.5})
    client = await aiohttp_client(app_with_enqueue_route(config))
    key = await post_job(client, "slow_job", seconds=2.0)
    await wait_for_job(client, key, {"active"})
    await client.close()
    job = await stored_job(redis_url, "default", key)
    assert job.status.value == "queued"
    assert job.error == "cancelled"
    # Nothing is lost: the next worker runs it to the end.
    other = await aiohttp_client(app_with_enqueue_route(jobs_test_config(tmp_path, redis_url)))
    async with running_workers(config, names=["default"]):
        body = await wait_for_job(other, key, {"complete"})
    assert body["attempts"] == 2


async def stored_job(redis_url: str, queue_name: str, key: str):
    queue = RedisQueue.from_url(redis_url, name=queue_name)
    try:
        return await queue.job(key)
    finally:
        await queue.disconnect()


async def test_enqueue_answers_503_with_retry_after_while_redis_is_down(private_redis, tmp_path, aiohttp_client):
    config = jobs_test_config(tmp_path, private_redis.url)
    client = await aiohttp_client(app_with_enqueue_route(config))
    key = await post_job(client, "slow_job", seconds=0)
    private_redis.stop()
    resp = await client.post("/test/enqueue", json={"function": "slow_job", "kwargs": {"seconds": 0}})
    assert resp.status == 503
    assert int(resp.headers["Retry-After"]) > 0
    body = await resp.json()
    assert body["status"] == 503 and body["request_id"] == resp.headers["X-Request-ID"]
    resp = await client.get(f"/api/v1/jobs/{key}")
    assert resp.status == 503 and "Retry-After" in resp.headers
    # Everything else keeps working, and enqueueing works again once Redis is back.
    assert (await client.get("/api/v1/foo")).status == 200
    private_redis.start()
    await post_job(client, "slow_job", seconds=0)


async def test_job_functions_validate_their_arguments(jobs_client, workers):
    key = await post_job(jobs_client, "slow_job", seconds=-1, retries=1)
    body = await wait_for_job(jobs_client, key, {"failed", "complete"})
    assert body["status"] == "failed"
    assert body["error"].startswith("ValueError: seconds must be between 0 and")


async def test_a_job_left_by_a_dead_worker_is_swept_reported_recorded_and_run(jobs_client, jobs_config, job_reporter):
    queue = jobs_client.server.app[QUEUES_KEY]["default"]
    key = await post_job(jobs_client, "slow_job", request_id="req-swept-3", seconds=0)
    # A worker that took the job, marked it active 20 s ago (its timeout is 10 s) and died.
    job = await queue.dequeue(timeout=1)
    job.started = now() - 20_000
    job.attempts = 1
    await job.update(status=Status.ACTIVE)

    async with running_workers(jobs_config, names=["default"], reporter=job_reporter):
        body = await wait_for_job(jobs_client, key, {"complete"})
    assert body["attempts"] == 2
    assert [(c["key"], c["final"], c["request_id"]) for c in job_reporter.calls] == [(key, False, "req-swept-3")]
    assert isinstance(job_reporter.calls[0]["exc"], JobSwept)
    page = await (await jobs_client.get("/internal/jobs/failed", headers=auth_header())).text()
    assert "swept, requeued" in page and "req-swept-3" in page
