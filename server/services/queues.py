"""The priority queues: one SAQ Redis queue per name, on Redis clients of their own."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from saq.job import TERMINAL_STATUSES, Job, Status
from saq.queue.redis import RedisQueue

from server.config import Config
from server.redis_clients import async_client, queue_target

log = logging.getLogger(__name__)

SweptCallback = Callable[["JobQueue", list[Job]], Awaitable[None]]


class UnknownPriority(ValueError):
    """No queue of that name is configured (queue.names)."""


def make_queue_client(config: Config, *, worker: bool) -> Redis:
    """A Redis client for one SAQ queue: SAQ closes it on disconnect, so it is never the app's.

    Both kinds retry with exponential backoff, so an idle worker waits instead of spinning while
    Redis is down (docs/decisions.md, "Redis down: workers back off"). A worker's client allows
    its blocking dequeue and keeps retrying for a few seconds; the web's gives up fast, so a
    request answers 503 instead of hanging.
    """
    cfg = config.redis
    socket_timeout: float | None
    if worker:
        # No per-command timeout: redis-py implements it as asyncio.wait_for, a task per command,
        # and a worker sends several per job (measured: 0.82 of a raw SAQ worker with it). A hung
        # Redis then holds a worker until it answers; shutdown still cancels it, and keepalive
        # notices a dead peer.
        socket_timeout = None
        retry = Retry(ExponentialBackoff(cap=2.0, base=0.1), retries=5)
    else:
        socket_timeout = cfg.socket_timeout
        retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1)
    return async_client(
        queue_target(cfg),
        socket_timeout=socket_timeout,
        socket_keepalive=True,
        socket_connect_timeout=cfg.connect_timeout,
        retry=retry,
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
    )


class JobQueue(RedisQueue):
    """A SAQ Redis queue whose sweep neither races dequeues nor overwrites finished jobs.

    SAQ's sweep (upstream saq#277) takes any job in the active list that is not marked active,
    including one a worker has just dequeued and is about to mark: it aborts a healthy job, and
    after waiting for the abort it retries or aborts the job whatever happened meanwhile, turning
    a `failed` or `complete` job into `aborted` and losing its result (seen in our tests). This
    sweep gives such a job UNSTARTED_GRACE seconds before taking it, and leaves a job alone once it
    has finished. The jobs it takes back go to `on_swept` (recorded and reported like failures).

    A sweep cancelled between its abort and its retry would leave the job in no list at all:
    stopping a worker waits for `wait_sweep_idle()` before cancelling the upkeep tasks.
    """

    # A job in the active list but not marked active this long after a sweep first saw it so was
    # orphaned (its worker died right after dequeueing it).
    UNSTARTED_GRACE = 5.0

    def __init__(self, redis: Redis, name: str, **kwargs: Any) -> None:
        super().__init__(redis, name=name, **kwargs)
        self.on_swept: SweptCallback | None = None
        self._unstarted = self.namespace("sweep_unstarted")
        self._sweeps = 0
        self._sweep_idle = asyncio.Event()
        self._sweep_idle.set()

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        self._sweeps += 1
        self._sweep_idle.clear()
        try:
            return await self._sweep_once(lock, abort)
        finally:
            self._sweeps -= 1
            if not self._sweeps:
                self._sweep_idle.set()

    async def _sweep_once(self, lock: int, abort: float) -> list[str]:
        if self._cleanup_script is None:
            self._cleanup_script = self.redis.register_script(_SWEEP_SCAN_SCRIPT)
        id_jobs = await self._cleanup_script(keys=[self._sweep, self._active], args=[lock], client=self.redis)
        if not id_jobs:  # nothing active, or another worker holds the lock
            return []

        now = time.time()
        # job id -> "first seen|queued|attempts": a job requeued since then starts a new wait.
        # (redis-py types its asyncio commands as "awaitable or value": cast to what they are.)
        seen_before = await cast("Awaitable[dict[bytes, bytes]]", self.redis.hgetall(self._unstarted))
        marks = {k: v.decode() for k, v in seen_before.items()}
        unstarted_now: dict[bytes, str] = {}
        to_sweep: list[Job] = []
        missing: list[bytes] = []
        for job_id, job_bytes in id_jobs:
            job = self.deserialize(job_bytes)
            if job is None:
                missing.append(job_id)
            elif job.status in TERMINAL_STATUSES:
                # Finished, but left in the list by a lost race: take it out, keep its outcome.
                await cast("Awaitable[int]", self.redis.lrem(self._active, 0, cast(str, job_id)))
            elif job.status == Status.ACTIVE:
                if job.stuck:
                    to_sweep.append(job)
            else:
                # Dequeued but not yet marked active, or an abort between its two steps: normal
                # for a moment, orphaned when it lasts.
                identity = f"{job.queued}|{job.attempts}"
                seen_text, _, seen_identity = marks.get(job_id, "").partition("|")
                seen = float(seen_text) if seen_text and seen_identity == identity else now
                unstarted_now[job_id] = f"{seen}|{identity}"
                if now - seen >= self.UNSTARTED_GRACE:
                    to_sweep.append(job)

        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._unstarted)
            if unstarted_now:
                pipe.hset(self._unstarted, mapping=unstarted_now)
                pipe.expire(self._unstarted, int(self.UNSTARTED_GRACE * 4) + lock)
            for job_id in missing:
                pipe.lrem(self._active, 0, cast(str, job_id))
                pipe.zrem(self._incomplete, job_id)
            await pipe.execute()
        for job_id in missing:
            log.info("sweeping missing job %s", job_id)

        outcomes = await asyncio.gather(*(self._take_back(job, abort) for job in to_sweep))
        swept = [job for job, taken in zip(to_sweep, outcomes, strict=True) if taken]
        if swept and self.on_swept is not None:
            try:
                await self.on_swept(self, swept)
            except Exception:  # recording must never stop the sweeping
                log.exception("recording swept jobs of queue %s failed", self.name)
        return [job_id.decode() for job_id in missing] + [job.id for job in swept]

    async def _take_back(self, job: Job, abort: float) -> bool:
        """Abort a stuck job, give a live worker `abort` seconds, then requeue or abort it; True if taken."""
        log.info("sweeping %s", job.info(log.isEnabledFor(logging.DEBUG)))
        alive = await self._worker_alive(job)
        await self.abort(job, error=self.swept_error_message)
        try:
            await job.refresh(abort if alive else None)
        except TimeoutError:
            log.info("no worker acknowledged the abort of %s", job.id)
        except RuntimeError:  # its key expired meanwhile: nothing left to take back
            return False
        if job.status in (Status.COMPLETE, Status.FAILED):
            return False  # it finished while we waited: its outcome stands
        if job.retryable:
            await self.retry(job, error=self.swept_error_message)
        else:
            await self.finish(job, Status.ABORTED, error=self.swept_error_message)
        return True

    async def _worker_alive(self, job: Job) -> bool:
        """Whether the worker that took the job still reports in (SAQ's worker info, ~11 s TTL).

        Only a live worker can acknowledge an abort: for a dead one there is nothing to wait for.
        """
        if not job.worker_id:
            return False
        return bool(await self.redis.exists(self.namespace(f"worker_info:{job.worker_id}")))

    async def wait_sweep_idle(self) -> None:
        """Return once no sweep of this queue object is running."""
        await self._sweep_idle.wait()


# SAQ's own scan (saq/queue/redis.py): take the sweep lock, return the active list with each job.
_SWEEP_SCAN_SCRIPT = """
local id_jobs = {}
if redis.call('EXISTS', KEYS[1]) == 0 then
    redis.call('SETEX', KEYS[1], ARGV[1], 1)
    for i, v in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
        id_jobs[i] = {v, redis.call('GET', v)}
    end
end
return id_jobs
"""


class JobQueues(Mapping[str, JobQueue]):
    """The configured queues by name, highest priority first."""

    def __init__(self, queues: Mapping[str, JobQueue]) -> None:
        self._queues = dict(queues)

    def __getitem__(self, name: str) -> JobQueue:
        return self._queues[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._queues)

    def __len__(self) -> int:
        return len(self._queues)

    def for_priority(self, priority: str) -> JobQueue:
        """The queue of that name; raises UnknownPriority."""
        try:
            return self._queues[priority]
        except KeyError:
            raise UnknownPriority(f"unknown priority {priority!r}; the queues are {', '.join(self._queues)}") from None

    async def find(self, key: str) -> Job | None:
        """The job with this key on any of the queues, or None. Redis errors propagate."""
        found = await asyncio.gather(*(queue.job(key) for queue in self._queues.values()))
        return next((job for job in found if job is not None), None)

    async def disconnect(self, timeout: float = 2.0) -> None:
        """Close every queue's pubsub and Redis client, at once and bounded: a hung Redis must not
        hold shutdown (SAQ's close talks to Redis, with the client's retries)."""

        async def close(queue: JobQueue) -> None:
            try:
                await asyncio.wait_for(queue.disconnect(), timeout)
            except Exception as exc:  # closing the others matters more than this one's error
                log.warning("closing queue %s failed (%r); dropping its connections", queue.name, exc)
                with contextlib.suppress(Exception):
                    await queue.redis.connection_pool.disconnect()

        await asyncio.gather(*(close(queue) for queue in self._queues.values()))


def build_queues(config: Config, *, worker: bool, names: tuple[str, ...] | None = None) -> JobQueues:
    """A queue (with its own client) per configured name; lazy: nothing connects until used."""
    selected = names or config.queue.names
    return JobQueues({name: JobQueue(make_queue_client(config, worker=worker), name) for name in selected})


def concurrency_for(config: Config, name: str) -> int:
    """How many jobs one worker of this queue runs at a time."""
    cfg = config.queue
    return {"high": cfg.high_concurrency, "low": cfg.low_concurrency}.get(name, cfg.concurrency)


def job_defaults(config: Config) -> dict[str, Any]:
    """Job fields every enqueue gets unless the caller overrides them: finite, retried, backed off."""
    cfg = config.queue
    return {
        "timeout": cfg.job_timeout,
        "retries": cfg.job_retries,
        "retry_delay": cfg.retry_delay,
        "retry_backoff": cfg.retry_backoff_max if cfg.retry_backoff_max > 0 else False,
    }
