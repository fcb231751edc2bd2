"""SQLite and PostgreSQL side by side: GET /api/v1/foo and /api/v1/users?limit=20 on each backend.

`python -m bench.databases [--quick]` (or `make bench-db`). For each backend, our server (`python
-m server serve` with a config of the bench's own) against a bare aiohttp app on the same
database doing the same statements (bench/baseline_app.py on aiosqlite, bench/baseline_pg_app.py
on asyncpg), interleaved, the ratio taken pair by pair. The response cache is off in this run:
what is measured is the database path, not a Redis hit. The server, PostgreSQL (every backend
process) and Redis share core 0; wrk runs on core 1. Writes bench/results/databases.md and .json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import harness
from bench.options import BENCH_DIR, ROOT
from bench.processes import Proc, cpu_seconds, http_request, log, pinned
from bench.stage import PY, ours_argv, seed_users, write_bench_config
from server.config import load_config
from testing.postgres import PostgresProcess, unavailable_reason
from testing.redis import RedisProcess, free_port

ROUTES = (("foo", "/api/v1/foo"), ("users", "/api/v1/users?limit=20"))
BACKENDS = ("sqlite", "postgresql")
SERVER_CORE, CLIENT_CORE = 0, 1


@dataclass
class Options:
    repetitions: int = 3
    duration: int = 4
    warmup: int = 1
    connections: int = 64
    threads: int = 2
    users: int = 1000
    backends: tuple[str, ...] = BACKENDS
    results: Path = BENCH_DIR / "results"

    @property
    def tmp(self) -> Path:
        return self.results / "tmp" / "databases"


def parse_args(argv: Sequence[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench.databases", description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 repetition of 2 s (checks the harness)")
    parser.add_argument("--reps", type=int)
    parser.add_argument("--duration", type=int)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--backend", action="append", choices=BACKENDS, help="only this backend (repeatable)")
    args = parser.parse_args(argv)
    opts = Options(users=args.users, backends=tuple(args.backend or BACKENDS))
    if args.quick:
        opts.repetitions, opts.duration = 1, 2
    opts.repetitions = args.reps or opts.repetitions
    opts.duration = args.duration or opts.duration
    return opts


def _children_of(parent: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{parent}/task").glob("*"):
        with contextlib.suppress(OSError, ValueError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def pin_tree(root_pid: int, core: int) -> None:
    """Pin a process and its current children to `core`; children forked later inherit it."""
    for pid in [root_pid, *_children_of(root_pid)]:
        subprocess.run(["taskset", "-p", "-c", str(core), str(pid)], capture_output=True, check=False)


async def seed_postgres(url: str, count: int) -> int:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        have = int(await conn.fetchval("SELECT COUNT(*) FROM users"))
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")
        rows = [(f"bench-user-{i:05d}", stamp, stamp) for i in range(have, count)]
        await conn.executemany("INSERT INTO users (name, created_at, updated_at) VALUES ($1, $2, $3)", rows)
        return int(await conn.fetchval("SELECT COUNT(*) FROM users"))
    finally:
        await conn.close()


class DatabaseBench:
    def __init__(self, opts: Options) -> None:
        self.opts = opts
        self.redis: RedisProcess | None = None
        self.postgres: PostgresProcess | None = None
        self.urls: dict[str, str] = {}
        self.configs: dict[str, Path] = {}
        self.sqlite_path = opts.tmp / "bench.db"
        self.notes: list[str] = []
        self._count = 0

    def log_file(self, name: str) -> Path:
        self._count += 1
        return self.opts.tmp / "logs" / f"{self._count:03d}-{name}.log"

    def write_config(self, backend: str) -> Path:
        """Settings only, never code paths: its own database, no cache, no access log."""
        return write_bench_config(
            self.opts.tmp / f"config-{backend}.yaml",
            db=self.sqlite_path,
            redis_url=self.redis.url if self.redis else "redis://127.0.0.1:9/0",
            database={"url": self.urls.get(backend, "")},
            cache={"enabled": False},
        )

    def prepare(self) -> None:
        opts = self.opts
        if opts.tmp.exists():
            shutil.rmtree(opts.tmp)
        opts.tmp.mkdir(parents=True)
        self.redis = RedisProcess().start()
        pin_tree(self.redis.proc.pid if self.redis.proc else 0, SERVER_CORE)
        wanted = "postgresql" in opts.backends  # not with `--backend sqlite`
        reason = unavailable_reason() if wanted else None
        if wanted and reason is None:
            self.postgres = PostgresProcess().start()
            self.postgres.create_database("bench")
            self.urls["postgresql"] = self.postgres.url("bench")
            pin_tree(self.postmaster_pid(), SERVER_CORE)
        elif wanted:
            self.notes.append(f"PostgreSQL skipped: {reason}")
        for backend in opts.backends:
            if backend == "postgresql" and "postgresql" not in self.urls:
                continue
            self.configs[backend] = config = self.write_config(backend)
            done = subprocess.run(
                [PY, "-m", "server", "--config", str(config), "migrate"], capture_output=True, text=True, cwd=ROOT
            )
            if done.returncode != 0:
                raise RuntimeError(f"migrate on {backend} failed: {done.stderr.strip()[-300:]}")
        if "sqlite" in self.configs:
            seeded = seed_users(self.sqlite_path, opts.users)
            log(f"sqlite {self.sqlite_path.name}: {seeded} users")
        if "postgresql" in self.configs:
            seeded = asyncio.run(seed_postgres(self.urls["postgresql"], opts.users))
            log(f"postgresql {self.urls['postgresql']}: {seeded} users")

    def argv(self, backend: str, kind: str, port: int) -> list[str]:
        if kind == "ours":
            return ours_argv(self.configs[backend], port)
        if backend == "sqlite":
            assert self.redis is not None
            return [
                PY,
                str(BENCH_DIR / "baseline_app.py"),
                "--port",
                str(port),
                "--db",
                str(self.sqlite_path),
                "--redis-url",
                self.redis.url,
            ]
        cfg = load_config(self.configs[backend]).database
        return [
            PY,
            str(BENCH_DIR / "baseline_pg_app.py"),
            "--port",
            str(port),
            "--database-url",
            self.urls[backend],
            "--pool-min-size",
            str(cfg.pool_min_size),
            "--pool-max-size",
            str(cfg.pool_max_size),
        ]

    @contextlib.contextmanager
    def server(self, backend: str, kind: str, label: str) -> Iterator[tuple[int, Proc]]:
        port = free_port()
        proc = Proc(f"{kind} {backend}", pinned(SERVER_CORE, self.argv(backend, kind, port)), self.log_file(label))
        try:
            proc.start().wait_http(port)
            yield port, proc
        finally:
            proc.stop()

    def cpu_seconds(self, proc: Proc) -> float:
        """CPU time used so far by the server process and PostgreSQL (every backend; not wrk)."""
        used = cpu_seconds(proc.pid)
        if self.postgres is not None:
            used += cpu_seconds(self.postmaster_pid())
        return used

    def postmaster_pid(self) -> int:
        assert self.postgres is not None
        return int((self.postgres.data / "postmaster.pid").read_text().split()[0])

    def wrk(self, port: int, path: str, seconds: int) -> harness.WrkResult:
        argv = ["wrk", f"-t{self.opts.threads}", f"-c{self.opts.connections}", f"-d{seconds}s", "--latency"]
        argv.append(f"http://127.0.0.1:{port}{path}")
        done = subprocess.run(pinned(CLIENT_CORE, argv), capture_output=True, text=True, timeout=seconds + 60)
        return harness.parse_wrk(done.stdout)

    def same_answers(self, backend: str, path: str) -> str | None:
        """None when ours and the baseline answer `path` alike, else the difference."""
        answers = []
        for kind in ("ours", "baseline"):
            with self.server(backend, kind, f"{backend}-{kind}-sample") as (port, _proc):
                resp = http_request(port, "GET", path)
                answers.append((resp.status, resp.json()))
        return None if answers[0] == answers[1] else f"ours {answers[0]!r:.200} != baseline {answers[1]!r:.200}"

    def run_route(self, backend: str, name: str, path: str) -> dict[str, Any]:
        entry: dict[str, Any] = {"backend": backend, "route": name, "path": path}
        difference = self.same_answers(backend, path)
        if difference:
            entry["difference"] = difference
            self.notes.append(f"{backend} {path}: answers differ: {difference}")
        runs: dict[str, list[harness.WrkResult]] = {"ours": [], "baseline": []}
        cpu_us: dict[str, list[float]] = {"ours": [], "baseline": []}
        for rep in range(self.opts.repetitions):
            for kind in ("ours", "baseline"):
                with self.server(backend, kind, f"{backend}-{name}-{kind}-{rep}") as (port, proc):
                    if self.opts.warmup:
                        self.wrk(port, path, self.opts.warmup)
                    before = self.cpu_seconds(proc)
                    result = self.wrk(port, path, self.opts.duration)
                    used = self.cpu_seconds(proc) - before
                runs[kind].append(result)
                cpu_us[kind].append(used / max(result.requests, 1) * 1e6)
                log(
                    f"{backend:<10} {path:<24} {kind:<8} rep {rep + 1}: {result.requests_per_s:,.0f} req/s, "
                    f"p50 {result.p50_ms:.2f} ms, p99 {result.p99_ms:.2f} ms, {cpu_us[kind][-1]:.0f} us CPU/request"
                )
        for kind, results in runs.items():
            entry[kind] = {
                "requests_per_s": harness.spread(r.requests_per_s for r in results).as_dict(),
                "p50_ms": harness.spread(r.p50_ms for r in results).as_dict(),
                "p99_ms": harness.spread(r.p99_ms for r in results).as_dict(),
                "non_2xx": sum(r.non_2xx for r in results),
                "cpu_us_per_request": harness.spread(cpu_us[kind]).as_dict(),
            }
        ratios = harness.pairwise_ratios(
            [r.requests_per_s for r in runs["ours"]], [r.requests_per_s for r in runs["baseline"]]
        )
        entry["ratio"] = harness.spread(ratios).as_dict()
        # The CPU a request costs (server + database), baseline/ours: what our layers add, and
        # far less sensitive than requests/s to other load on a shared machine.
        entry["cpu_ratio"] = harness.spread(harness.pairwise_ratios(cpu_us["baseline"], cpu_us["ours"])).as_dict()
        entry["target"] = harness.verdict(entry["ratio"]["median"] >= harness.TARGETS["http_ratio"])
        return entry

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.prepare()
        entries = [self.run_route(backend, name, path) for backend in self.configs for name, path in ROUTES]
        return {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "options": {k: v for k, v in vars(self.opts).items() if k != "results"},
            "entries": entries,
            "notes": self.notes,
            "seconds": round(time.monotonic() - started, 1),
        }

    def close(self) -> None:
        Proc.stop_all()
        if self.postgres is not None:
            self.postgres.__exit__(None, None, None)
        if self.redis is not None:
            self.redis.__exit__(None, None, None)


def render(results: dict[str, Any]) -> str:
    opts = results["options"]
    lines = [
        "# Databases side by side",
        "",
        f"`python -m bench.databases` on {results['when']}: medians of {opts['repetitions']} repetitions of "
        f"{opts['duration']} s, {opts['connections']} connections, {opts['users']} users, response cache off; "
        "the spread in parentheses. CPU per request: the server process and every PostgreSQL backend "
        "(SQLite works inside the server); its ratio is baseline/ours, 1.0 = our layers cost nothing.",
        "",
        "| route | backend | ours req/s | baseline req/s | ours/baseline | ours p50 ms | ours p99 ms "
        "| CPU us/request ours (baseline) | CPU ratio | target 0.85 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for e in results["entries"]:
        ours, base, ratio = e["ours"], e["baseline"], e["ratio"]
        lines.append(
            f"| `GET {e['path']}` | {e['backend']} | {ours['requests_per_s']['median']:,.0f} | "
            f"{base['requests_per_s']['median']:,.0f} | "
            f"{ratio['median']:.2f} ({ratio['min']:.2f}-{ratio['max']:.2f}) | "
            f"{ours['p50_ms']['median']:.2f} | {ours['p99_ms']['median']:.2f} | "
            f"{ours['cpu_us_per_request']['median']:.0f} ({base['cpu_us_per_request']['median']:.0f}) | "
            f"{e['cpu_ratio']['median']:.2f} ({e['cpu_ratio']['min']:.2f}-{e['cpu_ratio']['max']:.2f}) | "
            f"{e['target']} |"
        )
    if results["notes"]:
        lines += ["", *(f"- {note}" for note in results["notes"])]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    if shutil.which("wrk") is None:
        print("python -m bench.databases needs wrk (make bench-db installs it as root)")
        return 1
    bench = DatabaseBench(opts)
    try:
        results = bench.run()
    finally:
        bench.close()
    opts.results.mkdir(parents=True, exist_ok=True)
    (opts.results / "databases.json").write_text(json.dumps(results, indent=2))
    markdown = render(results)
    (opts.results / "databases.md").write_text(markdown)
    print()
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
