"""Error reporting to Honeybadger, against a local fake collector: what arrives, what never does, and
that a sick collector slows neither requests nor shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
from contextlib import asynccontextmanager

import aiohttp
import pytest
import yaml
from aiohttp import web
from saq import Queue
from saq.job import Job, Status
from support import make_test_config

from server.app import api_layers, create_app
from server.config import ENV_OVERRIDES, PROJECT_ROOT
from server.keys import BODY_KEY, REPORTER_KEY
from server.routing.chain import chained
from server.routing.stamps import body_schema
from server.services.honeybadger.sender import HoneybadgerReporter
from server.workers.failures import handle_swept
from server.workers.reporting import CTX_REPORT_FAILURE, close_job_reporting, open_job_reporting
from testing.fakes import HONEYBADGER_API_KEY as API_KEY
from testing.redis import free_port

REPORTER_LOG = "server.services.honeybadger.sender"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture
def hb_config(tmp_path, redis_url, honeybadger_collector):
    return make_test_config(
        database=tmp_path / "test.db",
        redis_url=redis_url,
        honeybadger=honeybadger_collector.honeybadger_config(),
    )


@pytest.fixture
async def hb_client(redis_url, honeybadger_collector, aiohttp_client, hb_config):
    return await aiohttp_client(create_app(hb_config))


@asynccontextmanager
async def loop_lag_probe(interval: float = 0.01):
    """Yields a list whose max() is the longest the event loop was late to wake a sleeper."""
    lags: list[float] = [0.0]
    loop = asyncio.get_running_loop()

    async def tick() -> None:
        while True:
            start = loop.time()
            await asyncio.sleep(interval)
            lags.append(loop.time() - start - interval)

    task = asyncio.create_task(tick())
    try:
        yield lags
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_fail_sends_one_notice_with_context_and_filtered_secrets(hb_client, honeybadger_collector):
    resp = await hb_client.get(
        "/api/v1/fail?password=hunter2&token=x&keep=visible&keep=twice",
        headers={
            "X-Request-ID": "hb-fail-1",
            "Authorization": "Bearer s3cr3t",
            "X-Api-Key": "k3y",
            "Cookie": "session=c00kie",
            "User-Agent": "tests",
        },
    )
    assert resp.status == 500
    body = await resp.json()
    assert body["request_id"] == "hb-fail-1"
    assert "KeyError" not in json.dumps(body)

    [notice] = await honeybadger_collector.wait_for(1)
    await hb_client.close()  # flushes: anything else queued would arrive now
    assert len(honeybadger_collector.notices) == 1
    assert honeybadger_collector.notices[0].headers["X-Api-Key"] == API_KEY

    error, request = notice["error"], notice["request"]
    assert error["class"] == "KeyError"
    assert "missing-key" in error["message"]
    assert UUID.fullmatch(error["token"])
    top = error["backtrace"][0]
    assert top["file"] == "[PROJECT_ROOT]/server/controllers/fail.py" and top["method"] == "get_fail"
    assert "missing-key" in "".join(top["source"].values())
    assert notice["correlation_context"] == {"request_id": "hb-fail-1"}
    assert request["context"]["request_id"] == "hb-fail-1"
    assert request["context"]["api_version"] == 1
    assert request["component"] == "/api/v1/fail"
    assert request["action"] == "GET"
    assert request["url"].endswith("/api/v1/fail")  # the query is reported, filtered, in params
    assert request["params"] == {"password": "[FILTERED]", "token": "[FILTERED]", "keep": ["visible", "twice"]}
    cgi = request["cgi_data"]
    assert cgi["HTTP_AUTHORIZATION"] == "[FILTERED]"
    assert cgi["HTTP_X_API_KEY"] == "[FILTERED]"
    assert cgi["HTTP_COOKIE"] == "[FILTERED]"
    assert cgi["HTTP_USER_AGENT"] == "tests"
    assert cgi["REQUEST_METHOD"] == "GET"
    assert notice["server"]["environment_name"] == "test"
    assert notice["notifier"]["name"] == "Honeybadger for Python"
    raw = json.dumps(notice)
    for secret in ("hunter2", "s3cr3t", "k3y", "c00kie"):
        assert secret not in raw


async def test_json_body_is_reported_with_nested_secrets_filtered(
    redis_url, honeybadger_collector, aiohttp_client, hb_config
):
    app = create_app(hb_config)
    sub = web.Application()

    @body_schema({"type": ["object", "array"]})
    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError(f"could not take {type(request[BODY_KEY]).__name__}")

    sub.add_routes(chained([web.post("/boom", boom)], api_layers(hb_config)))
    app.add_subapp("/t", sub)
    client = await aiohttp_client(app)
    doc = {"user": {"name": "ann", "password": "hunter2"}, "items": [{"api_key": "k", "n": 1}], "n": 2}
    assert (await client.post("/t/boom?page=3", json=doc)).status == 500
    assert (await client.post("/t/boom", json=[{"secret": "s", "ok": True}])).status == 500
    first, second = await honeybadger_collector.wait_for(2)
    assert first["error"]["class"] == "RuntimeError"
    assert first["request"]["component"] == "/t/boom"
    assert first["request"]["params"] == {
        "page": "3",
        "user": {"name": "ann", "password": "[FILTERED]"},
        "items": [{"api_key": "[FILTERED]", "n": 1}],
        "n": 2,
    }
    assert first["request"]["context"]["api_version"] is None
    assert second["request"]["params"] == {"_json": [{"secret": "[FILTERED]", "ok": True}]}


@pytest.mark.parametrize(
    "handler_cancellation, went_away",
    [(False, ConnectionResetError), (True, asyncio.CancelledError)],
    ids=["run_app-default", "handler-cancellation"],
)
async def test_4xx_answers_and_client_disconnects_are_not_reported(
    redis_url, honeybadger_collector, hb_config, handler_cancellation, went_away
):
    app = create_app(hb_config)
    disconnects: list[BaseException] = []

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        try:
            for _ in range(1000):
                await resp.write(b"x" * 65536)
                await asyncio.sleep(0.01)
        except BaseException as exc:  # the client went away mid-answer
            disconnects.append(exc)
            raise
        return resp

    app.router.add_get("/stream", stream)
    # A real runner: aiohttp's test server always cancels handlers on disconnect, run_app does not.
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        base = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"
        async with aiohttp.ClientSession(base) as http:
            for method, path, status in (
                ("GET", "/api/v1/nope", 404),
                ("DELETE", "/api/v1/fail", 405),
                ("GET", "/api/v1/foo?notify=maybe", 400),
            ):
                async with http.request(method, path) as resp:
                    assert resp.status == status

            resp = await http.get("/stream")
            await resp.content.readexactly(10)
            resp.close()
            deadline = time.monotonic() + 15
            while not disconnects and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert disconnects and isinstance(disconnects[0], went_away), disconnects

            # One notice travels the same queue after them all: once it is in, any before it was too.
            async with http.get("/api/v1/fail") as resp:
                assert resp.status == 500
            await honeybadger_collector.wait_for(1)
    finally:
        await runner.cleanup()
    assert [n.payload["error"]["class"] for n in honeybadger_collector.notices] == ["KeyError"]


async def test_foo_sends_a_custom_notice_only_when_asked(hb_client, honeybadger_collector):
    plain = await hb_client.get("/api/v1/foo")
    assert plain.status == 200
    assert "notice" not in await plain.json()
    off = await hb_client.get("/api/v1/foo?notify=0")
    assert "notice" not in await off.json()

    resp = await hb_client.get("/api/v1/foo?notify=1", headers={"X-Request-ID": "foo-notify"})
    body = await resp.json()
    assert resp.status == 200 and body["hello"] == "world"
    assert UUID.fullmatch(body["notice"])
    v2 = await (await hb_client.get("/api/v2/foo?notify=true")).json()
    assert UUID.fullmatch(v2["notice"]) and v2["notice"] != body["notice"]

    first, second = await honeybadger_collector.wait_for(2)
    await hb_client.close()
    assert len(honeybadger_collector.notices) == 2  # not one for the plain or notify=0 calls
    assert first["error"]["class"] == "FooNotice"
    assert first["error"]["message"] == "GET foo asked for a test notice"
    assert first["error"]["token"] == body["notice"]
    assert first["error"]["backtrace"][0]["file"] == "[PROJECT_ROOT]/server/controllers/foo.py"
    assert first["error"]["backtrace"][0]["method"] == "send_foo_notice"
    assert first["request"]["context"]["request_id"] == "foo-notify"
    assert first["request"]["component"] == "/api/v1/foo"
    assert first["request"]["params"] == {"notify": "1"}
    assert second["request"]["context"]["api_version"] == 2


async def test_bad_notify_value_is_a_400_naming_the_parameter(client):
    resp = await client.get("/api/v1/foo?notify=yes-please")
    assert resp.status == 400
    body = await resp.json()
    assert body["errors"][0]["parameter"] == "notify"


async def test_a_hung_collector_slows_neither_requests_nor_shutdown(
    tmp_path, redis_url, honeybadger_collector, aiohttp_client, caplog
):
    honeybadger_collector.hang(30)
    flush_bound = 1.0
    config = make_test_config(
        database=tmp_path / "t.db",
        redis_url=redis_url,
        honeybadger=honeybadger_collector.honeybadger_config(timeout=10.0, max_backlog=5, flush_timeout=flush_bound),
    )
    client = await aiohttp_client(create_app(config))
    reporter = client.app[REPORTER_KEY]
    caplog.set_level(logging.INFO, logger=REPORTER_LOG)

    async def fail(i: int) -> float:
        start = time.monotonic()
        resp = await client.get("/api/v1/fail", headers={"X-Request-ID": f"hang-{i}"})
        body = await resp.json()
        assert resp.status == 500 and body["request_id"] == f"hang-{i}"
        return time.monotonic() - start

    async with loop_lag_probe() as lags:
        durations = await asyncio.gather(*(fail(i) for i in range(20)))
        await honeybadger_collector.wait_for(1)  # the first send is now hanging at the collector
    # A request that waited on a send would take the send timeout (10 s) or the hang (30 s).
    assert max(durations) < 5.0, durations
    assert max(lags) < 5.0, max(lags)

    stats = reporter.stats()
    assert stats.sent == 0
    assert stats.dropped >= 20 - 5 - 1  # beyond the backlog of 5 (and the one being sent)
    assert stats.dropped + stats.pending == 20
    full = [r for r in caplog.records if "is full; dropping new ones" in r.getMessage()]
    assert len(full) == 1  # one line for the whole burst, not one per notice

    start = time.monotonic()
    await client.close()  # runs the app's cleanup: the reporter's bounded flush
    assert time.monotonic() - start < flush_bound + 4.0
    assert any("not sent within the 1.0s flush bound" in r.getMessage() for r in caplog.records)


async def test_no_api_key_sends_nothing_and_says_so_once(
    tmp_path, redis_url, honeybadger_collector, aiohttp_client, caplog
):
    caplog.set_level(logging.INFO, logger=REPORTER_LOG)
    config = make_test_config(
        database=tmp_path / "t.db",
        redis_url=redis_url,
        honeybadger=honeybadger_collector.honeybadger_config(api_key=""),
    )
    client = await aiohttp_client(create_app(config))
    assert (await client.get("/api/v1/fail")).status == 500
    assert (await (await client.get("/api/v1/foo?notify=1")).json())["notice"] is None
    await client.close()
    assert honeybadger_collector.notices == []
    lines = [r.getMessage() for r in caplog.records if r.name == REPORTER_LOG]
    assert lines == ["honeybadger: no API key (HONEYBADGER_API_KEY); error reporting is off"]


async def test_development_environment_reports_only_when_forced(
    tmp_path, redis_url, honeybadger_collector, aiohttp_client, caplog
):
    caplog.set_level(logging.INFO, logger=REPORTER_LOG)
    config = make_test_config(
        database=tmp_path / "t.db",
        redis_url=redis_url,
        honeybadger=honeybadger_collector.honeybadger_config(environment="development", force_report_data=False),
    )
    client = await aiohttp_client(create_app(config))
    assert (await client.get("/api/v1/fail")).status == 500
    await client.close()
    assert honeybadger_collector.notices == []
    lines = [r.getMessage() for r in caplog.records if r.name == REPORTER_LOG]
    assert len(lines) == 1 and "'development'" in lines[0] and "off" in lines[0]


def _boom(n: int) -> None:
    raise ValueError(f"job input {n} is odd")


async def test_job_failures_carry_job_context_and_request_id(redis_url, honeybadger_collector, hb_config):
    queue = Queue.from_url(redis_url, name="default")
    ctx: dict = {}
    await open_job_reporting(ctx, hb_config.honeybadger)  # what a worker's startup hook does
    try:
        job = Job(
            "charge",
            kwargs={"n": 3, "card": {"credit_card": "4111-1111-1111-1111"}, "api_token": "t0k-not-for-honeybadger"},
            queue=queue,
            retries=3,
            attempts=1,
            status=Status.QUEUED,
            meta={"request_id": "from-meta"},
        )
        try:
            _boom(3)
        except ValueError as exc:
            error = exc
        # What after_process does: attempt 1 of 3 failed, SAQ will retry it.
        assert ctx[CTX_REPORT_FAILURE](job, error, final=False, request_id="req-enqueue-1")
        last = Job(
            "charge",
            kwargs={"n": 5},
            queue=queue,
            retries=3,
            attempts=3,
            status=Status.FAILED,
            meta={"request_id": "from-meta"},
        )
        assert ctx[CTX_REPORT_FAILURE](last, TimeoutError(), final=True, request_id=None)
        swept = Job(
            "slow_job",
            queue=queue,
            retries=1,
            attempts=1,
            status=Status.ABORTED,
            error="swept",
            meta={"request_id": "req-swept"},
        )
        # What a sweep does with a job it took back (recorded, and reported through the same hook).
        await handle_swept(queue.redis, ctx[CTX_REPORT_FAILURE], [swept], keep=10)
        retrying, final, lost = await honeybadger_collector.wait_for(3)
        # honeybadger is loaded now; its crash hook (a global client we never configure) is not.
        assert "honeybadger" in sys.modules
        assert getattr(sys.excepthook, "__module__", None) != "honeybadger.core"
    finally:
        await close_job_reporting(ctx)
        await queue.disconnect()

    assert retrying["error"]["class"] == "ValueError"
    assert retrying["error"]["message"] == "job input 3 is odd"
    assert retrying["error"]["backtrace"][0]["method"] == "_boom"
    assert set(retrying["error"]["tags"]) == {"saq", "job-failed"}
    context = retrying["request"]["context"]
    assert context["request_id"] == "req-enqueue-1"
    assert retrying["correlation_context"] == {"request_id": "req-enqueue-1"}
    assert context["job"] == {
        "function": "charge",
        "key": job.key,
        "queue": "default",
        "attempt": 1,
        "retries": 3,
        "will_retry": True,
        "status": "queued",
        "timeout": job.timeout,
    }
    assert retrying["request"]["component"] == "saq" and retrying["request"]["action"] == "charge"
    assert retrying["request"]["params"] == {
        "kwargs": {"n": 3, "card": {"credit_card": "[FILTERED]"}, "api_token": "[FILTERED]"}
    }
    assert "4111-1111-1111-1111" not in json.dumps(retrying) and "t0k-not-for" not in json.dumps(retrying)

    assert final["error"]["class"] == "TimeoutError"
    assert final["request"]["context"]["request_id"] == "from-meta"  # the id the job carried
    assert final["request"]["context"]["job"]["will_retry"] is False
    assert final["request"]["context"]["job"]["attempt"] == 3

    assert lost["error"]["class"] == "JobSwept"
    assert swept.key in lost["error"]["message"]
    assert lost["request"]["context"]["request_id"] == "req-swept"
    assert lost["request"]["context"]["job"]["status"] == "aborted"
    assert lost["request"]["context"]["job"]["will_retry"] is False
    assert set(lost["error"]["tags"]) == {"saq", "job-swept"}


async def test_a_refusing_endpoint_is_counted_not_raised(hb_config, caplog):
    caplog.set_level(logging.INFO, logger=REPORTER_LOG)
    port = free_port()  # nothing listens there
    reporter = HoneybadgerReporter(dataclasses.replace(hb_config.honeybadger, endpoint=f"http://127.0.0.1:{port}"))
    reporter.start()
    for i in range(3):
        assert reporter.notify("Probe", f"probe {i}")
    await reporter.aclose()
    stats = reporter.stats()
    assert (stats.sent, stats.failed, stats.pending) == (0, 3, 0)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot send a notice" in warnings[0].getMessage()


def test_importing_server_imports_no_honeybadger_and_keeps_the_process_as_it_was():
    code = (
        "import pkgutil, importlib, signal, sys, threading, server\n"
        "for m in pkgutil.walk_packages(server.__path__, 'server.'):\n"
        "    importlib.import_module(m.name)\n"
        "assert 'honeybadger' not in sys.modules, 'honeybadger imported'\n"
        "assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL\n"
        "assert sys.excepthook is sys.__excepthook__\n"
        "assert threading.active_count() == 1\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=PROJECT_ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


async def test_sigterm_shuts_down_gracefully_with_honeybadger_loaded(tmp_path, honeybadger_collector):
    """A real `python -m server serve`: an in-flight request still gets its answer after SIGTERM,
    and a hung Honeybadger holds the exit no longer than the flush bound."""
    honeybadger_collector.hang(60)
    loop = asyncio.get_running_loop()
    # A "Redis" that accepts and never answers: /readyz stays in flight until its check times out.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    silent.setblocking(False)
    port = free_port()
    config = {
        "server": {"port": port, "shutdown_timeout": 15, "access_log": False},
        "logging": {"level": "INFO"},
        "database": {"path": str(tmp_path / "app.db")},
        "redis": {"url": f"redis://127.0.0.1:{silent.getsockname()[1]}/0", "socket_timeout": 1.0},
        "queue": {"embedded_worker": False},
        "honeybadger": honeybadger_collector.honeybadger_config(timeout=5.0, flush_timeout=1.0),
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k not in ENV_OVERRIDES}
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "server",
            "--config",
            str(tmp_path / "config.yaml"),
            "serve",
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log_file,
            stderr=log_file,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            deadline = time.monotonic() + 30
            while True:
                try:
                    async with http.get(f"{base}/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                assert time.monotonic() < deadline and proc.returncode is None, log_path.read_text()
                await asyncio.sleep(0.1)

            async with http.get(f"{base}/api/v1/fail", headers={"X-Request-ID": "sigterm-1"}) as resp:
                assert resp.status == 500
            [notice] = await honeybadger_collector.wait_for(1)  # built by honeybadger, now hanging
            assert notice["error"]["class"] == "KeyError"
            assert notice["request"]["context"]["request_id"] == "sigterm-1"

            async def readyz() -> tuple[int, dict]:
                async with http.get(f"{base}/readyz") as resp:
                    return resp.status, await resp.json()

            in_flight = asyncio.create_task(readyz())
            conn, _ = await asyncio.wait_for(loop.sock_accept(silent), 20)  # the handler is waiting
            proc.send_signal(signal.SIGTERM)
            terminated = time.monotonic()
            status, body = await asyncio.wait_for(in_flight, 20)
            assert status == 503  # answered after SIGTERM: the in-flight request finished
            assert body["failing"] == ["redis"]
            conn.close()
        code = await asyncio.wait_for(proc.wait(), 30)
        took = time.monotonic() - terminated
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        silent.close()
    log_text = log_path.read_text()
    assert code == 0, log_text
    # The collector still hangs (60 s): the exit waited for the flush bound, not for it.
    assert took < 20, (took, log_text)
    assert "not sent within the 1.0s flush bound" in log_text
    assert "honeybadger: reporter closed" in log_text
