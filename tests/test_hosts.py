"""Two circus "hosts" on this machine, one `web` and one `worker`, sharing one PostgreSQL and one Redis."""

from __future__ import annotations

import asyncio
import configparser
import dataclasses
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import psutil
import pytest
import redis.asyncio
from fixtures_jobs import clean_env, jobs_test_config, write_config
from test_circus import Supervisor, get_json, wait_until

from server.config import PROJECT_ROOT, load_config
from server.keys import CONFIG_KEY, QUEUES_KEY
from server.middlewares.bearer import ANONYMOUS_OWNER
from server.redis_binary import find_redis_server
from server.services.queues import build_queues
from server.supervision import CIRCUS_INI, write_circus_ini
from server.workers.enqueue import enqueue
from server.workers.tasks import DATABASE_STATS_KEY
from testing.redis import RedisProcess, free_port

REDIS_PASSWORD = "a-test-redis-password"
INTERNAL_PASSWORD = "a-test-internal-password"
WORKERS = ("worker", "worker-high", "worker-low")


@pytest.fixture
def shared_redis():
    """The Redis both hosts share, requiring a password (given to the hosts by the environment)."""
    with RedisProcess() as server:
        client = redis.Redis.from_url(server.url)
        client.config_set("requirepass", REDIS_PASSWORD)
        client.close()
        yield server


@pytest.mark.skipif(find_redis_server() is None, reason="needs a redis-server >= 7.0")
async def test_a_web_host_and_a_worker_host_share_postgresql_and_redis(
    tmp_path, postgres_databases, shared_redis, fake_cat_facts
):
    database_url = postgres_databases(migrated=False)
    port = free_port()
    secrets = {"REDIS_PASSWORD": REDIS_PASSWORD, "INTERNAL_PASSWORD": INTERNAL_PASSWORD}

    def host(role: str) -> tuple[Path, dict[str, str]]:
        folder = tmp_path / role[:3]  # short: the circus socket's path must fit a unix socket
        folder.mkdir()
        config = jobs_test_config(
            folder,
            shared_redis.url,  # no password in it: REDIS_PASSWORD comes from the environment
            database_url=database_url,
            server={"host": "127.0.0.1", "port": port},
            logging={"level": "INFO"},
            cat_facts={"url": fake_cat_facts.url, "timeout": 10.0},
            circus={"role": role, "timeout": 5.0},
            internal={"password": ""},
            queue={"stats_cron": "* * * * * */1", "job_timeout": 10},
            # The host's own metrics directory (the test session's is this process's; supervise empties it).
            metrics={"dir": str(folder / "var" / "metrics")},
        )
        # Several hosts: `migrate` runs once per deploy, each host only checks the schema.
        config = dataclasses.replace(config, database=dataclasses.replace(config.database, auto_migrate=False))
        return write_config(folder / "config.yaml", config), {**secrets, "VAR_DIR": str(folder / "var")}

    web_config, web_env = host("web")
    worker_config, worker_env = host("worker")
    started: list[Supervisor] = []

    def supervise(config_path: Path, env: dict[str, str]) -> Supervisor:
        sup = Supervisor(config_path, Path(env["VAR_DIR"]), None, extra_env=env)
        started.append(sup)
        return sup

    try:
        # Before the deploy's migrate step, a host refuses to start and names the command.
        early = supervise(worker_config, worker_env)
        assert await asyncio.to_thread(early.proc.wait, 60) == 1
        assert "pending: 0001_users" in early.log() and "python -m server migrate" in early.log()

        migrate = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "server", "--config", str(web_config), "migrate"],
            cwd=PROJECT_ROOT,
            env={**clean_env(), **web_env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert migrate.returncode == 0, migrate.stderr
        assert "applied 0001_users" in migrate.stdout
        # The users writes need a token: made by the deploy, on the shared database.
        made = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "server",
                "--config",
                str(web_config),
                "token",
                "create",
                "--name",
                "deploy",
                "--scope",
                "users:write",
            ],
            cwd=PROJECT_ROOT,
            env={**clean_env(), **web_env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert made.returncode == 0, made.stderr
        writer = {"Authorization": f"Bearer {made.stdout.strip().splitlines()[-1]}"}

        web = supervise(web_config, web_env)
        worker = supervise(worker_config, worker_env)

        async def running(sup: Supervisor, watchers: tuple[str, ...]) -> bool:
            if sup.proc.poll() is not None:
                raise AssertionError(f"supervise exited {sup.proc.returncode}:\n{sup.log()}")
            try:
                statuses = await sup.statuses()
            except Exception:  # circusd not answering yet
                return False
            return statuses == {name: "active" for name in watchers}

        await wait_until(lambda: running(web, ("web",)), 90, "the web host's watchers")
        await wait_until(lambda: running(worker, WORKERS), 90, "the worker host's watchers")
        # Neither runs Redis; only the web host holds the HTTP port.
        listening = {c.laddr.port for c in psutil.Process(worker.proc.pid).net_connections("inet")}
        assert port not in listening
        commands = [" ".join(psutil.Process(p).cmdline()) for s in (web, worker) for p in s.all_pids()]
        assert not [c for c in commands if "redis" in c], commands

        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

            async def ready() -> bool:
                try:
                    status, body = await get_json(session, f"{base}/readyz")
                except aiohttp.ClientError:
                    return False
                return status == 200 and body["checks"] == {"database": "ok", "redis": "ok"}

            await wait_until(ready, 60, "the web host ready")

            # Rows written on the web host are the rows the worker host reads.
            async with session.post(
                f"{base}/api/v1/users", json={"name": "made on the web host"}, headers=writer
            ) as resp:
                assert resp.status == 201, await resp.text()
            client = redis.asyncio.Redis.from_url(shared_redis.url, password=REDIS_PASSWORD)
            try:

                async def worker_saw_the_row() -> bool:
                    raw = await client.get(DATABASE_STATS_KEY)
                    stats = json.loads(raw) if raw else {}
                    return stats.get("backend") == "postgresql" and stats.get("users") == 1

                await wait_until(worker_saw_the_row, 30, "the worker host's stats job counting the web host's user")
            finally:
                await client.aclose()

            # A request on the web host enqueues a job only the worker host can run.
            status, body = await get_json(session, f"{base}/api/v1/baz")
            assert status == 200, body
            job_url = f"{base}{body['job']['url']}"

            async def finished(url: str) -> bool:
                status, job = await get_json(session, url)
                assert status == 200, job
                return job["status"] in ("complete", "failed", "aborted")

            await wait_until(lambda: finished(job_url), 30, "baz's job run on the worker host")
            assert (await get_json(session, job_url))[1]["status"] == "complete"

            # Killing the worker host's workers mid-job loses no job.
            config = load_config(web_config, {**clean_env(), **web_env})
            queues = build_queues(config, worker=False)
            try:
                context = {QUEUES_KEY: queues, CONFIG_KEY: config}
                # Owned by an anonymous client, as /baz's are: whoever holds a key reads its job.
                jobs = [
                    await enqueue(context, "slow_job", owner=ANONYMOUS_OWNER, seconds=1, timeout=3) for _ in range(4)
                ]
                urls = [f"{base}/api/v1/jobs/{job.key}" for job in jobs]

                async def some_active() -> bool:
                    return any([(await get_json(session, url))[1]["status"] == "active" for url in urls])

                await wait_until(some_active, 30, "a job running on the worker host")
                killed = await worker.pids("worker")
                for pid in killed:
                    os.kill(pid, signal.SIGKILL)

                async def all_finished() -> bool:
                    return all([await finished(url) for url in urls])

                await wait_until(all_finished, 90, "every job finished after the kill")
                results = [(await get_json(session, url))[1] for url in urls]
                assert [r["status"] for r in results] == ["complete"] * 4, results
                assert max(r["attempts"] for r in results) >= 2  # the killed ones ran again
                replaced = await worker.pids("worker")
                assert len(replaced) == 2 and not set(replaced) & set(killed)
            finally:
                await queues.disconnect()
    finally:
        for sup in started:
            sup.cleanup()


def test_each_role_runs_its_own_part_of_circus_ini(tmp_path):
    def sections(role: str, **redis: object) -> set[str]:
        config = jobs_test_config(tmp_path, "redis://127.0.0.1:6399/0", circus={"role": role}, redis=redis)
        ini = write_circus_ini(CIRCUS_INI, config, tmp_path)
        assert ini.name == f"circus-{role}.ini" and ini.stat().st_mode & 0o077 == 0
        parser = configparser.ConfigParser(interpolation=None)
        parser.read(ini)
        assert parser.get("watcher:web" if role != "worker" else "watcher:worker", "cmd").startswith("$(circus.env")
        return set(parser.sections())

    workers = {"watcher:worker", "watcher:worker-high", "watcher:worker-low"}
    redis = {"watcher:redis", "watcher:redis-cache"}  # the queue's Redis and the cache's own
    everything = {"circus", "socket:web", "watcher:web", *redis, *workers}
    assert sections("all") == everything
    assert sections("all", sentinels=["127.0.0.1:26379"]) == everything - redis
    assert sections("all", supervise="never") == everything - redis
    assert sections("web") == {"circus", "socket:web", "watcher:web"}
    assert sections("worker") == {"circus", *workers}
    assert sections("worker", supervise="always") == {"circus", *redis, *workers}


def supervise_once(
    tmp_path: Path, overrides: dict[str, object], env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    # A metrics directory of its own: supervise empties it, and this process's is the session's.
    overrides = {"metrics": {"dir": str(tmp_path / "var" / "metrics")}, **overrides}
    config = jobs_test_config(tmp_path, f"redis://127.0.0.1:{free_port()}/0", **overrides)
    path = write_config(tmp_path / "config.yaml", config)
    return subprocess.run(
        [sys.executable, "-m", "server", "--config", str(path), "supervise"],
        cwd=PROJECT_ROOT,
        env={**clean_env(), "VAR_DIR": str(tmp_path / "var"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_web_or_worker_host_refuses_sqlite(tmp_path):
    result = supervise_once(tmp_path, {"circus": {"role": "worker"}}, {})
    assert result.returncode == 2
    assert "circus.role worker needs a database every host reaches" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_launcher_waits_for_redis_then_gives_up_with_one_line(tmp_path, postgres_databases):
    result = supervise_once(
        tmp_path,
        {"circus": {"role": "worker", "wait_timeout": 1.0}, "database_url": postgres_databases()},
        {},
    )
    assert result.returncode == 1
    assert "waiting for Redis (redis://127.0.0.1:" in result.stderr
    assert "supervise: gave up after 1 s (circus.wait_timeout): Redis" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "var" / "redis_password").exists()  # a worker host writes no secret
