"""Logs: text by default, LOG_FORMAT=json one object per line; the request id and W3C trace context
on every line of a request and of the jobs it enqueued."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime

import aiohttp
import pytest
from fixtures_jobs import clean_env, jobs_test_config, running_workers, wait_for_job, write_config

from server.config import PROJECT_ROOT
from server.log_context import JsonFormatter, TextFormatter, make_formatter, valid_traceparent
from testing.redis import free_port

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Captured:
    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    def lines(self) -> list[str]:
        return [line for line in self.stream.getvalue().splitlines() if line]

    def records(self) -> list[dict]:
        return [json.loads(line) for line in self.lines()]


@pytest.fixture
def json_log() -> Iterator[Captured]:
    """Every record of every logger, formatted as LOG_FORMAT=json formats it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        yield Captured(stream)
    finally:
        root.removeHandler(handler)
        root.setLevel(level)


def test_the_formats_are_text_and_json_only():
    assert isinstance(make_formatter("text"), TextFormatter)
    assert isinstance(make_formatter("json"), JsonFormatter)
    with pytest.raises(ValueError):
        make_formatter("xml")


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        (TRACEPARENT, TRACEPARENT),
        (
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
        ),
        # A later version may add fields: the four known ones are kept.
        (
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", None),
        ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", None),
        ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", None),
        ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", None),
        ("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01", None),  # uppercase is invalid
        ("00-4bf92f3577b34da6a3ce929d0e0e47-00f067aa0ba902b7-01", None),
        ("garbage", None),
        ("", None),
        ("00-" + "a" * 5000, None),
    ],
)
def test_only_a_valid_traceparent_is_kept(value, kept):
    assert valid_traceparent(value) == kept


async def test_json_lines_of_a_request_carry_its_id_and_trace_context(client, json_log):
    resp = await client.get("/api/v1/fail", headers={"traceparent": TRACEPARENT, "X-Request-ID": "req-json-1"})
    assert resp.status == 500
    records = [r for r in json_log.records() if r.get("request_id") == "req-json-1"]
    error = next(r for r in records if r["level"] == "ERROR")
    assert error["logger"] == "server.middlewares.errors"
    assert error["message"] == "unhandled error in GET /api/v1/fail"
    assert error["traceparent"] == TRACEPARENT
    assert error["pid"] == os.getpid()
    assert "KeyError" in error["exception"] and "Traceback" in error["exception"]
    assert datetime.fromisoformat(error["time"]).tzinfo is not None
    assert "job_key" not in error
    # One object per line, whatever the message holds.
    assert all(line.startswith("{") and line.endswith("}") for line in json_log.lines())


async def test_a_bad_traceparent_is_ignored_and_lines_outside_requests_have_none(client, json_log):
    await client.get("/api/v1/fail", headers={"traceparent": "nonsense", "X-Request-ID": "req-json-2"})
    logging.getLogger("test").info("outside any request")
    records = json_log.records()
    assert all("traceparent" not in r for r in records if r["request_id"] == "req-json-2")
    outside = next(r for r in records if r["message"] == "outside any request")
    assert outside["request_id"] == "-" and "traceparent" not in outside


async def test_the_trace_context_and_request_id_reach_the_jobs_log_lines(jobs_config, jobs_client, json_log):
    async with running_workers(jobs_config, ["default"]):
        resp = await jobs_client.post(
            "/test/enqueue",
            json={"function": "slow_job", "kwargs": {"seconds": 0.01}},
            headers={"X-Request-ID": "req-job-1", "traceparent": TRACEPARENT},
        )
        key = (await resp.json())["key"]
        await wait_for_job(jobs_client, key, {"complete"})
    job_lines = [r for r in json_log.records() if r.get("job_key") == key]
    assert job_lines, json_log.lines()
    for line in job_lines:
        assert line["job_function"] == "slow_job"
        assert line["request_id"] == "req-job-1"
        assert line["traceparent"] == TRACEPARENT
    # The worker's next lines are no longer the job's.
    after = [r for r in json_log.records() if r["logger"].startswith("saq") and r.get("job_key") not in (None, key)]
    assert after == []


def test_text_lines_end_with_the_trace_context_when_there_is_one():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    record.request_id = "r1"
    record.traceparent = TRACEPARENT
    line = TextFormatter().format(record)
    assert line.endswith(f"[r1] hello traceparent={TRACEPARENT}")
    record.traceparent = None
    assert TextFormatter().format(record).endswith("[r1] hello")


async def test_log_format_json_from_the_environment_in_a_real_process(tmp_path, redis_url, fake_cat_facts):
    """`LOG_FORMAT=json python -m server serve` (embedded worker): every line parses, and the job a
    request enqueued logs with the request's id and trace context."""
    config = jobs_test_config(
        tmp_path,
        redis_url,
        queue={"embedded_worker": True},
        server={"access_log": True},
        cat_facts={"url": fake_cat_facts.url},
    )
    config_path = write_config(tmp_path / "serve.yaml", config)
    port = free_port()
    log_path = tmp_path / "serve.log"
    env = {**clean_env(), "LOG_FORMAT": "json", "LOG_LEVEL": "INFO"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "server", "--config", str(config_path), "serve", "--port", str(port)],
            cwd=PROJECT_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        async with aiohttp.ClientSession() as session:
            deadline = time.monotonic() + 30
            while True:
                assert proc.poll() is None, log_path.read_text()
                try:
                    async with session.get(f"http://127.0.0.1:{port}/healthz") as resp:
                        if resp.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                assert time.monotonic() < deadline, log_path.read_text()
                await asyncio.sleep(0.1)
            # A miss of baz enqueues slow_job (2 s), which the embedded worker runs.
            async with session.get(
                f"http://127.0.0.1:{port}/api/v1/baz", headers={"traceparent": TRACEPARENT, "X-Request-ID": "req-proc"}
            ) as resp:
                assert resp.status == 200
                job = (await resp.json())["job"]
            while True:
                async with session.get(f"http://127.0.0.1:{port}{job['url']}") as resp:
                    if (await resp.json())["status"] == "complete":
                        break
                assert time.monotonic() < deadline + 30, log_path.read_text()
                await asyncio.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    lines = [line for line in log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert {"time", "level", "logger", "message", "request_id", "pid"} <= set(records[0])
    access = [r for r in records if r["logger"] == "aiohttp.access" and r["request_id"] == "req-proc"]
    assert len(access) == 1 and access[0]["traceparent"] == TRACEPARENT and access[0]["pid"] == proc.pid
    job_lines = [r for r in records if r.get("job_key") == job["key"]]
    assert job_lines, lines
    assert all(r["job_function"] == "slow_job" for r in job_lines)
    assert all(r["request_id"] == "req-proc" and r["traceparent"] == TRACEPARENT for r in job_lines)
