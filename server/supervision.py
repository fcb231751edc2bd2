"""Running the whole system under circus: the launcher, the Redis shim, and circus hooks.

Nothing here runs on an event loop: these are process-level entry points (`python -m server
supervise`, `python -m server redis-shim`) and hooks that circusd calls.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from server.config import PROJECT_ROOT, Config

log = logging.getLogger(__name__)

CIRCUS_INI = PROJECT_ROOT / "circus.ini"
DEFAULT_VAR_DIR = PROJECT_ROOT / "var"
# Redis waits this long, after being asked to stop, for the web and worker processes to let go.
REDIS_DRAIN_SECONDS = 40.0
_PR_SET_PDEATHSIG = 1


def _endpoint_port(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


def circus_env(config: Config, environ: Mapping[str, str], redis_binary: str) -> dict[str, str]:
    """The environment circusd and every watcher get: the contract's names with resolved values.

    circus.ini reads them as $(circus.env.NAME); an unset name would crash circusd, so every one
    is filled from the validated config (which already applied the user's environment).
    """
    redis_url = urlsplit(config.redis.url)
    circus_port = _endpoint_port(config.circus.endpoint)
    env = dict(environ)
    env.update(
        {
            "PROJECT_ROOT": str(PROJECT_ROOT),
            # Logs and Redis data (git-ignored); tests point it at a temporary directory.
            "VAR_DIR": environ.get("VAR_DIR") or str(DEFAULT_VAR_DIR),
            "PYTHON": sys.executable,
            "SERVER_HOST": config.server.host,
            "SERVER_PORT": str(config.server.port),
            "DATABASE_PATH": config.database.path,
            "REDIS_URL": config.redis.url,
            "REDIS_SERVER": redis_binary,
            "REDIS_PORT": str(redis_url.port or 6379),
            "CAT_FACTS_URL": config.cat_facts.url,
            "HONEYBADGER_ENVIRONMENT": config.honeybadger.environment,
            "HONEYBADGER_ENDPOINT": config.honeybadger.endpoint,
            "INTERNAL_USERNAME": config.internal.username,
            "CIRCUS_ENDPOINT": config.circus.endpoint,
            "CIRCUS_PUBSUB_PORT": str(circus_port + 1),
            # Under circus the workers are separate processes.
            "QUEUE_EMBEDDED_WORKER": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    # Secrets pass through only when the user set them; never written to a file.
    if config.honeybadger.api_key:
        env["HONEYBADGER_API_KEY"] = config.honeybadger.api_key
    if config.internal.password:
        env["INTERNAL_PASSWORD"] = config.internal.password
    return env


def supervise(config: Config, config_path: Path, ini: Path = CIRCUS_INI) -> int:
    """Apply migrations, then replace this process with circusd in the foreground."""
    from server.helpers.redis_server import find_redis_server

    redis_binary = find_redis_server()
    if redis_binary is None:
        print("no redis-server >= 6.2 found: run `make run` (it installs one) or put one on PATH",
              file=sys.stderr)
        return 1
    env = circus_env(config, os.environ, redis_binary)
    var_dir = Path(env["VAR_DIR"])
    for folder in (var_dir / "log", var_dir / "redis"):
        folder.mkdir(parents=True, exist_ok=True)
    env["SERVER_CONFIG"] = str(config_path)
    migrate = subprocess.run(
        [sys.executable, "-m", "server", "--config", str(config_path), "migrate"], env=env
    )
    if migrate.returncode != 0:
        return migrate.returncode
    circusd = shutil.which("circusd", path=str(Path(sys.executable).parent)) or shutil.which("circusd")
    if circusd is None:
        print("circusd not found: install the project (`make run`)", file=sys.stderr)
        return 1
    print(f"starting circusd with {ini} (logs in {var_dir / 'log'}); Ctrl-C stops everything",
          file=sys.stderr)
    sys.stderr.flush()
    os.execve(circusd, [circusd, str(ini)], env)
    return 0  # not reached


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the shim dies, even by SIGKILL, so Redis is never orphaned."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def _other_clients(port: int) -> int | None:
    import redis

    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=1, socket_connect_timeout=1)
        try:
            me = client.client_id()
            return sum(1 for c in client.client_list() if int(c["id"]) != me)
        finally:
            client.close()
    except redis.RedisError:
        return None


def redis_shim(
    binary: str, conf: Path, port: int, data_dir: Path, drain_seconds: float = REDIS_DRAIN_SECONDS
) -> int:
    """Run redis-server as a child; on SIGTERM/SIGINT stop it only once its clients are gone.

    circus stops all watchers at once. Redis must go last so that in-flight requests and jobs can
    still reach it while they finish: this shim waits until no other client is connected (the web
    and worker processes have exited) or `drain_seconds` pass, then asks Redis to stop (it
    flushes its append-only file on SIGTERM).
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(
        [binary, str(conf), "--port", str(port), "--dir", str(data_dir)],
        preexec_fn=_die_with_parent,
        cwd=str(PROJECT_ROOT),
    )
    stopping = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopping.wait(0.5):
        if proc.poll() is not None:
            return proc.returncode
    started = time.monotonic()
    deadline = started + drain_seconds
    clients = None
    while time.monotonic() < deadline and proc.poll() is None:
        clients = _other_clients(port)
        if clients == 0:
            break
        time.sleep(0.2)
    print(
        f"redis-shim: stopping redis after {time.monotonic() - started:.1f} s "
        f"({'its clients are gone' if clients == 0 else f'{clients} clients still connected'})",
        file=sys.stderr, flush=True,
    )
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def wait_for_redis(watcher: Any, arbiter: Any, hook_name: str, **kwargs: Any) -> bool:
    """circus `after_start` hook of the redis watcher: the next watchers start once Redis answers."""
    import redis

    port = int(watcher.env.get("REDIS_PORT") or os.environ.get("REDIS_PORT", "6379"))
    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5, socket_connect_timeout=0.5)
    deadline = time.monotonic() + 15
    try:
        while time.monotonic() < deadline:
            try:
                if client.ping():
                    return True
            except redis.RedisError:
                time.sleep(0.1)
    finally:
        client.close()
    return False
