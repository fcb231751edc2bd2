"""`make dev` (`python -m server dev`): the app with auto-reload, through aiohttp-devtools.

aiohttp-devtools runs the app in a fresh process (spawned, so it imports the code anew) and
starts another one whenever a .py file under server/ changes. It builds the app with `get_app()`,
a factory it calls without arguments: the config comes from $SERVER_CONFIG (else config.yaml).
Templates need no restart: jinja2 reads a changed template again on its next use. The embedded
worker runs the jobs (queue.embedded_worker), and Redis is the configured one when it answers,
else the project's own (redis.conf, data in var/redis/), started here and stopped on exit.

`make dev` is for working on the code: one process, restarted on every change, no circus. `make
run` is the system as it runs in production: circus, two web processes, separate workers.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from server.config import DEFAULT_CONFIG_PATH, PROJECT_ROOT, Config, load_config
from server.log_context import setup_logging
from server.metrics import reset_metrics_dir, setup_process_metrics

CONFIG_ENV = "SERVER_CONFIG"
# Where changes restart the app: the code. Not the project root, whose var/ (the database, Redis's
# append-only file) changes all the time.
WATCHED = PROJECT_ROOT / "server"
# aiohttp-devtools gives an app process 5 s to stop (on a restart, or Ctrl-C) before SIGKILL:
# running jobs get less than that, then are cancelled and requeued, never killed mid-way.
DEV_SHUTDOWN_GRACE = 3.0
_LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def get_app() -> web.Application:
    """The factory aiohttp-devtools calls in each new app process: config, logs, metrics, app."""
    from server.app import create_app

    config = load_config(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)
    grace = min(config.queue.shutdown_grace, DEV_SHUTDOWN_GRACE)
    config = dataclasses.replace(config, queue=dataclasses.replace(config.queue, shutdown_grace=grace))
    setup_logging(config.logging.level, config.logging.format)
    setup_process_metrics(config)
    _bind_to(config.server.host)
    return create_app(config)


def _bind_to(host: str) -> None:
    """aiohttp-devtools serves on 0.0.0.0, a constant of its serve module read when the app
    process starts listening (after this factory): listen on server.host instead, as `make run`
    does, so a development server is not open to the network by surprise."""
    from aiohttp_devtools.runserver import serve

    serve.HOST = host


def _probe_redis(config: Config) -> str:
    """ "up" when the configured Redis answers PING with the configured password, "auth" when it
    answers but refuses it, "down" when nothing answers."""
    import redis

    client = redis.Redis.from_url(
        config.redis.url,
        password=config.redis.effective_password() or None,
        socket_timeout=1.0,
        socket_connect_timeout=1.0,
    )
    try:
        return "up" if client.ping() else "down"
    except redis.AuthenticationError:
        return "auth"
    except redis.ResponseError as exc:  # NOAUTH from servers that say it that way
        return "auth" if "NOAUTH" in str(exc) else "down"
    except redis.RedisError:
        return "down"
    finally:
        client.close()


def _use_password_file(path: Path, config_path: Path) -> Config:
    os.environ["REDIS_PASSWORD_FILE"] = str(path)
    return load_config(config_path)


@contextmanager
def project_redis(config: Config, config_path: Path, var: Path) -> Iterator[Config]:
    """The configured Redis when it answers, else the project's own redis-server on the configured
    local port (redis.conf, data in var/redis/), as `make run` starts it, stopped when the block
    ends. Yields the config the app processes get (with the password they need)."""
    from server.redis_binary import find_redis_server
    from server.supervision import _die_with_parent, ensure_password_file, write_redis_conf

    password_file = var / "redis_password"  # make run's: both use the project's Redis
    state = _probe_redis(config)
    if state == "auth" and not config.redis.effective_password() and password_file.exists():
        config = _use_password_file(password_file, config_path)
        state = _probe_redis(config)
    if state == "auth":
        raise SystemExit(
            f"make dev: Redis at {config.redis.url} refuses the configured password: set REDIS_PASSWORD "
            f"or REDIS_PASSWORD_FILE (make run keeps its password in {password_file})"
        )
    if state == "up":
        print(f"make dev: using the Redis at {config.redis.url}", file=sys.stderr)
        yield config
        return
    url = urlsplit(config.redis.url)
    if url.scheme != "redis" or (url.hostname or "127.0.0.1") not in _LOCAL_HOSTS:
        raise SystemExit(f"make dev: Redis at {config.redis.url} does not answer, and it is not ours to start")
    binary = find_redis_server()
    if binary is None:
        raise SystemExit("make dev: no redis-server >= 7.0 found (`make install` provides one)")
    if not config.redis.effective_password():
        ensure_password_file(password_file)  # the project's Redis always requires one
        config = _use_password_file(password_file, config_path)
    port = url.port or 6379
    data_dir = var / "redis"
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    run_conf = write_redis_conf(PROJECT_ROOT / "redis.conf", port, data_dir, config.redis.effective_password())
    # A session of its own: Ctrl-C in the terminal reaches the app, which still needs Redis while
    # it stops; Redis is stopped after it. It dies with this process all the same.
    proc = subprocess.Popen(
        [binary, str(run_conf)],
        cwd=str(PROJECT_ROOT),
        stdout=subprocess.DEVNULL,
        start_new_session=True,
        preexec_fn=_die_with_parent,
    )
    try:
        deadline = time.monotonic() + 15
        while _probe_redis(config) != "up":
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"make dev: redis-server on port {port} did not start (exit {proc.poll()})")
            time.sleep(0.1)
        print(f"make dev: started the project's Redis on port {port} (data in {data_dir})", file=sys.stderr)
        yield config
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # it saves its append-only file and exits
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_dev(config: Config, config_path: Path, *, port: int | None, livereload: bool, aux_port: int | None) -> int:
    """Run the app under aiohttp-devtools until Ctrl-C; returns the exit status."""
    from aiohttp.web import run_app
    from aiohttp_devtools.runserver import runserver

    from server.supervision import ensure_password_file, var_dir

    os.umask(0o077)  # as under `make run`: what the app creates is this user's only
    var = var_dir(os.environ)
    var.mkdir(mode=0o700, parents=True, exist_ok=True)
    # The app processes read these from the environment adev passes on (spawned children).
    os.environ[CONFIG_ENV] = str(config_path)
    os.environ.setdefault("QUEUE_EMBEDDED_WORKER", "true")  # unless the user runs workers apart
    if not config.internal.password:
        created = ensure_password_file(var / "internal_password")
        os.environ["INTERNAL_PASSWORD_FILE"] = str(var / "internal_password")
        print(
            f"make dev: internal pages: user {config.internal.username!r}, password in "
            f"{var / 'internal_password'}{' (new)' if created else ''}",
            file=sys.stderr,
        )
        config = load_config(config_path)  # again: with the password file just named
    if config.metrics.enabled:
        reset_metrics_dir(config.metrics.dir)  # each `make dev` counts from zero
    main_port = port if port is not None else config.server.port
    with project_redis(config, config_path, var) as config:
        settings: dict[str, Any] = runserver(
            app_path=str(Path(__file__).resolve()),
            root_path=str(WATCHED),
            python_path=str(PROJECT_ROOT),
            app_factory_name="get_app",
            main_port=main_port,
            aux_port=aux_port,
            livereload=livereload,
        )
        settings["host"] = config.server.host  # the auxiliary (livereload) server too
        print(f"make dev: http://{config.server.host}:{main_port} (restarts when server/ changes)", file=sys.stderr)
        try:
            run_app(**settings)
        except KeyboardInterrupt:
            pass
    return 0
