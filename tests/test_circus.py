"""The whole system under circus (`python -m server supervise`), and the /internal/status page."""

from __future__ import annotations

import asyncio
import collections
import inspect
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest
import redis
import redis.asyncio
from fixtures_jobs import auth_header, clean_env, jobs_test_config, write_config
from prometheus_client.parser import text_string_to_metric_families
from test_redis_binary import debian_layout

from server.config import PROJECT_ROOT, Config, load_config
from server.keys import CONFIG_KEY, QUEUES_KEY
from server.metrics import PUBLISH_INTERVAL
from server.middlewares.bearer import ANONYMOUS_OWNER
from server.redis_binary import find_redis_server
from server.services.circus_status import read_circus_status
from server.services.queues import build_queues
from server.workers.enqueue import enqueue
from testing.redis import free_port

WATCHERS = ("redis", "redis-cache", "web", "worker", "worker-high", "worker-low")
ACCESS_LOG_LINES = re.compile(r"^(\S+ \S+) INFO (\d+) aiohttp\.access ", re.MULTILINE)
WEB_PIDS_IN_ACCESS_LOG = re.compile(r"^\S+ \S+ INFO (\d+) aiohttp\.access ", re.MULTILINE)


# --- /internal/status without circus ------------------------------------------------------------


async def test_status_page_needs_credentials(jobs_client):
    resp = await jobs_client.get("/internal/status")
    assert resp.status == 401
    assert (await jobs_client.get("/internal/status", headers=auth_header(password="nope"))).status == 401


async def test_status_page_says_when_the_app_is_not_under_circus(tmp_path, redis_url, aiohttp_client):
    endpoint = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    config = jobs_test_config(tmp_path, redis_url, circus={"endpoint": endpoint, "timeout": 0.3})
    from server.app import create_app

    client = await aiohttp_client(create_app(config))
    resp = await client.get("/internal/status", headers=auth_header())
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/html")
    html = await resp.text()
    assert "Not running under circus" in html
    assert f"circusd is unreachable at\n<code>{endpoint}</code>" in html
    assert 'class="pid"' not in html


# --- the whole system under circus ----------------------------------------------------------------


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except FileNotFoundError:
        return []
    return [int(p) for p in text.split()]


def descendants(pid: int) -> list[int]:
    found = []
    for child in children(pid):
        found.append(child)
        found.extend(descendants(child))
    return found


class Supervisor:
    """`python -m server --config <tmp> supervise` (which execs circusd) in a session of its own.

    Its Redis is found on PATH in Debian's layout (redis-server a symlink to redis-check-rdb), as
    on a machine where `apt-get install redis-server` was run.
    """

    def __init__(
        self, config_path: Path, var_dir: Path, bin_dir: Path | None, extra_env: dict[str, str] | None = None
    ) -> None:
        env = clean_env()
        env.pop("REDIS_SERVER", None)
        if bin_dir is not None:
            env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', os.defpath)}"
        env["VAR_DIR"] = str(var_dir)
        env.update(extra_env or {})
        # As the launcher reads it: relative paths (the circus socket) resolved.
        self.config = load_config(config_path, env)
        self.endpoint = self.config.circus.endpoint
        self.var_dir = var_dir
        self.log_path = var_dir.parent / f"{var_dir.name}-circusd.out"  # the test's own file, outside var/
        with open(self.log_path, "wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "server", "--config", str(config_path), "supervise"],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.seen: set[int] = set()

    def log(self, name: str = "circusd") -> str:
        path = self.log_path if name == "circusd" else self.var_dir / "log" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    async def call(self, command: str, timeout: float = 10.0, **properties: Any) -> dict[str, Any]:
        def run() -> dict[str, Any]:
            from circus.client import CircusClient

            client = CircusClient(endpoint=self.endpoint, timeout=timeout)
            try:
                return client.call({"command": command, "properties": properties})
            finally:
                client.stop()

        return await asyncio.to_thread(run)

    async def pids(self, watcher: str) -> list[int]:
        pids = [int(p) for p in (await self.call("list", name=watcher))["pids"]]
        self.seen.update(pids)
        return pids

    async def statuses(self) -> dict[str, str]:
        return (await self.call("status"))["statuses"]

    def all_pids(self) -> set[int]:
        return self.seen | set(descendants(self.proc.pid))

    def cleanup(self) -> None:
        """However the test ended: no process of this run survives it."""
        pids = self.all_pids()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                pids |= set(descendants(self.proc.pid))
                self.proc.kill()
                self.proc.wait()
        for pid in pids:
            if alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


@pytest.fixture
def circus_ports() -> dict[str, int]:
    return {"server": free_port(), "redis": free_port(), "cache": free_port()}


@pytest.fixture
def supervisor_factory(tmp_path) -> Iterator[Any]:
    started: list[Supervisor] = []

    def start(config: Config) -> Supervisor:
        path = write_config(tmp_path / "circus-test.yaml", config)
        sup = Supervisor(path, tmp_path / "var", debian_layout(tmp_path / "debian-bin"))
        started.append(sup)
        return sup

    yield start
    for sup in started:
        sup.cleanup()


class Stream:
    """Requests to `url` from a few concurrent clients, a new connection each, until stopped."""

    def __init__(self, url: str, clients: int = 3) -> None:
        self.url = url
        self.outcomes: collections.Counter[str] = collections.Counter()
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._client()) for _ in range(clients)]

    async def _client(self) -> None:
        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            while not self._stop.is_set():
                try:
                    async with session.get(self.url) as resp:
                        await resp.read()
                        self.outcomes[str(resp.status)] += 1
                except (aiohttp.ClientError, TimeoutError) as exc:
                    self.outcomes[type(exc).__name__] += 1
                await asyncio.sleep(0.005)

    @property
    def total(self) -> int:
        return sum(self.outcomes.values())

    async def stop(self) -> collections.Counter[str]:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.outcomes


async def wait_until(predicate: Any, timeout: float, what: str, interval: float = 0.1) -> float:
    """Poll an async predicate until true; the seconds it took. Generous deadlines only."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return time.monotonic() - started
        await asyncio.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout} s")


async def assert_private_to_this_user(sup: Supervisor, server_port: int) -> None:
    """circusd opens no TCP or UDP port of its own, and only this user can open its sockets."""
    inet = psutil.Process(sup.proc.pid).net_connections(kind="inet")
    listening = {c.laddr.port for c in inet if c.status == psutil.CONN_LISTEN}
    assert listening == {server_port}, inet  # the web socket circusd holds for the web processes
    assert not [c for c in inet if c.type == socket.SOCK_DGRAM], inet  # no multicast discovery
    control = Path(sup.endpoint[len("ipc://") :])
    for path in (control, control.with_name("pubsub.sock")):
        mode = path.stat().st_mode
        assert stat.S_ISSOCK(mode) and mode & 0o077 == 0, (path, oct(mode))
    assert stat.S_IMODE(control.parent.stat().st_mode) == 0o700
    if os.geteuid() == 0:  # another user (nobody) tries to connect to the control socket
        child = os.fork()
        if child == 0:
            try:
                os.setgid(65534)
                os.setuid(65534)
                socket.socket(socket.AF_UNIX).connect(str(control))
                os._exit(0)
            except PermissionError:
                os._exit(13)
            except BaseException:
                os._exit(1)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 13


def assert_files_private(folder: Path) -> None:
    """Nothing the system created under var/ is open to the group or other users."""
    loose = [
        (str(p), oct(stat.S_IMODE(p.lstat().st_mode)))
        for p in [folder, *folder.rglob("*")]
        if stat.S_IMODE(p.lstat().st_mode) & 0o077
    ]
    assert not loose
    assert {p.name for p in folder.iterdir()} >= {"jobs.db", "redis_password", "log", "redis", "circus"}


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    async with session.get(url) as resp:
        return resp.status, await resp.json()


@pytest.mark.skipif(find_redis_server() is None, reason="needs a redis-server >= 7.0")
async def test_the_whole_system_under_circus(tmp_path, circus_ports, fake_cat_facts, supervisor_factory):
    ports = circus_ports
    config = jobs_test_config(
        tmp_path / "var",  # the database in var/, where `make run` keeps it
        f"redis://127.0.0.1:{ports['redis']}/0",
        server={"host": "127.0.0.1", "port": ports["server"], "access_log": True, "shutdown_timeout": 20},
        logging={"level": "INFO"},
        cat_facts={"url": fake_cat_facts.url, "timeout": 10.0},
        # circus.endpoint left at its default: a unix socket under var/ beside the config file.
        circus={"timeout": 5.0},
        queue={"job_timeout": 10, "sweep_interval": 1, "shutdown_grace": 3.0},
        # The system's own metrics directory (the test session's is this process's).
        metrics={"dir": str(tmp_path / "var" / "metrics")},
        cache={"redis_url": f"redis://127.0.0.1:{ports['cache']}/0"},
    )
    # A file left by the processes of an earlier run: the launcher empties the folder first.
    stale = Path(config.metrics.dir) / "counter_999999999.db"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left over")
    sup = supervisor_factory(config)
    assert sup.endpoint == f"ipc://{tmp_path}/var/circus/control.sock"
    base = f"http://127.0.0.1:{ports['server']}"

    async def everything_active() -> bool:
        if sup.proc.poll() is not None:
            raise AssertionError(f"supervise exited {sup.proc.returncode}:\n{sup.log()}")
        try:
            statuses = await sup.statuses()
        except Exception:  # circusd not answering yet
            return False
        return all(statuses.get(name) == "active" for name in WATCHERS) and len(statuses) == len(WATCHERS)

    await wait_until(everything_active, 90, "every watcher active")
    assert await sup.statuses() == {name: "active" for name in WATCHERS}
    assert len(await sup.pids("web")) == 2
    assert len(await sup.pids("worker")) == 2
    assert len(await sup.pids("worker-high")) == 1 and len(await sup.pids("worker-low")) == 1
    [shim] = await sup.pids("redis")
    sup.seen.update(children(shim))  # the redis-server itself
    assert {Path(f"/proc/{pid}/exe").resolve().name for pid in children(shim)} == {"redis-check-rdb"}

    # The supervised Redis requires the password generated on first run; nothing works without it.
    password_file = tmp_path / "var" / "redis_password"
    password = password_file.read_text().strip()
    assert len(password) >= 32
    anonymous = redis.asyncio.Redis(port=ports["redis"])
    try:
        with pytest.raises(redis.AuthenticationError):
            await anonymous.ping()
    finally:
        await anonymous.aclose()
    config = load_config(write_config(tmp_path / "client.yaml", config), {"REDIS_PASSWORD_FILE": str(password_file)})
    assert config.redis.password == password
    # The cache's own Redis: the same password; a full memory evicts cache entries, never a job.
    for port, policy, persisted in ((ports["cache"], "allkeys-lru", "no"), (ports["redis"], "noeviction", "yes")):
        client = redis.asyncio.Redis(port=port, password=password, decode_responses=True)
        try:
            assert (await client.config_get("maxmemory-policy"))["maxmemory-policy"] == policy
            assert (await client.config_get("appendonly"))["appendonly"] == persisted
            if policy == "allkeys-lru":
                assert int((await client.config_get("maxmemory"))["maxmemory"]) > 0
        finally:
            await client.aclose()
    anonymous = redis.asyncio.Redis(port=ports["cache"])
    try:
        with pytest.raises(redis.AuthenticationError):
            await anonymous.ping()
    finally:
        await anonymous.aclose()
    await assert_private_to_this_user(sup, ports["server"])

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:

        async def web_answers() -> bool:
            try:
                async with session.get(f"{base}/healthz") as resp:
                    return resp.status == 200
            except aiohttp.ClientError:
                return False

        await wait_until(web_answers, 60, "web answering")

        # The status page, from circusd: every watcher, every process with its numbers.
        async with session.get(f"{base}/internal/status", headers=auth_header()) as resp:
            assert resp.status == 200
            html = await resp.text()
        for name in WATCHERS:
            assert f'data-watcher="{name}"' in html
        for pid in await sup.pids("web") + await sup.pids("worker"):
            assert f'<td class="pid">{pid}</td>' in html
        assert "Not running under circus" not in html
        assert re.search(r'<td class="rss">[\d.]+[KMG]', html), html
        watchers = {w.name: w for w in await read_circus_status(config.circus.endpoint, 5.0)}
        assert all(w.status == "active" for w in watchers.values())
        assert len(watchers["web"].processes) == 2

        # Both web processes serve (they accept on the one socket circus holds).
        web_pids = set(await sup.pids("web"))

        async def both_served() -> bool:
            stream = Stream(f"{base}/healthz")
            await asyncio.sleep(0.5)
            outcomes = await stream.stop()
            assert set(outcomes) == {"200"}, outcomes
            served = {int(p) for p in WEB_PIDS_IN_ACCESS_LOG.findall(sup.log("web"))}
            return web_pids <= served

        await wait_until(both_served, 60, "requests served by both web processes")

        # A SIGKILLed web process is replaced while the other keeps serving.
        victim, survivor = sorted(web_pids)
        killed_at = datetime.now()  # the log's clock
        os.kill(victim, signal.SIGKILL)
        await wait_until(lambda: not alive(victim), 10, "victim gone", 0.01)
        stream = Stream(f"{base}/healthz")

        async def replaced() -> bool:
            pids = await sup.pids("web")
            return len(pids) == 2 and victim not in pids and survivor in pids

        respawn = await wait_until(replaced, 30, "killed web process replaced")
        await asyncio.sleep(0.3)
        outcomes = await stream.stop()
        assert set(outcomes) == {"200"} and outcomes["200"] > 0, outcomes
        print(f"web respawn {respawn:.2f} s; {outcomes['200']} requests meanwhile, none failed")

        # A SIGKILLed worker's running job is run again and completed by another worker.
        queues = build_queues(config, worker=False)
        try:
            # Owned by an anonymous client, as /baz's jobs are: whoever holds the key reads it.
            job = await enqueue(
                {QUEUES_KEY: queues, CONFIG_KEY: config}, "slow_job", owner=ANONYMOUS_OWNER, seconds=3, timeout=4
            )

            async def job_status(*wanted: str) -> bool:
                status, body = await get_json(session, f"{base}/api/v1/jobs/{job.key}")
                assert status == 200, body
                return body["status"] in wanted

            await wait_until(lambda: job_status("active"), 30, "job active")
            killed_workers = await sup.pids("worker")
            for pid in killed_workers:  # the one running the job among them
                os.kill(pid, signal.SIGKILL)
            await wait_until(lambda: job_status("complete", "failed", "aborted"), 90, "job finished")
            status, body = await get_json(session, f"{base}/api/v1/jobs/{job.key}")
            assert body["status"] == "complete", body
            assert body["attempts"] >= 2 and body["result"] == {"slept": 3}
            new_workers = await sup.pids("worker")
            assert len(new_workers) == 2 and not set(new_workers) & set(killed_workers)
        finally:
            await queues.disconnect()

        # /internal/metrics sums every process: both web processes (and the killed one), the
        # workers (the killed ones' counts stay), the sweep that took the job back.
        assert not stale.exists()
        await asyncio.sleep(PUBLISH_INTERVAL + 0.5)  # every process has published its requests
        logged = len(WEB_PIDS_IN_ACCESS_LOG.findall(sup.log("web")))
        async with session.get(f"{base}/internal/metrics", headers=auth_header()) as resp:
            assert resp.status == 200
            families = {f.name: f for f in text_string_to_metric_families(await resp.text())}

        def total(family: str, sample: str, **labels: str) -> float:
            return sum(
                s.value
                for s in families[family].samples
                if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
            )

        # Every request the web processes logged before the scrape is counted, but for the killed
        # process's last second, which it had not published yet. A request is counted when its
        # answer is made and logged once sent, so a few may be counted and not logged.
        counted = total("http_request_duration_seconds", "http_request_duration_seconds_count")
        since = killed_at - timedelta(seconds=PUBLISH_INTERVAL + 0.5)
        lost = sum(
            1
            for stamp, pid in ACCESS_LOG_LINES.findall(sup.log("web"))
            if int(pid) == victim and datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f") >= since
        )
        assert logged > 100 and logged - lost <= counted <= logged + 10, (logged, lost, counted)
        assert total("http_request_duration_seconds", "http_request_duration_seconds_count", route="/healthz") > 100
        assert total("jobs_completed", "jobs_completed_total", queue="default", function="slow_job") == 1
        assert total("jobs_swept", "jobs_swept_total", queue="default", function="slow_job", outcome="requeued") == 1
        assert total("job_queue_depth", "job_queue_depth", queue="default", state="active") == 0
        writers = {name.rsplit("_", 1)[1] for name in os.listdir(config.metrics.dir) if name.startswith("histogram_")}
        assert len(writers) >= 3, writers  # web processes, the replaced one included, and workers

        # A reload of web under a stream of requests: none fails.
        old = set(await sup.pids("web"))
        stream = Stream(f"{base}/healthz")
        await asyncio.sleep(0.5)
        reload = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "circusctl"),
            "--endpoint",
            sup.endpoint,
            "--timeout",
            "60",
            "reload",
            "web",
            "--waiting",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await reload.communicate()
        assert reload.returncode == 0, out

        async def reloaded() -> bool:
            pids = set(await sup.pids("web"))
            return len(pids) == 2 and not pids & old

        await wait_until(reloaded, 60, "web reloaded")
        await wait_until(lambda: not any(alive(p) for p in old), 60, "old web gone")
        before_end = stream.total
        await asyncio.sleep(0.5)
        outcomes = await stream.stop()
        assert set(outcomes) == {"200"}, outcomes
        assert stream.total > before_end  # the new processes serve
        print(f"reload under load: {outcomes['200']} requests, none failed")

        # SIGTERM to circusd: an in-flight slow request completes first, Redis goes last, and
        # no process is left.
        fake_cat_facts.delay = 2.0
        calls = fake_cat_facts.calls
        slow = asyncio.create_task(get_json(session, f"{base}/api/v1/baz"))
        await wait_until(lambda: fake_cat_facts.calls > calls, 30, "baz upstream call", 0.01)
        for name in WATCHERS:
            await sup.pids(name)
        sup.seen.update(children(shim))
        pids = sup.all_pids()
        sup.proc.send_signal(signal.SIGTERM)
        status, body = await asyncio.wait_for(slow, 30)
        assert status == 200, body
        assert body["fact"].startswith("Cat fact number") and "key" in body["job"]  # Redis was still there
        code = await asyncio.to_thread(sup.proc.wait, 90)
    assert code == 0, sup.log()
    await wait_until(lambda: not any(alive(p) for p in pids), 30, "every process gone")
    assert_files_private(tmp_path / "var")

    circus_log = sup.log()
    stopped = re.findall(r"\[INFO\] (\S+) stopped", circus_log)
    assert set(stopped[-len(WATCHERS) :]) == set(WATCHERS), circus_log
    # Redis went last: the shim stopped it once every web and worker connection was closed, and
    # after the in-flight request had used it (its access log line, written once it answered).
    redis_log = sup.log("redis")
    assert "redis-shim: stopping redis" in redis_log and "its clients are gone" in redis_log, redis_log
    [shutdown] = re.findall(r"(\d+ \w{3} \d{4} \d\d:\d\d:\d\d\.\d{3}) [*#] User requested shutdown", redis_log)
    [answered] = re.findall(
        r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO \d+ aiohttp\.access .*\"GET /api/v1/baz HTTP/1\.1\" 200",
        sup.log("web"),
        re.MULTILINE,
    )
    redis_stopped_at = datetime.strptime(shutdown, "%d %b %Y %H:%M:%S.%f")
    assert redis_stopped_at >= datetime.strptime(answered, "%Y-%m-%d %H:%M:%S,%f"), (shutdown, answered)
