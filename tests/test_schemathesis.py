"""Schemathesis, a client nobody here wrote, checks /openapi.json against the running server:
every operation, every check, with generated valid and invalid requests; only /fail's
deliberate 500 is left out."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from support import make_test_config

from server.app import create_app

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
# Bounded: a few tens of seconds on 2 cores for every operation of both API versions.
EXAMPLES_PER_OPERATION = 15


@pytest.mark.timeout(240)
async def test_schemathesis_finds_no_failure(redis_url, fake_cat_facts, tmp_path, aiohttp_server):
    config = make_test_config(
        database=tmp_path / "st.db",
        redis_url=redis_url,
        cat_facts={"url": fake_cat_facts.url, "timeout": 2.0},
        logging={"level": "WARNING"},
    )
    server = await aiohttp_server(create_app(config))
    command = [
        str(SCHEMATHESIS),
        "run",
        str(server.make_url("/openapi.json")),
        "--checks",
        "all",
        "--exclude-path-regex",
        r"^/api/v[0-9]+/fail$",
        "--max-examples",
        str(EXAMPLES_PER_OPERATION),
        "--seed",
        "1",
        "--workers",
        "1",
        "--suppress-health-check",
        "all",
        "--request-timeout",
        "10",
        "--max-failures",
        "20",
        "--report-dir",
        str(tmp_path / "report"),
    ]
    env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""}
    proc = await asyncio.create_subprocess_exec(
        *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env, cwd=tmp_path
    )
    try:
        output, _ = await asyncio.wait_for(proc.communicate(), 200)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    text = output.decode(errors="replace")
    assert proc.returncode == 0, text[-20_000:]
    assert "No issues found" in text or "passed" in text, text[-5000:]
