"""`make dev`: the app under aiohttp-devtools, restarted when the code changes."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from fixtures_jobs import clean_env

from server.config import PROJECT_ROOT
from testing.redis import free_port

# What `python -m server dev` needs of a checkout: the code, the templates, the config files.
TREE = ("server", "templates", "config.yaml", "redis.conf")


def copy_tree(dest: Path) -> Path:
    for name in TREE:
        source = PROJECT_ROOT / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(source, dest / name)
    return dest


async def answer(session: aiohttp.ClientSession, url: str) -> dict | None:
    try:
        async with session.get(url) as resp:
            return await resp.json() if resp.status == 200 else None
    except aiohttp.ClientError:
        return None


async def until(session, url, predicate, proc, log: Path, timeout: float) -> tuple[dict, float]:
    started = time.monotonic()
    while True:
        assert proc.poll() is None, log.read_text()
        body = await answer(session, url)
        if body is not None and predicate(body):
            return body, time.monotonic() - started
        assert time.monotonic() - started < timeout, f"no such answer after {timeout} s:\n{log.read_text()}"
        await asyncio.sleep(0.05)


async def test_make_dev_serves_an_edited_controller_within_seconds(tmp_path, redis_url):
    tree = copy_tree(tmp_path / "tree")
    port, aux_port = free_port(), free_port()
    log = tmp_path / "dev.log"
    env = {
        **clean_env(),
        "PYTHONPATH": str(tree),  # the copy's `server`, not the installed checkout's
        "REDIS_URL": redis_url,  # answers: make dev uses it and starts no Redis of its own
        "DATABASE_PATH": str(tmp_path / "dev.db"),
        "VAR_DIR": str(tmp_path / "var"),
        "METRICS_DIR": str(tmp_path / "metrics"),
        "INTERNAL_PASSWORD": "dev-test",
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "server",
                "--config",
                str(tree / "config.yaml"),
                "dev",
                "--port",
                str(port),
                "--aux-port",
                str(aux_port),
                "--no-livereload",
            ],
            cwd=tree,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/api/v1/foo"
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            first, startup = await until(session, url, lambda b: True, proc, log, 60)
            assert first["hello"] == "world"
            controller = tree / "server" / "controllers" / "foo.py"
            source = controller.read_text()
            assert '"hello": "world"' in source
            controller.write_text(source.replace('"hello": "world"', '"hello": "edited"'))
            edited, reload = await until(session, url, lambda b: b["hello"] == "edited", proc, log, 30)
            assert edited["version"] == 1
        print(f"make dev: first answer after {startup:.1f} s; edited controller served {reload:.1f} s after the edit")
        text = log.read_text()
        assert "Restarting dev server" in text
        assert str(tree / "server") in text or "restarts when server/ changes" in text
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in its terminal
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
