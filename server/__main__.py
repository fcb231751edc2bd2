"""Command line: `python -m server serve|worker|token|routes|...` (the only code that reads argv)."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from server.config import DEFAULT_CONFIG_PATH, Config, ConfigError, load_config
from server.log_context import ACCESS_LOG_FORMAT, setup_logging
from server.metrics import MetricsError, reset_metrics_dir, setup_process_metrics

log = logging.getLogger("server")


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (about twice a bare aiohttp app's throughput), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


async def freeze_startup_objects(app: object) -> None:
    """Move everything start-up created out of the garbage collector's sight (gc.freeze).

    Full collections otherwise rescan every module, schema and route object under load: measured
    here as p99 latency of 34 ms on GET /api/v1/foo at 64 connections, 8-14 ms once frozen.
    """
    gc.collect()
    gc.freeze()


def cmd_serve(config: Config, args: argparse.Namespace) -> int:
    from aiohttp import web

    from server.app import create_app
    from server.middlewares.request_id import RequestAccessLogger

    app = create_app(config)
    app.on_startup.append(freeze_startup_objects)  # after the cleanup contexts have opened
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    kwargs: dict[str, Any] = dict(
        shutdown_timeout=config.server.shutdown_timeout,
        access_log=logging.getLogger("aiohttp.access") if config.server.access_log else None,
        access_log_format=ACCESS_LOG_FORMAT,
        access_log_class=RequestAccessLogger,
        print=None,
        loop=loop,
    )
    if args.fd is not None:
        # A listening socket inherited from a supervisor (circus shares one between processes).
        sock = socket.socket(fileno=args.fd)
        log.info("serving on inherited socket fd %d (%s)", args.fd, sock.getsockname())
        web.run_app(app, sock=sock, **kwargs)
    else:
        host = args.host or config.server.host
        port = args.port if args.port is not None else config.server.port
        log.info("serving on http://%s:%d", host, port)
        web.run_app(app, host=host, port=port, **kwargs)
    return 0


def cmd_migrate(config: Config, args: argparse.Namespace) -> int:
    from server.models.migrate import migrate_command

    return asyncio.run(migrate_command(config.database, check=args.check))


def cmd_seed(config: Config, args: argparse.Namespace) -> int:
    from server.seed import seed_command

    return asyncio.run(seed_command(config.database))


def cmd_token(config: Config, args: argparse.Namespace) -> int:
    from server.tokens import token_command

    return asyncio.run(token_command(config, args.action, vars(args)))


def cmd_routes(config: Config, args: argparse.Namespace) -> int:
    from server.app import create_app
    from server.routing.versions import describe_routes

    app = create_app(config)
    for info in describe_routes(app):
        version = f"v{info.version}" if info.version is not None else "-"
        print(f"{version:<4} {info.method:<7} {info.path:<40} {info.name or ''}")
    return 0


def cmd_redis_path(config: Config, args: argparse.Namespace) -> int:
    from server.redis_binary import find_redis_server

    path = find_redis_server()
    if path is None:
        print("no redis-server >= 7.0 found", file=sys.stderr)
        return 1
    print(path)
    return 0


def cmd_supervise(config: Config, args: argparse.Namespace) -> int:
    from server.supervision import supervise

    if config.metrics.enabled:
        # A new system starts counting from zero; the files of the last run's processes go.
        reset_metrics_dir(config.metrics.dir)
    return supervise(config, args.config.resolve())


def cmd_redis_shim(config: Config, args: argparse.Namespace) -> int:
    from urllib.parse import urlsplit

    from server.config import PROJECT_ROOT
    from server.supervision import cache_redis_url, redis_shim, var_dir

    if args.cache:  # the cache's own Redis: redis-cache.conf, on the port of CACHE_REDIS_URL
        return redis_shim(
            os.environ["REDIS_SERVER"],
            PROJECT_ROOT / "redis-cache.conf",
            urlsplit(cache_redis_url(config)).port or 6379,
            var_dir(os.environ) / "redis-cache",
            password=config.redis.effective_password(),
        )
    return redis_shim(
        os.environ["REDIS_SERVER"],
        PROJECT_ROOT / "redis.conf",
        urlsplit(config.redis.url).port or 6379,
        var_dir(os.environ) / "redis",
        password=config.redis.effective_password(),
    )


def cmd_dev(config: Config, args: argparse.Namespace) -> int:
    from server.devserver import run_dev

    return run_dev(
        config, args.config.resolve(), port=args.port, aux_port=args.aux_port, livereload=not args.no_livereload
    )


def cmd_worker(config: Config, args: argparse.Namespace) -> int:
    from server.workers.runner import run_worker_process

    names = args.queue or list(config.queue.names)
    unknown = [n for n in names if n not in config.queue.names]
    if unknown:
        print(f"unknown queue {unknown[0]!r}; queue.names is {list(config.queue.names)}", file=sys.stderr)
        return 2
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(run_worker_process(config, list(dict.fromkeys(names))))
    finally:
        loop.close()


def cmd_internal_password(config: Config, args: argparse.Namespace) -> int:
    """For a development checkout: a password for /internal kept in a git-ignored 0600 file."""
    from server.supervision import ensure_password_file, var_dir

    path = args.file or var_dir(os.environ) / "internal_password"
    created = ensure_password_file(path)
    where = (
        "INTERNAL_PASSWORD (already set, it wins)"
        if config.internal.password
        else f"{path}{' (new)' if created else ''}"
    )
    print(
        f"internal pages (/internal/saq/, /internal/jobs/failed, /internal/status): user {config.internal.username!r}, "
        f"password in {where}",
        file=sys.stderr,
    )
    print(path)
    return 0


COMMANDS = {
    "serve": cmd_serve,
    "migrate": cmd_migrate,
    "seed": cmd_seed,
    "worker": cmd_worker,
    "token": cmd_token,
    "routes": cmd_routes,
    "redis-path": cmd_redis_path,
    "internal-password": cmd_internal_password,
    "supervise": cmd_supervise,
    "dev": cmd_dev,
    "redis-shim": cmd_redis_shim,
}
# The commands whose process counts in /internal/metrics.
PROCESS_METRICS_COMMANDS = frozenset({"serve", "worker"})
# Commands that open the database and stop with one line when it does not fit this code.
DATABASE_COMMANDS = frozenset({"serve", "migrate", "seed", "worker", "supervise"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG_PATH, help="config file (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", help="override server.host")
    serve.add_argument("--port", type=int, help="override server.port")
    serve.add_argument("--fd", type=int, help="serve on this inherited listening socket (circus)")
    migrate = sub.add_parser("migrate", help="apply the database migrations that are missing, and say what was done")
    migrate.add_argument(
        "--check", action="store_true", help="apply nothing: exit 1, saying why, unless this code can run on the schema"
    )
    sub.add_parser("seed", help="example data through the model API (safe to run again and again)")
    worker = sub.add_parser("worker", help="run SAQ workers (every queue, or those named)")
    worker.add_argument("--queue", action="append", metavar="NAME", help="serve this queue (repeatable; default: all)")
    token = sub.add_parser("token", help="API tokens: create (shown once), list, revoke")
    actions = token.add_subparsers(dest="action", required=True)
    create = actions.add_parser(
        "create", help="make a token; its secret is printed alone on the last line, and only this once"
    )
    create.add_argument("--name", required=True, help="what the token is for (1-128 characters)")
    create.add_argument(
        "--scope", action="append", metavar="SCOPE", help="a scope it grants, e.g. users:write (repeatable)"
    )
    create.add_argument("--expires", metavar="DURATION", help="lifetime, e.g. 30d, 12h, 2w (default: never)")
    actions.add_parser("list", help="every token, one a line, its id first (never the secret)")
    revoke = actions.add_parser("revoke", help="revoke a token: running servers refuse it at once")
    revoke.add_argument("id", type=int, help="the token's id (see token list)")
    sub.add_parser("routes", help="print the route table of every API version")
    password = sub.add_parser(
        "internal-password",
        help="create a random password for the internal pages unless one exists; print its file",
    )
    password.add_argument("--file", type=Path, help="default: $VAR_DIR/internal_password (var/ of the project)")
    sub.add_parser("redis-path", help="print the path of a usable redis-server (>= 7.0)")
    sub.add_parser("supervise", help="apply migrations, then run everything under circusd (foreground)")
    dev = sub.add_parser("dev", help="the app with auto-reload on code changes (aiohttp-devtools), embedded worker")
    dev.add_argument("--port", type=int, help="override server.port")
    dev.add_argument("--aux-port", type=int, help="the livereload server's port (default: port + 1)")
    dev.add_argument("--no-livereload", action="store_true", help="no script that reloads the browser's page")
    shim = sub.add_parser("redis-shim", help="(used by circus) run redis-server, stopping it after its clients")
    shim.add_argument("--cache", action="store_true", help="the cache's own Redis (redis-cache.conf)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"invalid configuration: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.logging.level, config.logging.format)
    if args.command in PROCESS_METRICS_COMMANDS:
        # Before anything imports prometheus_client (it reads its directory on import).
        try:
            setup_process_metrics(config)
        except MetricsError as exc:
            print(f"{args.command}: {exc}", file=sys.stderr)
            return 2
    command = COMMANDS[args.command]
    if args.command not in DATABASE_COMMANDS:
        return command(config, args)
    # Imported here, not at the top: the light commands (redis-path) load no database driver.
    from server.models.errors import DatabaseUnavailable
    from server.models.migrate import SchemaError

    try:
        return command(config, args)
    except (SchemaError, DatabaseUnavailable) as exc:  # the database does not fit this code, or is down
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
