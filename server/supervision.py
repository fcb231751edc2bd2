"""Running the whole system under circus: the launcher, the Redis shim, and circus hooks.

Over 300 lines: the three share the environment contract with circus.ini (circus_env, var_dir),
which names the hooks and the shim by this module; splitting it is left for later.

Nothing here runs on an event loop: these are process-level entry points (`python -m server
supervise`, `python -m server redis-shim`) and hooks that circusd calls.
"""

from __future__ import annotations

import asyncio
import configparser
import ctypes
import logging
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

from server.config import PROJECT_ROOT, Config, load_config
from server.redis_clients import cache_target, queue_target, sync_client

log = logging.getLogger(__name__)

CIRCUS_INI = PROJECT_ROOT / "circus.ini"
DEFAULT_VAR_DIR = PROJECT_ROOT / "var"
# Redis waits this long, after being asked to stop, for the web and worker processes to let go.
REDIS_DRAIN_SECONDS = 40.0
_PR_SET_PDEATHSIG = 1


# A unix socket's path must fit sockaddr_un.sun_path (108 bytes with its NUL on Linux).
_MAX_SOCKET_PATH = 107
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


def var_dir(environ: Mapping[str, str]) -> Path:
    """Where the supervised system keeps its data, logs, sockets and generated secrets."""
    return Path(environ.get("VAR_DIR") or DEFAULT_VAR_DIR)


def pubsub_endpoint(endpoint: str) -> str:
    """circusd's pubsub endpoint beside its control endpoint: a sibling socket, or the next port."""
    if endpoint.startswith("ipc://"):
        return "ipc://" + str(Path(endpoint[len("ipc://") :]).with_name("pubsub.sock"))
    host, port = endpoint.rsplit(":", 1)
    return f"{host}:{int(port) + 1}"


def check_endpoint(endpoint: str) -> str | None:
    """A warning about `endpoint` worth printing, or None; raises ValueError when it cannot work."""
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://") :]
        longest = str(Path(pubsub_endpoint(endpoint)[len("ipc://") :]))
        if len(max(path, longest, key=len).encode()) > _MAX_SOCKET_PATH:
            raise ValueError(
                f"circus.endpoint: the socket path {path!r} is longer than a unix socket allows "
                f"({_MAX_SOCKET_PATH} bytes): set CIRCUS_ENDPOINT=ipc://<a shorter path>"
            )
        return None
    host = urlsplit(endpoint).hostname or ""
    if host not in _LOOPBACK_HOSTS:
        return (
            f"warning: circus.endpoint {endpoint} is reachable from other hosts and has no "
            "authentication: whoever reaches it can run any command as this user"
        )
    return (
        f"warning: circus.endpoint {endpoint} is a TCP port: every local user can control circus "
        "(the default ipc:// socket under var/ is reachable by this user only)"
    )


def ensure_password_file(path: Path) -> bool:
    """Create `path` (mode 0600) holding a random password unless it exists; True when created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    return True


def make_private(folder: Path) -> None:
    """Create `folder` (0700) and take group and other access away from everything under it.

    New files are private through the umask; this also tightens what an earlier run, under a
    wider umask, left behind (database, Redis data, logs).
    """
    folder.mkdir(parents=True, exist_ok=True)
    for root, dirs, files in os.walk(folder):
        for name in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
            try:
                mode = os.lstat(name).st_mode
                if not stat.S_ISLNK(mode) and mode & 0o077:
                    os.chmod(name, stat.S_IMODE(mode) & ~0o077)
            except OSError:
                pass


def cache_redis_url(config: Config) -> str:
    """The URL of the cache's own Redis under circus: `cache.redis_url`, else the queue's Redis
    on the next port (6400 beside 6399)."""
    if config.cache.redis_url:
        return config.cache.redis_url
    queue = urlsplit(config.redis.url)
    netloc = f"{queue.hostname or '127.0.0.1'}:{(queue.port or 6379) + 1}"
    return urlunsplit(("redis", netloc, "/0", "", ""))


def circus_env(config: Config, environ: Mapping[str, str], redis_binary: str, var: Path) -> dict[str, str]:
    """The environment circusd and every watcher get: the contract's names with resolved values.

    circus.ini reads them as $(circus.env.NAME); an unset name would crash circusd, so every one
    is filled from the validated config (which already applied the user's environment). Secrets
    the launcher generates are passed as file paths (REDIS_PASSWORD_FILE, INTERNAL_PASSWORD_FILE),
    never as values, so `circusctl get <watcher> env` shows none of them.
    """
    redis_url = urlsplit(config.redis.url)
    env = dict(environ)
    env.update(
        {
            "PROJECT_ROOT": str(PROJECT_ROOT),
            # Logs, Redis data, sockets and generated secrets (git-ignored; tests use a temp dir).
            "VAR_DIR": str(var),
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
            "CIRCUS_PUBSUB_ENDPOINT": pubsub_endpoint(config.circus.endpoint),
            # Under circus the workers are separate processes.
            "QUEUE_EMBEDDED_WORKER": "false",
            "PYTHONUNBUFFERED": "1",
        }
    )
    if supervises_cache_redis(config):
        # The cache's own Redis (maxmemory, allkeys-lru, no persistence): redis-cache.conf.
        env["CACHE_REDIS_URL"] = cache_redis_url(config)
    return env


def supervises_redis(config: Config) -> bool:
    """Whether circus runs redis-server on this host (redis.supervise; auto: a single box's own)."""
    mode = config.redis.supervise
    if mode != "auto":
        return mode == "always"
    host = urlsplit(config.redis.url).hostname or ""
    return config.circus.role == "all" and not config.redis.sentinels and host in _LOOPBACK_HOSTS


def supervises_cache_redis(config: Config) -> bool:
    """Whether circus runs the cache's own Redis here: beside a supervised queue Redis, on this host."""
    if config.cache.master_name and config.redis.sentinels:
        return False
    host = urlsplit(cache_redis_url(config)).hostname or ""
    return supervises_redis(config) and host in _LOOPBACK_HOSTS


def runs_here(config: Config, section: str) -> bool:
    """Whether a section of circus.ini belongs to this host's role (circus.role)."""
    kind, _, name = section.partition(":")
    role = config.circus.role
    if kind == "socket":  # the HTTP port: only where web processes serve it
        return role in ("all", "web")
    if kind != "watcher":
        return True
    if name == "redis":
        return supervises_redis(config)
    if name == "redis-cache":
        return supervises_cache_redis(config)
    if name == "web":
        return role in ("all", "web")
    if name.startswith("worker"):
        return role in ("all", "worker")
    return True


def write_circus_ini(template: Path, config: Config, var: Path) -> Path:
    """circus.ini with only the sockets and watchers of this host's role, as var/circus-<role>.ini (0600)."""
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",), comment_prefixes=(";", "#"))
    parser.optionxform = str  # type: ignore[assignment, method-assign]  # keep option names as written
    parser.read(template)
    for section in parser.sections():
        if not runs_here(config, section):
            parser.remove_section(section)
    path = var / f"circus-{config.circus.role}.ini"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(f"; Written by `python -m server supervise` from {template} for circus.role {config.circus.role}.\n")
        parser.write(f)
    return path


def _redis_problem(config: Config) -> str | None:
    """None when every configured Redis answers PING, else what failed."""
    import redis

    for target in filter(None, (queue_target(config.redis), cache_target(config))):
        client = sync_client(target, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            client.ping()
        except redis.RedisError as exc:
            return f"Redis ({target.describe()}): {type(exc).__name__}: {exc}"
        finally:
            client.close()
    return None


def _database_problem(config: Config) -> str | None:
    """None when the configured PostgreSQL answers (SQLite is a local file: nothing to wait for)."""
    if not config.database.url:
        return None
    from server.models.backends import make_database
    from server.models.errors import DatabaseUnavailable

    async def ping() -> None:
        db = make_database(config.database, small=True)
        await db.open()
        try:
            await db.ping()
        finally:
            await db.close()

    try:
        asyncio.run(ping())
    except DatabaseUnavailable as exc:
        return f"the database: {exc}"
    return None


def wait_for_services(config: Config, *, redis_here: bool, sleep: float = 0.5) -> str | None:
    """Wait up to circus.wait_timeout for Redis (unless circus starts it here) and the database.

    Returns None once both answer, else one line naming what did not. Says once what it waits for.
    """
    deadline = time.monotonic() + config.circus.wait_timeout
    said: set[str] = set()
    checks = [_database_problem] if redis_here else [_redis_problem, _database_problem]
    for check in checks:
        while (problem := check(config)) is not None:
            if time.monotonic() > deadline:
                return f"gave up after {config.circus.wait_timeout:g} s (circus.wait_timeout): {problem}"
            if check.__name__ not in said:
                said.add(check.__name__)
                print(f"waiting for {problem}", file=sys.stderr, flush=True)
            time.sleep(sleep)
    return None


def supervise(
    config: Config, config_path: Path, ini: Path = CIRCUS_INI, environ: Mapping[str, str] | None = None
) -> int:
    """Wait for Redis and the database, generate missing secrets (one box only), apply or check the
    migrations, then replace this process with circusd running this host's role."""
    from server.redis_binary import find_redis_server

    environ = os.environ if environ is None else environ
    role = config.circus.role
    # Everything the system creates from here on (database and WAL, Redis data, logs, sockets)
    # is readable by this user only; circusd and every watcher inherit the umask.
    os.umask(0o077)
    if role != "all" and not config.database.url:
        print(
            f"invalid configuration: circus.role {role} needs a database every host reaches: set "
            "database.url (DATABASE_URL=postgresql://...); SQLite keeps its data on one host's disk",
            file=sys.stderr,
        )
        return 2
    redis_here = supervises_redis(config)
    redis_binary = ""
    if redis_here:
        redis_binary = find_redis_server(environ=environ) or ""
        if not redis_binary:
            print("no redis-server >= 7.0 found: run `make run` (it installs one) or put one on PATH", file=sys.stderr)
            return 1
    try:
        warning = check_endpoint(config.circus.endpoint)
    except ValueError as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr)
        return 2
    if warning:
        print(warning, file=sys.stderr)
    var = var_dir(environ)
    make_private(var)
    for folder in (var / "log", var / "redis", var / "redis-cache") if redis_here else (var / "log",):
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if config.circus.endpoint.startswith("ipc://"):
        Path(config.circus.endpoint[len("ipc://") :]).parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    env = circus_env(config, environ, redis_binary, var)
    env["SERVER_CONFIG"] = str(config_path)
    # On one box, secrets may be generated into 0600 files under var/. A host of a larger
    # deployment keeps nothing it needs on its disk: its secrets come from the environment.
    if redis_here and not config.redis.effective_password():
        if role != "all":
            print(f"circus.role {role} runs Redis here: give it a password (REDIS_PASSWORD)", file=sys.stderr)
            return 2
        # The supervised Redis always requires a password, generated once and kept in a 0600 file.
        path = var / "redis_password"
        ensure_password_file(path)
        env["REDIS_PASSWORD_FILE"] = str(path)
    if not config.internal.password and role == "all":
        path = var / "internal_password"
        created = ensure_password_file(path)
        env["INTERNAL_PASSWORD_FILE"] = str(path)
        print(
            f"internal pages (/internal/saq/, /internal/jobs/failed, /internal/status): user "
            f"{config.internal.username!r}, password in {path}{' (new)' if created else ''}",
            file=sys.stderr,
        )
    elif not config.internal.password and role == "web":
        print("internal pages are off on this host: set INTERNAL_PASSWORD to serve them", file=sys.stderr)
    problem = wait_for_services(config, redis_here=redis_here)
    if problem is not None:
        print(f"supervise: {problem}", file=sys.stderr)
        return 1
    # One box migrates at start; several hosts migrate once per deploy (database.auto_migrate
    # false, `python -m server migrate` first) and each host only checks it can run on the schema.
    step = ["migrate"] if config.database.auto_migrate else ["migrate", "--check"]
    migrate = subprocess.run([sys.executable, "-m", "server", "--config", str(config_path), *step], env=env)
    if migrate.returncode != 0:
        return migrate.returncode
    circusd = shutil.which("circusd", path=str(Path(sys.executable).parent)) or shutil.which("circusd")
    if circusd is None:
        print("circusd not found: install the project (`make run`)", file=sys.stderr)
        return 1
    host_ini = write_circus_ini(ini, config, var)
    print(
        f"starting circusd for circus.role {role} with {host_ini} (logs in {var / 'log'}); Ctrl-C stops everything",
        file=sys.stderr,
    )
    sys.stderr.flush()
    os.execve(circusd, [circusd, str(host_ini)], env)


def _die_with_parent() -> None:
    """In the child: get SIGTERM if the shim dies, even by SIGKILL, so Redis is never orphaned."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def _other_clients(port: int, auth: str) -> int | None:
    import redis

    try:
        client = redis.Redis(
            host="127.0.0.1", port=port, password=auth or None, socket_timeout=1, socket_connect_timeout=1
        )
        try:
            # (redis-py types its commands as "awaitable or value"; this client is the blocking one.)
            me = cast(int, client.client_id())
            clients = cast(list[dict[str, Any]], client.client_list())
            return sum(1 for c in clients if int(c["id"]) != me)
        finally:
            client.close()
    except redis.RedisError:
        return None


def _quoted(value: str) -> str:
    """A string as redis.conf reads it inside double quotes."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_redis_conf(conf: Path, port: int, data_dir: Path, password: str) -> Path:
    """The file redis-server starts with: the project's redis.conf plus this run's port, data
    folder and password. 0600, so the password is never on a command line (`ps` shows those to
    every user) nor readable by another user."""
    run_conf = data_dir / "redis-run.conf"
    lines = [f"include {_quoted(str(conf.resolve()))}", f"port {port}", f"dir {_quoted(str(data_dir))}"]
    if password:
        lines.append(f"requirepass {_quoted(password)}")
    fd = os.open(run_conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines) + "\n")
    os.chmod(run_conf, 0o600)
    return run_conf


def redis_shim(
    binary: str,
    conf: Path,
    port: int,
    data_dir: Path,
    password: str = "",
    drain_seconds: float = REDIS_DRAIN_SECONDS,
) -> int:
    """Run redis-server as a child; on SIGTERM/SIGINT stop it only once its clients are gone.

    circus stops all watchers at once. Redis must go last so that in-flight requests and jobs can
    still reach it while they finish: this shim waits until no other client is connected (the web
    and worker processes have exited) or `drain_seconds` pass, then asks Redis to stop (it
    flushes its append-only file on SIGTERM). Redis's own log goes to the shim's stderr, one
    rotated file per watcher.
    """
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    run_conf = write_redis_conf(conf, port, data_dir, password)
    proc = subprocess.Popen(
        # Started under the name it was found by (never a resolved symlink: see redis_server.py).
        [binary, str(run_conf)],
        preexec_fn=_die_with_parent,
        cwd=str(PROJECT_ROOT),
        stdout=sys.stderr,
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
        clients = _other_clients(port, password)
        if clients == 0:
            break
        time.sleep(0.2)
    print(
        f"redis-shim: stopping redis after {time.monotonic() - started:.1f} s "
        f"({'its clients are gone' if clients == 0 else f'{clients} clients still connected'})",
        file=sys.stderr,
        flush=True,
    )
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def wait_for_redis(watcher: Any, arbiter: Any, hook_name: str, **kwargs: Any) -> bool:
    """circus `after_start` hook of the redis watcher: the next watchers start once Redis answers."""
    config = load_config(watcher.env["SERVER_CONFIG"], watcher.env)
    return _wait_for_port(urlsplit(config.redis.url).port or 6379, config)


def wait_for_cache_redis(watcher: Any, arbiter: Any, hook_name: str, **kwargs: Any) -> bool:
    """circus `after_start` hook of the redis-cache watcher (the cache is optional to the app,
    which answers BYPASS without it, but starting in order keeps the first requests cached)."""
    config = load_config(watcher.env["SERVER_CONFIG"], watcher.env)
    return _wait_for_port(urlsplit(config.cache.redis_url or cache_redis_url(config)).port or 6379, config)


def _wait_for_port(port: int, config: Config) -> bool:
    import redis

    client = redis.Redis(
        host="127.0.0.1",
        port=port,
        password=config.redis.effective_password() or None,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
    )
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
