"""What every section of a run stands on: the bench's Redis, the fake Cat Facts, its configs and its database.

The configs change settings only, never a code path (bench/README.md). The database is made by
`python -m server migrate` and filled by `seed_users`; a failure of either stops the run.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from bench.options import ROOT, Options
from bench.processes import log
from server.config import load_config
from testing.config import deep_merge
from testing.fakes import FakeCatFacts, ThreadedServer
from testing.redis import RedisProcess

PY = sys.executable


def ours_argv(config: Path, port: int) -> list[str]:
    """Our server as circus runs it, on `port` (a fresh free port for every start)."""
    return [PY, "-m", "server", "--config", str(config), "serve", "--port", str(port)]


@dataclass
class Stage:
    opts: Options
    redis: RedisProcess | None = None
    upstream: ThreadedServer | None = None
    warnings: list[str] = field(default_factory=list)
    _counter: int = 0

    @property
    def db_path(self) -> Path:
        return self.opts.tmp / "bench.db"

    @property
    def config_path(self) -> Path:
        return self.opts.tmp / "config.yaml"

    @property
    def redis_url(self) -> str:
        assert self.redis is not None
        return self.redis.url

    @property
    def jobs_redis_url(self) -> str:
        # Its own Redis database: baz's misses enqueue slow_job on db 0, which would sit in our queue.
        return self.redis_url.rsplit("/", 1)[0] + "/1"

    def log_file(self, name: str) -> Path:
        """A fresh log file under tmp/logs, numbered in the order processes started."""
        self._counter += 1
        return self.opts.tmp / "logs" / f"{self._counter:03d}-{name}.log"

    def open(self) -> None:
        """Start Redis and the fake upstream, write the config, migrate and seed the database."""
        self.redis = RedisProcess()
        self.redis.start()
        # Redis shares the server's core: what a request or a job costs in Redis is counted against
        # the core that serves it, and wrk keeps its core to itself (sharing it starved Redis).
        assert self.redis.proc is not None
        with contextlib.suppress(OSError):
            os.sched_setaffinity(self.redis.proc.pid, {self.opts.server_core})
        self.upstream = ThreadedServer(FakeCatFacts().app()).start()
        log(f"redis {self.redis.url} ({Path(self.redis.binary).name}), fake cat facts {self.upstream.url('/fact')}")
        self.write_config(self.config_path, self.redis_url)
        migrate = subprocess.run(
            [PY, "-m", "server", "--config", str(self.config_path), "migrate"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"python -m server migrate failed: {(migrate.stderr or migrate.stdout).strip()[-300:]}")
        log(f"database {self.db_path.name}: {seed_users(self.db_path, self.opts.users)} users")

    def write_config(self, path: Path, redis_url: str, **overrides: Any) -> None:
        """A config of the bench's own: changes settings only, never code paths (see README)."""
        upstream = self.upstream.url("/fact") if self.upstream else "http://127.0.0.1:9/fact"
        overrides = deep_merge(
            {
                "server": {"port": 8080},
                # Long enough that the primed baz entry stays a hit for the whole run.
                "cache": {"default_ttl": 3600},
                "cat_facts": {"url": upstream, "timeout": 2.0},
            },
            overrides,
        )
        write_bench_config(path, db=self.db_path, redis_url=redis_url, **overrides)

    def close(self) -> None:
        if self.upstream is not None:
            self.upstream.stop()
        if self.redis is not None:
            self.redis.__exit__(None, None, None)


def write_bench_config(path: Path, *, db: Path, redis_url: str, **overrides: Any) -> Path:
    """The settings every bench server runs with, and `overrides` (settings only, never code
    paths: see README): its own database and Redis, no access log, logging at WARNING, no
    embedded worker, no error reports, no /internal pages, rate limits off. Checked by loading it."""
    raw = {
        "server": {"host": "127.0.0.1", "access_log": False, "shutdown_timeout": 2},
        "logging": {"level": "WARNING"},
        "database": {"path": str(db)},
        "redis": {"url": redis_url},
        "queue": {"embedded_worker": False},
        "honeybadger": {"api_key": "", "environment": "bench"},
        "internal": {"password": ""},
        # wrk is one client sending thousands of requests a second: exactly what the limits
        # refuse. What the limiter costs is measured by bench/auth.py instead.
        "rate_limit": {"enabled": False},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(deep_merge(raw, overrides), sort_keys=False))
    load_config(path)  # fails here, clearly, if the config schema moved on
    return path


def seed_users(db_path: Path, count: int) -> int:
    """Fill `users` up to `count` rows, giving every NOT NULL column without a default a value."""
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        have = db.execute("SELECT COUNT(*) FROM users").fetchone()[0]
        if have >= count:
            return int(have)
        columns = db.execute("PRAGMA table_info(users)").fetchall()  # cid, name, type, notnull, default, pk
        now = datetime.now(UTC)
        values: dict[str, Callable[[int], Any]] = {}
        for _cid, name, kind, notnull, default, pk in columns:
            if pk:
                continue
            if name == "name":
                values[name] = lambda i: f"bench-user-{i:05d}"
            elif notnull and default is None:
                kind = (kind or "").upper()
                if "INT" in kind:
                    values[name] = lambda i: int(now.timestamp())
                elif "REAL" in kind or "FLOA" in kind:
                    values[name] = lambda i: now.timestamp()
                else:
                    values[name] = lambda i: now.isoformat(timespec="seconds")
        names = list(values)
        sql = f"INSERT INTO users ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"
        db.executemany(sql, ([values[n](i) for n in names] for i in range(have, count)))
        db.commit()
        return int(db.execute("SELECT COUNT(*) FROM users").fetchone()[0])
