"""Jobs: our worker process against a raw SAQ worker, no-op jobs, on a Redis database of their own.

Each repetition starts one worker (ours, then raw SAQ: interleaved), warms it up with 20 jobs in
a row, drains a backlog enqueued scheduled a second or two ahead (so SAQ's scheduler moves it
into the queue at once and the drain measures the worker alone), then runs jobs one at a time.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from bench import harness
from bench.harness import TARGETS, spread
from bench.processes import Proc, StartError, log, pinned, tail
from bench.stage import PY, Stage
from server.config import load_config
from server.workers.tasks import noop

TERMINAL = {"complete", "failed", "aborted"}  # SAQ job statuses that end a job
RAW_QUEUE = "bench-raw"


def run_jobs(stage: Stage) -> dict[str, Any]:
    opts = stage.opts
    url = stage.jobs_redis_url
    config_path = opts.tmp / "config-jobs.yaml"
    stage.write_config(config_path, url)
    concurrency = opts.job_concurrency or load_config(config_path).queue.concurrency
    sides: dict[str, dict[str, Any]] = {
        "ours": {
            "argv": [PY, "-m", "server", "--config", str(config_path), "worker", "--queue", opts.job_queue],
            "queue": opts.job_queue,
            "task": noop.__name__,  # server/workers/tasks.py: the task the jobs benchmark runs
        },
        "raw": {
            "argv": [str(Path(PY).parent / "saq"), "bench.saq_settings.settings", "--quiet"],
            "env": {"BENCH_REDIS_URL": url, "BENCH_QUEUE": RAW_QUEUE, "BENCH_CONCURRENCY": str(concurrency)},
            "queue": RAW_QUEUE,
            "task": "noop",
        },
    }
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
    try:
        for rep in range(opts.repetitions):
            for name, side in sides.items():  # interleaved
                run = asyncio.run(jobs_rep(stage, name, side, url, rep))
                runs[name].append(run)
                log(
                    f"jobs {name:<4} rep {rep + 1}: {run['jobs_per_s']:,.0f} jobs/s, enqueue p50 "
                    f"{run['enqueue_p50_ms']:.2f} ms, enqueue→complete p50 {run['e2c_p50_ms']:.2f} ms"
                )
    except (StartError, TimeoutError, RuntimeError) as exc:
        stage.warnings.append(f"jobs: {exc}")
        return {"status": "error", "reason": f"error: {str(exc).splitlines()[0]}", "notes": []}
    fields = ("jobs_per_s", "enqueue_p50_ms", "enqueue_p99_ms", "e2c_p50_ms", "e2c_p99_ms", "enqueue_bulk_per_s")
    result: dict[str, Any] = {
        name: {**harness.summarize_runs(runs[name], fields), "runs": runs[name]} for name in sides
    }
    ratio = spread(
        harness.pairwise_ratios([r["jobs_per_s"] for r in runs["ours"]], [r["jobs_per_s"] for r in runs["raw"]])
    )
    result.update(
        status="ok",
        concurrency=concurrency,
        ratio=ratio.as_dict(),
        target=harness.verdict(ratio.median >= TARGETS["jobs_ratio"]),
        notes=[f"{name}: {n}" for name in sides for run in runs[name] for n in run.get("notes", [])],
    )
    return result


async def jobs_rep(stage: Stage, name: str, side: dict[str, Any], url: str, rep: int) -> dict[str, Any]:
    from saq import Queue

    opts = stage.opts
    queue = Queue.from_url(url, name=side["queue"])
    await queue.connect()
    notes: list[str] = []
    proc = Proc(
        f"{name} worker",
        pinned(opts.server_core, side["argv"]),
        stage.log_file(f"{name}-worker-{rep}"),
        env=side.get("env"),
    )
    proc.start()
    try:
        # 0. The worker is up and warm once it has run a few jobs.
        await wait_worker(queue, side["task"], proc, url)
        # 1. A backlog that lands in the queue at once, scheduled a little ahead: the drain then
        # measures the worker alone. (Enqueued before the worker starts, the backlog races
        # SAQ's start-up sweep, which aborts jobs it sees moving: upstream saq#277.)
        keys = [f"bench-{uuid.uuid4().hex}" for _ in range(opts.jobs)]
        lands_at = int(time.time() + 1.5 + len(keys) / 2000)
        enqueue_started = time.perf_counter()
        await bulk_enqueue(queue, side["task"], keys, scheduled=lands_at)
        enqueue_bulk_per_s = len(keys) / (time.perf_counter() - enqueue_started)
        if time.time() >= lands_at:
            notes.append(f"rep {rep + 1}: the backlog was still being enqueued when it became due")
        jobs = await wait_drained(queue, proc, keys, timeout=60 + opts.jobs / 100)
        statuses = [j.status.value if j else "missing" for j in jobs]
        bad = {s: statuses.count(s) for s in set(statuses) if s != "complete"}
        if bad:
            notes.append(f"rep {rep + 1}: jobs not complete: {bad}")
        done = [(j.started, j.completed) for j in jobs if j and j.status.value == "complete"]
        jobs_per_s = drain_rate(done)
        # 2. One job at a time on the warm, idle worker: latency.
        enqueue_ms, e2c_ms = await one_at_a_time(queue, side["task"], opts.idle_jobs, url)
    finally:
        proc.stop()
        await queue.disconnect()
    return {
        "jobs_per_s": jobs_per_s,
        "enqueue_bulk_per_s": enqueue_bulk_per_s,
        "enqueue_p50_ms": harness.percentile(enqueue_ms, 50),
        "enqueue_p99_ms": harness.percentile(enqueue_ms, 99),
        "e2c_p50_ms": harness.percentile(e2c_ms, 50),
        "e2c_p99_ms": harness.percentile(e2c_ms, 99),
        "notes": notes,
    }


def chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def drain_rate(started_completed: Sequence[tuple[int, int]], skip: float = 0.1) -> float:
    """Jobs per second over a drain, leaving out the first `skip` share of jobs as warm-up.

    SAQ stamps `started` and `completed` in epoch milliseconds.
    """
    if len(started_completed) < 2:
        raise RuntimeError("too few completed jobs to measure a drain")
    ordered = sorted(started_completed)
    first = int(len(ordered) * skip)
    window_ms = max(c for _, c in ordered) - ordered[first][0]
    return (len(ordered) - first) / max(window_ms / 1000, 0.001)


async def bulk_enqueue(queue: Any, task: str, keys: Sequence[str], scheduled: int = 0, in_flight: int = 32) -> None:
    pending = iter(keys)

    async def enqueuer() -> None:
        for key in pending:
            await queue.enqueue(task, key=key, scheduled=scheduled)

    await asyncio.gather(*(enqueuer() for _ in range(in_flight)))


async def wait_drained(queue: Any, proc: Proc, keys: Sequence[str], timeout: float) -> list[Any]:
    """Wait until the worker has emptied the queue and every job of `keys` ended; returns those jobs.

    Not `count("incomplete")`: a worker's cron jobs wait in that set until they are due.
    """
    deadline = time.monotonic() + timeout
    while True:
        if not proc.alive():
            raise StartError(f"{proc.name} exited:\n{tail(proc.log_path)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{proc.name} did not drain its queue within {timeout:.0f} s")
        if await queue.count("queued") + await queue.count("active") == 0:
            jobs = [j for chunk in chunks(keys, 500) for j in await queue.jobs(chunk)]
            # "aborting": swept by SAQ (saq#277); it turns "aborted" seconds later, no need to wait.
            if all(j is None or j.status.value in (*TERMINAL, "aborting") for j in jobs):
                return jobs
        await asyncio.sleep(0.05)


async def run_and_wait(queue: Any, pubsub: Any, task: str, timeout: float = 10.0) -> tuple[float, float, str]:
    """Enqueue one job and wait for its terminal status: (enqueue ms, enqueue→terminal ms, status).

    Subscribes to the job's channel before enqueueing (SAQ publishes every status change there),
    so a fast job cannot finish unseen between the enqueue and the wait.
    """
    key = f"bench-{uuid.uuid4().hex}"
    channel = queue.job_id(key)
    await pubsub.subscribe(channel)
    while True:  # the subscription is confirmed before the clock starts
        message = await pubsub.get_message(timeout=timeout)
        if message and message["type"] == "subscribe":
            break
    t0 = time.perf_counter()
    await queue.enqueue(task, key=key)
    t1 = time.perf_counter()
    deadline = t0 + timeout
    status = "timeout"
    while time.perf_counter() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=deadline - time.perf_counter())
        if message and message["type"] == "message":
            data = message["data"].decode() if isinstance(message["data"], bytes) else str(message["data"])
            if data in TERMINAL:
                status = data
                break
    t2 = time.perf_counter()
    await pubsub.unsubscribe(channel)
    return (t1 - t0) * 1000, (t2 - t0) * 1000, status


async def wait_worker(queue: Any, task: str, proc: Proc, url: str, timeout: float = 30.0) -> None:
    """Return once the worker has run a few jobs in a row; raises StartError when it does not."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    pubsub = client.pubsub()
    deadline = time.monotonic() + timeout
    completed = 0
    try:
        while completed < 20:
            if not proc.alive() or time.monotonic() > deadline:
                raise StartError(
                    f"{proc.name} did not run a {task!r} job within {timeout:.0f} s:\n{tail(proc.log_path)}"
                )
            _, _, status = await run_and_wait(queue, pubsub, task, timeout=max(0.5, deadline - time.monotonic()))
            completed = completed + 1 if status == "complete" else 0
    finally:
        await pubsub.aclose()
        await client.aclose()


async def one_at_a_time(queue: Any, task: str, count: int, url: str) -> tuple[list[float], list[float]]:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    pubsub = client.pubsub()
    enqueue_ms: list[float] = []
    e2c_ms: list[float] = []
    try:
        for _ in range(count):
            enq, e2c, status = await run_and_wait(queue, pubsub, task)
            if status != "complete":
                raise RuntimeError(f"a no-op job ended {status}")
            enqueue_ms.append(enq)
            e2c_ms.append(e2c)
    finally:
        await pubsub.aclose()
        await client.aclose()
    return enqueue_ms, e2c_ms
