"""The sweep that takes jobs back from dead workers, without SAQ's race against live ones (saq#277)."""

from __future__ import annotations

import asyncio
import time

import pytest
from fixtures_jobs import jobs_test_config
from saq.job import Status
from saq.utils import now

from server.services.queues import JobQueue, make_queue_client


@pytest.fixture
async def queue(tmp_path, redis_url):
    config = jobs_test_config(tmp_path, redis_url)
    q = JobQueue(make_queue_client(config, worker=True), "default")
    swept: list = []

    async def on_swept(_queue, jobs):
        swept.extend(jobs)

    q.on_swept = on_swept
    q.swept_jobs = swept
    await q.connect()
    try:
        yield q
    finally:
        await q.disconnect()


async def sweep_again(queue: JobQueue, abort: float = 0.5) -> list[str]:
    """A sweep once the previous one's one-second lock has expired."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not await queue.redis.exists(queue.namespace("sweep")):
            return await queue.sweep(lock=1, abort=abort)
        await asyncio.sleep(0.05)
    raise AssertionError("the sweep lock never expired")


async def test_a_just_dequeued_job_is_left_alone_and_an_orphaned_one_is_requeued(queue):
    queue.UNSTARTED_GRACE = 0.5
    job = await queue.enqueue("slow_job", seconds=0, retries=2)
    # What a worker holds between taking a job and marking it active (or dies holding).
    dequeued = await queue.dequeue(timeout=1)
    assert dequeued.key == job.key and dequeued.status == Status.QUEUED

    assert await queue.sweep(lock=1, abort=0.5) == []
    assert (await queue.job(job.key)).status == Status.QUEUED
    assert await queue.count("active") == 1

    # Still not started a sweep later, past the grace: its worker is gone. Requeued, not lost.
    assert await sweep_again(queue) == [job.id]
    stored = await queue.job(job.key)
    assert stored.status == Status.QUEUED and stored.error == "swept"
    assert await queue.count("active") == 0 and await queue.count("queued") == 1
    assert [j.key for j in queue.swept_jobs] == [job.key]


async def test_a_job_that_finishes_while_the_sweep_waits_keeps_its_outcome(queue):
    job = await queue.enqueue("slow_job", seconds=0, retries=1, timeout=1)
    running = await queue.dequeue(timeout=1)
    running.started = now() - 5000  # past its timeout: stuck
    running.attempts = 1
    running.worker_id = "slow-but-alive"
    await queue.worker_info(running.worker_id, queue_key=queue.name, ttl=30)  # it still reports in
    await running.update(status=Status.ACTIVE)

    sweep = asyncio.create_task(queue.sweep(lock=1, abort=5))
    await asyncio.sleep(0.3)  # the sweep has aborted it and waits for the worker
    await queue.finish(running, Status.COMPLETE, result={"slept": 0})
    assert await sweep == []
    stored = await queue.job(job.key)
    assert stored.status == Status.COMPLETE and stored.result == {"slept": 0}
    assert queue.swept_jobs == []


async def test_a_stuck_job_without_attempts_left_is_aborted_as_swept(queue):
    job = await queue.enqueue("slow_job", seconds=0, retries=1, timeout=1)
    running = await queue.dequeue(timeout=1)
    running.started = now() - 5000
    running.attempts = 1
    running.worker_id = "dead"  # never reported in: the sweep does not wait for it
    await running.update(status=Status.ACTIVE)
    assert await asyncio.wait_for(queue.sweep(lock=1, abort=30), 10) == [job.id]
    stored = await queue.job(job.key)
    assert stored.status == Status.ABORTED and stored.error == "swept"
    assert queue.swept_jobs[0].status == Status.ABORTED


async def test_a_healthy_active_job_is_not_swept(queue):
    await queue.enqueue("slow_job", seconds=0, timeout=30)
    running = await queue.dequeue(timeout=1)
    running.started = now()
    running.attempts = 1
    await running.update(status=Status.ACTIVE)
    assert await queue.sweep(lock=1, abort=0.2) == []
    assert await queue.count("active") == 1
