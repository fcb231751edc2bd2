"""Worker processes (`python -m server worker`, the `saq` CLI settings): crashes, Redis outages, signals."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

from fixtures_jobs import (
    app_with_enqueue_route,
    auth_header,
    clean_env,
    jobs_test_config,
    post_job,
    wait_for_job,
    write_config,
)

from server.config import PROJECT_ROOT
from server.keys import QUEUES_KEY


async def wait_for_workers(client, queue_name: str, count: int = 1, timeout: float = 30.0) -> None:
    """Until `count` workers have registered on the queue (SAQ's worker info, as the dashboard shows)."""
    queue = client.server.app[QUEUES_KEY][queue_name]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len((await queue.info())["workers"]) >= count:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"no worker registered on {queue_name} within {timeout} s")


async def test_a_job_of_a_sigkilled_worker_process_runs_again_and_completes(
    tmp_path, redis_url, jobs_client, worker_processes
):
    config = jobs_test_config(tmp_path, redis_url, queue={"job_timeout": 2})
    victim = worker_processes(config, "--queue", "default")
    await wait_for_workers(jobs_client, "default")
    key = await post_job(jobs_client, "slow_job", seconds=1, timeout=config.queue.job_timeout)
    await wait_for_job(jobs_client, key, {"active"})

    os.kill(victim.pid, signal.SIGKILL)
    victim.proc.wait()
    worker_processes(config, "--queue", "default")  # what circus does: start another

    # Swept once it is past its timeout (2 s) at the next sweep (1 s), after a 5 s wait for the
    # worker to acknowledge the abort (it still looks alive: its worker info outlives it by up to
    # 11 s); then run again. The deadline is generous.
    body = await wait_for_job(jobs_client, key, {"complete", "failed", "aborted"}, timeout=60)
    assert body["status"] == "complete"
    assert body["attempts"] == 2
    assert body["result"] == {"slept": 1}
    page = await (await jobs_client.get("/internal/jobs/failed", headers=auth_header())).text()
    assert "swept, requeued" in page and key in page


async def test_an_idle_worker_does_not_spin_while_redis_is_down_and_recovers(
    private_redis, tmp_path, aiohttp_client, worker_processes
):
    config = jobs_test_config(tmp_path, private_redis.url)
    client = await aiohttp_client(app_with_enqueue_route(config))
    proc = worker_processes(config)  # every queue, in one process
    for name in config.queue.names:
        await wait_for_workers(client, name)

    private_redis.stop()
    before = proc.cpu_seconds()
    await asyncio.sleep(3)
    used = proc.cpu_seconds() - before
    assert proc.proc.poll() is None, proc.log()
    # Spinning on ConnectionError burns a whole core, backing off almost none
    # (docs/decisions.md, "Redis down: workers back off").
    assert used < 1.0, f"worker used {used:.2f} s of CPU in 3 s with Redis down"

    private_redis.start()
    key = await post_job(client, "slow_job", seconds=0)
    body = await wait_for_job(client, key, {"complete"}, timeout=60)
    assert body["attempts"] == 1


async def test_the_saq_cli_runs_our_settings_and_stops_promptly_on_sigterm(tmp_path, redis_url, jobs_client):
    config = jobs_test_config(tmp_path, redis_url, queue={"shutdown_grace": 8.0})
    env = {**clean_env(), "SERVER_CONFIG": str(write_config(tmp_path / "saq.yaml", config))}
    log_path = tmp_path / "saq.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "saq", "server.workers.settings.default", "-v"],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        await wait_for_workers(jobs_client, "default")
        key = await post_job(jobs_client, "slow_job", seconds=0.5)
        await wait_for_job(jobs_client, key, {"active"})
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(proc.wait, 30)
        took = time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 0, log_path.read_text()
    assert (await wait_for_job(jobs_client, key, {"complete"}, timeout=5))["attempts"] == 1
    # The running job finished; the upkeep loops did not hold the exit to the grace period.
    assert took < config.queue.shutdown_grace, log_path.read_text()


def test_worker_command_refuses_an_unknown_queue(tmp_path, redis_url):
    config = jobs_test_config(tmp_path, redis_url)
    path = write_config(tmp_path / "c.yaml", config)
    result = subprocess.run(
        [sys.executable, "-m", "server", "--config", str(path), "worker", "--queue", "urgent"],
        cwd=PROJECT_ROOT,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "unknown queue 'urgent'" in result.stderr


async def test_worker_process_stops_cleanly_on_sigterm(tmp_path, redis_url, jobs_client, worker_processes):
    config = jobs_test_config(tmp_path, redis_url, queue={"shutdown_grace": 8.0})
    proc = worker_processes(config, "--queue", "default", "--queue", "high")
    await wait_for_workers(jobs_client, "default")
    await wait_for_workers(jobs_client, "high")
    key = await post_job(jobs_client, "slow_job", seconds=0.5, priority="high")
    await wait_for_job(jobs_client, key, {"active"})
    started = time.monotonic()
    proc.proc.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(proc.proc.wait, 30)
    took = time.monotonic() - started
    assert code == 0, proc.log()
    assert (await wait_for_job(jobs_client, key, {"complete"}, timeout=5))["attempts"] == 1
    assert took < config.queue.shutdown_grace, proc.log()
