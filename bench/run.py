"""The bench run: our server and worker as real processes against bare baselines, one at a time.

`python -m bench [--quick] [--only ROUTE[,ROUTE]]` (or `make bench ARGS=...`). See bench/README.md.
Every process it starts is its own child and is stopped by pid when the run ends, however it ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import os
import platform
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import traceback
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

import yaml

from bench import harness
from bench.harness import TARGETS, WrkParseError, WrkResult, parse_wrk, spread
from server.config import load_config
from testing.fakes import FakeCatFacts, ThreadedServer
from testing.redis import RedisProcess, free_port

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
PY = sys.executable


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    method: str
    path: str
    script: str | None = None  # a wrk lua script in bench/, for bodies

    @property
    def label(self) -> str:
        return f"{self.method} {self.path}"


ROUTES: tuple[Route, ...] = (
    Route("healthz", "GET", "/healthz"),
    Route("foo", "GET", "/api/v1/foo"),
    Route("bar", "POST", "/api/v1/bar", "post_bar.lua"),
    Route("baz", "GET", "/api/v1/baz"),
    Route("users", "GET", "/api/v1/users?limit=20"),
)
SECTIONS = (*(r.name for r in ROUTES), "jobs")
NOOP_CANDIDATES = ("noop", "no_op", "nop")
BASELINE_BAZ_KEY = "bench:baseline:baz"
UNAVAILABLE = "skipped: route not available"
MEMORY_RUN_S = 2  # seconds of load per route on the process whose memory is measured
TERMINAL = {"complete", "failed", "aborted"}  # SAQ job statuses that end a job


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- options --------------------------------------------------------------------------------


@dataclass
class Options:
    quick: bool = False
    only: tuple[str, ...] = SECTIONS
    repetitions: int = 3
    duration: int = 4
    warmup: int = 1
    connections: int = 64
    threads: int = 2
    users: int = 1000
    jobs: int = 3000
    idle_jobs: int = 200
    job_queue: str = "default"
    job_concurrency: int | None = None
    noop_tasks: tuple[str, ...] = NOOP_CANDIDATES
    profile_route: str | None = None
    profiler: str = "auto"
    results: Path = BENCH_DIR / "results"
    server_core: int = 0
    client_core: int = 1

    @property
    def tmp(self) -> Path:
        return self.results / "tmp"

    @property
    def http_routes(self) -> list[Route]:
        return [r for r in ROUTES if r.name in self.only]


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench", description="Benchmarks: ours against bare baselines.")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 repetition of 2 s, fewer jobs (figures are not for the README)",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NAME[,NAME]",
        help=f"run only these sections: {', '.join(SECTIONS)} (repeatable)",
    )
    parser.add_argument("--reps", type=int, help="repetitions per figure (default 3; --quick 1)")
    parser.add_argument("--duration", type=int, help="seconds per timed wrk run (default 4; --quick 2)")
    parser.add_argument("--warmup", type=int, help="seconds of wrk before each timed run (default 1)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--users", type=int, default=1000, help="users seeded into the bench database")
    parser.add_argument("--jobs", type=int, help="no-op jobs per bulk drain (default 3000; --quick 500)")
    parser.add_argument("--idle-jobs", type=int, help="jobs run one at a time for latency (default 200; --quick 50)")
    parser.add_argument("--job-queue", default="default", help="the queue our worker serves (--queue)")
    parser.add_argument(
        "--job-concurrency",
        type=int,
        help="concurrency of the raw SAQ worker (default: queue.concurrency of the config)",
    )
    parser.add_argument(
        "--noop-task",
        action="append",
        default=[],
        help=f"name of our no-op task (default: tries {', '.join(NOOP_CANDIDATES)})",
    )
    parser.add_argument(
        "--profile-route",
        choices=[r.name for r in ROUTES],
        help="route to profile (default: the one furthest below its baseline)",
    )
    parser.add_argument("--profiler", choices=["auto", "py-spy", "pyinstrument", "none"], default="auto")
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results", help="folder for the results")
    args = parser.parse_args(argv)
    only = tuple(n.strip() for chunk in args.only for n in chunk.split(",") if n.strip()) or SECTIONS
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown --only name(s): {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    quick = args.quick
    return Options(
        quick=quick,
        only=only,
        repetitions=args.reps or (1 if quick else 3),
        duration=args.duration or (2 if quick else 4),
        warmup=args.warmup if args.warmup is not None else 1,
        connections=args.connections,
        threads=args.threads,
        users=args.users,
        jobs=args.jobs or (500 if quick else 3000),
        idle_jobs=args.idle_jobs or (50 if quick else 200),
        job_queue=args.job_queue,
        job_concurrency=args.job_concurrency,
        noop_tasks=tuple(args.noop_task) or NOOP_CANDIDATES,
        profile_route=args.profile_route,
        profiler=args.profiler,
        results=args.results.resolve(),
    )


# --- processes ------------------------------------------------------------------------------


class StartError(RuntimeError):
    """A process of the bench did not come up; the message carries the end of its log."""


def pinned(core: int | None, argv: Sequence[str]) -> list[str]:
    if core is None or shutil.which("taskset") is None:
        return list(argv)
    return ["taskset", "-c", str(core), *argv]


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class HttpResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None


def http_request(port: int, method: str, path: str, body: str | None = None, timeout: float = 5.0) -> HttpResponse:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return HttpResponse(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
    finally:
        conn.close()


class Proc:
    """One child process, its output in a log file, stopped by its own pid."""

    registry: ClassVar[list[Proc]] = []

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: dict[str, str] | None = None):
        self.name, self.argv, self.log_path = name, list(argv), log_path
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Proc:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env=self.env)
        Proc.registry.append(self)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_http(self, port: int, path: str = "/healthz", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise StartError(
                    f"{self.name} exited with {self.proc.returncode if self.proc else '?'}:\n{tail(self.log_path)}"
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                if http_request(port, "GET", path, timeout=1.0).status == 200:
                    return
            time.sleep(0.05)
        self.stop()
        raise StartError(f"{self.name} did not answer GET {path} within {timeout:.0f} s:\n{tail(self.log_path)}")

    def rss_mb(self) -> float | None:
        try:
            return harness.rss_mb_from_status(Path(f"/proc/{self.pid}/status").read_text())
        except (OSError, ValueError):
            return None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self in Proc.registry:
            Proc.registry.remove(self)

    @classmethod
    def stop_all(cls) -> None:
        for proc in list(reversed(cls.registry)):
            proc.stop(timeout=5.0)


# --- the bench ------------------------------------------------------------------------------


@dataclass
class Sample:
    status: int
    body: Any
    x_cache: str | None = None


@dataclass
class Bench:
    opts: Options
    redis: RedisProcess | None = None
    upstream: ThreadedServer | None = None
    config_path: Path = Path()
    jobs_config_path: Path = Path()
    db_path: Path = Path()
    results: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    commands: set[str] = field(default_factory=set)
    samples: dict[str, dict[str, Sample]] = field(default_factory=dict)
    _counter: int = 0

    # -- set-up --

    def log_file(self, name: str) -> Path:
        self._counter += 1
        return self.opts.tmp / "logs" / f"{self._counter:03d}-{name}.log"

    def write_config(self, path: Path, redis_url: str, port: int = 8080) -> None:
        """A config of the bench's own: changes settings only, never code paths (see README)."""
        raw = {
            "server": {"host": "127.0.0.1", "port": port, "access_log": False, "shutdown_timeout": 2},
            "logging": {"level": "WARNING"},
            "database": {"path": str(self.db_path)},
            "redis": {"url": redis_url},
            # Long enough that the primed baz entry stays a hit for the whole run.
            "cache": {"default_ttl": 3600},
            "cat_facts": {
                "url": self.upstream.url("/fact") if self.upstream else "http://127.0.0.1:9/fact",
                "timeout": 2.0,
            },
            "queue": {"embedded_worker": False},
            "honeybadger": {"api_key": "", "environment": "bench"},
            "internal": {"password": ""},
        }
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        load_config(path)  # fails here, clearly, if the config schema moved on

    def server_argv(self, config: Path, port: int) -> list[str]:
        # --port as well as the config: a fresh free port for every start.
        return [PY, "-m", "server", "--config", str(config), "serve", "--port", str(port)]

    def detect_commands(self) -> None:
        out = subprocess.run([PY, "-m", "server", "--help"], capture_output=True, text=True, cwd=ROOT).stdout
        match = re.search(r"\{([a-z0-9_,-]+)\}", out)
        self.commands = set(match.group(1).split(",")) if match else set()

    def prepare_database(self) -> None:
        if "migrate" in self.commands:
            done = subprocess.run(
                [PY, "-m", "server", "--config", str(self.config_path), "migrate"],
                capture_output=True,
                text=True,
                cwd=ROOT,
            )
            if done.returncode != 0:
                self.warnings.append(
                    f"`python -m server migrate` failed ({done.returncode}): "
                    f"{(done.stderr or done.stdout).strip()[-300:]}"
                )
        if not self._has_users_table():
            # Migrations may run at start-up instead: let our server start once on the file.
            port = free_port()
            proc = Proc("ours-migrate", self.server_argv(self.config_path, port), self.log_file("ours-first-start"))
            try:
                proc.start().wait_http(port)
            except StartError as exc:
                self.warnings.append(f"our server did not start on the bench database: {exc}")
            finally:
                proc.stop()
        if not self._has_users_table():
            self.warnings.append(
                "no users table after migrations: the bench created a minimal one "
                "(id, name, created_at, updated_at) to count and list"
            )
            with contextlib.closing(sqlite3.connect(self.db_path)) as db:
                db.execute(
                    "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                    "created_at TEXT NOT NULL, updated_at TEXT NOT NULL)"
                )
                db.commit()
        seeded = seed_users(self.db_path, self.opts.users)
        log(f"database {self.db_path.name}: {seeded} users")

    def _has_users_table(self) -> bool:
        if not self.db_path.exists():
            return False
        with contextlib.closing(sqlite3.connect(self.db_path)) as db:
            return db.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='users'").fetchone() is not None

    # -- servers --

    @contextlib.contextmanager
    def server(self, kind: str, label: str, config: Path | None = None) -> Iterator[tuple[Proc, int]]:
        port = free_port()
        if kind == "ours":
            argv = self.server_argv(config or self.config_path, port)
        else:
            argv = [
                PY,
                str(BENCH_DIR / "baseline_app.py"),
                "--port",
                str(port),
                "--db",
                str(self.db_path),
                "--redis-url",
                self.redis_url,
                "--baz-key",
                BASELINE_BAZ_KEY,
            ]
        proc = Proc(f"{kind} server", pinned(self.opts.server_core, argv), self.log_file(f"{kind}-{label}"))
        try:
            proc.start().wait_http(port)
            yield proc, port
        finally:
            proc.stop()

    @property
    def redis_url(self) -> str:
        assert self.redis is not None
        return self.redis.url

    def wrk(self, port: int, route: Route, seconds: int) -> tuple[WrkResult, str]:
        argv = ["wrk", f"-t{self.opts.threads}", f"-c{self.opts.connections}", f"-d{seconds}s", "--latency"]
        if route.script:
            argv += ["-s", str(BENCH_DIR / route.script)]
        argv.append(f"http://127.0.0.1:{port}{route.path}")
        done = subprocess.run(pinned(self.opts.client_core, argv), capture_output=True, text=True, timeout=seconds + 60)
        return parse_wrk(done.stdout), done.stdout

    def sample(self, port: int, route: Route) -> Sample:
        body = None
        if route.script:
            body = harness.lua_body((BENCH_DIR / route.script).read_text())
        resp = http_request(port, route.method, route.path, body)
        return Sample(resp.status, resp.json(), resp.headers.get("x-cache"))

    def prime_cache(self, port: int, route: Route) -> tuple[bool, Sample]:
        """Make sure the next GET is a cache hit; True when a sample answered X-Cache: HIT."""
        first = self.sample(port, route)
        if first.status != 200 or first.x_cache is None:
            return False, first
        if first.x_cache.upper() == "HIT":
            return True, first
        second = self.sample(port, route)
        return second.x_cache is not None and second.x_cache.upper() == "HIT", second

    # -- HTTP --

    def probe_routes(self) -> dict[str, str | None]:
        """Which routes our server answers (None) and why the others are skipped."""
        reasons: dict[str, str | None] = {}
        self.samples = {"ours": {}, "baseline": {}}
        with self.server("ours", "probe") as (_proc, port):
            for route in self.opts.http_routes:
                sample = self.sample(port, route)
                if sample.status in (404, 405):
                    reasons[route.name] = UNAVAILABLE
                    continue
                if sample.status != 200:
                    reasons[route.name] = f"skipped: a sample request answered {sample.status}"
                    continue
                if route.name == "baz":
                    hit, sample = self.prime_cache(port, route)
                    if not hit:
                        reasons[route.name] = (
                            f"skipped: no cache hit (X-Cache: {sample.x_cache or 'absent'} on the second request)"
                        )
                        continue
                    self._set_baseline_baz(sample.body)
                reasons[route.name] = None
                self.samples["ours"][route.name] = sample
        available = [r for r in self.opts.http_routes if reasons.get(r.name) is None]
        if available:
            with self.server("baseline", "probe") as (_proc, port):
                for route in available:
                    self.samples["baseline"][route.name] = self.sample(port, route)
        return reasons

    def _set_baseline_baz(self, body: Any) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            client.set(BASELINE_BAZ_KEY, json.dumps(body))
        finally:
            client.close()

    def timed_run(self, kind: str, route: Route, rep: int) -> dict[str, Any]:
        with self.server(kind, f"{route.name}-{rep}") as (proc, port):
            notes: list[str] = []
            if kind == "ours" and route.name == "baz":
                hit, sample = self.prime_cache(port, route)
                if not hit:
                    notes.append(f"no cache hit before the run (X-Cache: {sample.x_cache})")
            if self.opts.warmup > 0:
                self.wrk(port, route, self.opts.warmup)
            result, _ = self.wrk(port, route, self.opts.duration)
            if kind == "ours" and route.name == "baz":
                after = self.sample(port, route)
                if (after.x_cache or "").upper() != "HIT":
                    notes.append(f"X-Cache after the run: {after.x_cache}")
            run = {
                "requests_per_s": result.requests_per_s,
                "p50_ms": result.p50_ms,
                "p99_ms": result.p99_ms,
                "requests": result.requests,
                "non_2xx": result.non_2xx,
                "socket_errors": result.socket_errors,
                "rss_mb_after": proc.rss_mb() if kind == "ours" else None,
            }
            if result.error_share > 0.001:
                notes.append(
                    f"{result.non_2xx} non-2xx answers and {result.socket_errors} socket errors "
                    f"in {result.requests} requests"
                )
            run["notes"] = notes
            return run

    def run_http(self) -> list[dict[str, Any]]:
        routes = self.opts.http_routes
        out: list[dict[str, Any]] = []
        if not routes:
            return out
        if shutil.which("wrk") is None:
            return [
                {
                    "name": r.name,
                    "method": r.method,
                    "path": r.path,
                    "status": "skipped",
                    "reason": "skipped: wrk is not installed (make bench installs it as root; "
                    "else `sudo apt-get install -y wrk`)",
                }
                for r in routes
            ]
        try:
            reasons = self.probe_routes()
        except StartError as exc:
            self.warnings.append(f"our server did not start: {exc}")
            return [
                {
                    "name": r.name,
                    "method": r.method,
                    "path": r.path,
                    "status": "skipped",
                    "reason": "skipped: our server did not start (see warnings)",
                }
                for r in routes
            ]
        for route in routes:
            entry: dict[str, Any] = {"name": route.name, "method": route.method, "path": route.path}
            out.append(entry)
            if reasons.get(route.name) is not None:
                entry.update(status="skipped", reason=reasons[route.name])
                log(f"{route.label}: {reasons[route.name]}")
                continue
            runs: dict[str, list[dict[str, Any]]] = {"ours": [], "baseline": []}
            try:
                for rep in range(self.opts.repetitions):
                    for kind in ("ours", "baseline"):  # interleaved, so drift hits both alike
                        run = self.timed_run(kind, route, rep)
                        runs[kind].append(run)
                        log(
                            f"{route.label} {kind:<8} rep {rep + 1}: {run['requests_per_s']:,.0f} req/s, "
                            f"p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms"
                        )
            except (StartError, WrkParseError, subprocess.TimeoutExpired) as exc:
                entry.update(status="error", reason=f"error: {str(exc).splitlines()[0]}")
                self.warnings.append(f"{route.label}: {exc}")
                continue
            fields = ("requests_per_s", "p50_ms", "p99_ms")
            ratios = harness.pairwise_ratios(
                [r["requests_per_s"] for r in runs["ours"]], [r["requests_per_s"] for r in runs["baseline"]]
            )
            ratio = spread(ratios)
            ours_p99 = spread(r["p99_ms"] for r in runs["ours"])
            ours_sample = self.samples["ours"].get(route.name)
            base_sample = self.samples["baseline"].get(route.name)
            notes = sorted({n for kind in runs for r in runs[kind] for n in r["notes"]})
            if ours_sample and base_sample and ours_sample.body != base_sample.body:
                ours_text, base_text = json.dumps(ours_sample.body)[:160], json.dumps(base_sample.body)[:160]
                notes.append(f"the baseline's answer differs from ours: ours {ours_text}, baseline {base_text}")
            entry.update(
                status="ok",
                ours={**harness.summarize_runs(runs["ours"], fields), "runs": runs["ours"]},
                baseline={**harness.summarize_runs(runs["baseline"], fields), "runs": runs["baseline"]},
                ratio=ratio.as_dict(),
                targets=harness.http_targets(ratio, ours_p99),
                notes=notes,
            )
        return out

    # -- memory and profile --

    def run_memory_and_profile(self, http: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
        measured = [e for e in http if e.get("status") == "ok"]
        routes = {r.name: r for r in ROUTES}
        if not measured:
            skipped = {"status": "skipped", "reason": "skipped: no HTTP route was measured"}
            return dict(skipped), dict(skipped)
        memory: dict[str, Any] = {"status": "ok"}
        profile: dict[str, Any]
        target_name = self.opts.profile_route or min(measured, key=lambda e: e["ratio"]["median"])["name"]
        why = "chosen with --profile-route" if self.opts.profile_route else "the route furthest below its baseline"
        with self.server("ours", "memory") as (proc, port):
            time.sleep(1.0)
            memory["idle_mb"] = proc.rss_mb()
            for entry in measured:
                route = routes[entry["name"]]
                if route.name == "baz":
                    self.prime_cache(port, route)
                self.wrk(port, route, min(self.opts.duration, MEMORY_RUN_S))
            memory["after_mb"] = proc.rss_mb()
            profile = self.profile(proc, port, routes[target_name], why)
        after_runs = [r["rss_mb_after"] for e in measured for r in e["ours"]["runs"] if r.get("rss_mb_after")]
        memory["max_after_run_mb"] = max(after_runs) if after_runs else None
        memory["target"] = harness.verdict(
            None if memory["after_mb"] is None else memory["after_mb"] < TARGETS["rss_mb"]
        )
        if profile.get("status") != "ok" and self.opts.profiler in ("auto", "pyinstrument"):
            profile = self.profile_pyinstrument(routes[target_name], why, profile.get("reason"))
        return memory, profile

    def profile(self, proc: Proc, port: int, route: Route, why: str) -> dict[str, Any]:
        if self.opts.profiler not in ("auto", "py-spy"):
            return {"status": "skipped", "reason": f"skipped: --profiler {self.opts.profiler}"}
        py_spy = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
        if not Path(py_spy).exists():
            return {"status": "skipped", "reason": "skipped: py-spy is not installed (pip install -e '.[bench]')"}
        files = []
        seconds = self.opts.duration
        raw_text = ""
        # Raw stacks with full file names for the summary, then a flame graph to look at.
        for fmt, suffix, extra in (("raw", "txt", ["--full-filenames"]), ("flamegraph", "svg", [])):
            out = self.opts.results / f"profile-{route.name}.{suffix}"
            argv = pinned(
                self.opts.client_core,
                [
                    py_spy,
                    "record",
                    "--pid",
                    str(proc.pid),
                    "--duration",
                    str(seconds),
                    "--rate",
                    "250",
                    "--nonblocking",
                    "--format",
                    fmt,
                    "--output",
                    str(out),
                    *extra,
                ],
            )
            if route.name == "baz":
                self.prime_cache(port, route)
            spy = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            time.sleep(0.3)  # let it attach before the load starts
            self.wrk(port, route, seconds)
            spy_out = spy.communicate(timeout=seconds + 30)[0].decode(errors="replace")
            if spy.returncode != 0 or not out.exists():
                return {"status": "error", "reason": f"py-spy failed ({spy.returncode}): {spy_out.strip()[-300:]}"}
            files.append(out.name)
            if fmt == "raw":
                raw_text = out.read_text()
        summary = harness.summarize_collapsed(raw_text)
        (self.opts.results / f"profile-{route.name}-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        files.append(f"profile-{route.name}-summary.json")
        return {
            "status": "ok",
            "route": route.label,
            "tool": "py-spy (250 Hz, all threads)",
            "why": why,
            "files": files,
            "summary": summary,
        }

    def profile_pyinstrument(self, route: Route, why: str, reason: str | None) -> dict[str, Any]:
        """Fallback when py-spy cannot attach: our server run under pyinstrument, stopped with SIGINT."""
        port = free_port()
        out = self.opts.results / f"profile-{route.name}.html"
        argv = [
            PY,
            "-m",
            "pyinstrument",
            "--renderer",
            "html",
            "--outfile",
            str(out),
            "-m",
            "server",
            "--config",
            str(self.config_path),
            "serve",
            "--port",
            str(port),
        ]
        proc = Proc("ours under pyinstrument", pinned(self.opts.server_core, argv), self.log_file("ours-pyinstrument"))
        try:
            proc.start().wait_http(port)
            if route.name == "baz":
                self.prime_cache(port, route)
            self.wrk(port, route, self.opts.duration)
        except (StartError, WrkParseError) as exc:
            return {"status": "error", "reason": f"py-spy: {reason}; pyinstrument: {exc}"}
        finally:
            proc.stop(signal.SIGINT, timeout=30)
        if not out.exists():
            return {"status": "error", "reason": f"py-spy: {reason}; pyinstrument wrote nothing"}
        return {
            "status": "ok",
            "route": route.label,
            "tool": f"pyinstrument (py-spy: {reason})",
            "why": why,
            "files": [out.name],
            "summary": None,
        }

    # -- jobs --

    def run_jobs(self) -> dict[str, Any]:
        result: dict[str, Any] = {"notes": []}
        # Its own Redis database: baz's misses enqueue slow_job on db 0, which would sit in our queue.
        jobs_url = self.redis_url.rsplit("/", 1)[0] + "/1"
        self.write_config(self.jobs_config_path, jobs_url)
        concurrency = self.opts.job_concurrency or load_config(self.jobs_config_path).queue.concurrency
        raw_queue = "bench-raw"
        ours_task: str | None = None
        if "worker" not in self.commands:
            result["ours_reason"] = "skipped: `python -m server worker` not available yet"
        else:
            ours_task, reason = self.find_noop_task(jobs_url)
            if ours_task is None:
                result["ours_reason"] = f"skipped: {reason}"
        if ours_task is None:
            log(f"jobs ours: {result['ours_reason']}")
        sides: dict[str, dict[str, Any]] = {}
        if ours_task is not None:
            sides["ours"] = {
                "argv": [
                    PY,
                    "-m",
                    "server",
                    "--config",
                    str(self.jobs_config_path),
                    "worker",
                    "--queue",
                    self.opts.job_queue,
                ],
                "queue": self.opts.job_queue,
                "task": ours_task,
            }
        sides["raw"] = {
            "argv": [str(Path(PY).parent / "saq"), "bench.saq_settings.settings", "--quiet"],
            "env": {"BENCH_REDIS_URL": jobs_url, "BENCH_QUEUE": raw_queue, "BENCH_CONCURRENCY": str(concurrency)},
            "queue": raw_queue,
            "task": "noop",
        }
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in sides}
        try:
            for rep in range(self.opts.repetitions):
                for name, side in sides.items():  # interleaved
                    run = asyncio.run(self.jobs_rep(name, side, jobs_url, rep))
                    runs[name].append(run)
                    log(
                        f"jobs {name:<4} rep {rep + 1}: {run['jobs_per_s']:,.0f} jobs/s, enqueue p50 "
                        f"{run['enqueue_p50_ms']:.2f} ms, enqueue→complete p50 {run['e2c_p50_ms']:.2f} ms"
                    )
        except (StartError, TimeoutError, RuntimeError) as exc:
            self.warnings.append(f"jobs: {exc}")
            return {"status": "error", "reason": f"error: {str(exc).splitlines()[0]}", "notes": result["notes"]}
        fields = ("jobs_per_s", "enqueue_p50_ms", "enqueue_p99_ms", "e2c_p50_ms", "e2c_p99_ms", "enqueue_bulk_per_s")
        for name in sides:
            result[name] = {**harness.summarize_runs(runs[name], fields), "runs": runs[name]}
        result["concurrency"] = concurrency
        if "ours" in sides:
            ratio = spread(
                harness.pairwise_ratios([r["jobs_per_s"] for r in runs["ours"]], [r["jobs_per_s"] for r in runs["raw"]])
            )
            result.update(
                status="ok", ratio=ratio.as_dict(), target=harness.verdict(ratio.median >= TARGETS["jobs_ratio"])
            )
        else:
            result["ours"] = {}
            result.update(status="ok", ratio=None, target="skipped")
            result["notes"].append("raw SAQ measured alone, so the harness runs; the ratio waits for our worker")
        for name in sides:
            for run in runs[name]:
                result["notes"].extend(f"{name}: {n}" for n in run.get("notes", []))
        return result

    def find_noop_task(self, jobs_url: str) -> tuple[str | None, str]:
        """Start our worker once and find which no-op task name it runs."""
        argv = [PY, "-m", "server", "--config", str(self.jobs_config_path), "worker", "--queue", self.opts.job_queue]
        proc = Proc("our worker", pinned(self.opts.server_core, argv), self.log_file("ours-worker-probe"))
        proc.start()
        try:
            for name in self.opts.noop_tasks:
                state = asyncio.run(probe_task(jobs_url, self.opts.job_queue, name, proc))
                if state == "complete":
                    log(f"our worker runs the no-op task {name!r}")
                    return name, ""
                if state == "timeout":
                    return None, (
                        f"our worker did not finish a job on queue {self.opts.job_queue!r} within 20 s "
                        f"(log: {proc.log_path.name}): {tail(proc.log_path, 3)}"
                    )
            return None, (
                "TODO(lead): our worker has no no-op task (tried "
                f"{', '.join(self.opts.noop_tasks)}); register one in the worker's functions or "
                "give the worker settings a config list of extra functions, then pass --noop-task NAME"
            )
        finally:
            proc.stop()

    async def jobs_rep(self, name: str, side: dict[str, Any], url: str, rep: int) -> dict[str, Any]:
        from saq import Queue

        queue = Queue.from_url(url, name=side["queue"])
        await queue.connect()
        notes: list[str] = []
        proc = Proc(
            f"{name} worker",
            pinned(self.opts.server_core, side["argv"]),
            self.log_file(f"{name}-worker-{rep}"),
            env=side.get("env"),
        )
        proc.start()
        try:
            # 0. The worker is up and warm once it has run a few jobs.
            await wait_worker(queue, side["task"], proc, url)
            # 1. A backlog that lands in the queue at once, scheduled a little ahead: the drain then
            # measures the worker alone. (Enqueued before the worker starts, the backlog races
            # SAQ's start-up sweep, which aborts jobs it sees moving: upstream saq#277.)
            keys = [f"bench-{uuid.uuid4().hex}" for _ in range(self.opts.jobs)]
            lands_at = int(time.time() + 1.5 + len(keys) / 2000)
            enqueue_started = time.perf_counter()
            await bulk_enqueue(queue, side["task"], keys, scheduled=lands_at)
            enqueue_bulk_per_s = len(keys) / (time.perf_counter() - enqueue_started)
            if time.time() >= lands_at:
                notes.append(f"rep {rep + 1}: the backlog was still being enqueued when it became due")
            jobs = await wait_drained(queue, proc, keys, timeout=60 + self.opts.jobs / 100)
            statuses = [j.status.value if j else "missing" for j in jobs]
            bad = {s: statuses.count(s) for s in set(statuses) if s != "complete"}
            if bad:
                notes.append(f"rep {rep + 1}: jobs not complete: {bad}")
            done = [(j.started, j.completed) for j in jobs if j and j.status.value == "complete"]
            jobs_per_s = drain_rate(done)
            # 2. One job at a time on the warm, idle worker: latency.
            enqueue_ms, e2c_ms = await one_at_a_time(queue, side["task"], self.opts.idle_jobs, url)
        finally:
            proc.stop()
            await queue.disconnect()
        return {
            "jobs_per_s": jobs_per_s,
            "enqueue_bulk_per_s": enqueue_bulk_per_s,
            "enqueue_p50_ms": harness.percentile(enqueue_ms, 50),
            "enqueue_p99_ms": harness.percentile(enqueue_ms, 99),
            "e2c_p50_ms": harness.percentile(e2c_ms, 50),
            "e2c_p99_ms": harness.percentile(e2c_ms, 99),
            "notes": notes,
        }

    # -- the whole run --

    def run(self) -> dict[str, Any]:
        opts = self.opts
        started = time.monotonic()
        if opts.tmp.exists():
            shutil.rmtree(opts.tmp)
        opts.tmp.mkdir(parents=True)
        for old in opts.results.glob("profile-*"):
            old.unlink()
        self.check_machine()
        self.results = {"meta": self.meta(), "targets": dict(TARGETS)}
        self.db_path = opts.tmp / "bench.db"
        self.config_path = opts.tmp / "config.yaml"
        self.jobs_config_path = opts.tmp / "config-jobs.yaml"
        self.redis = RedisProcess()
        self.redis.start()
        self.pin_redis()
        self.upstream = ThreadedServer(FakeCatFacts().app()).start()
        log(f"redis {self.redis.url} ({Path(self.redis.binary).name}), fake cat facts {self.upstream.url('/fact')}")
        self.write_config(self.config_path, self.redis.url)
        self.detect_commands()
        self.section("database", self.prepare_database)
        if opts.http_routes:
            http = self.section("http", self.run_http) or []
            self.results["http"] = http
            memory, profile = (
                self.section("memory", lambda: self.run_memory_and_profile(http))
                or ({"status": "error", "reason": "error: see warnings"},) * 2
            )
            self.results["memory"], self.results["profile"] = memory, profile
        if "jobs" in opts.only:
            self.results["jobs"] = self.section("jobs", self.run_jobs) or {
                "status": "error",
                "reason": "error: see warnings",
            }
        self.results["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
        self.results["meta"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
        self.results["warnings"] = self.warnings
        self.results["verdicts"] = harness.collect_verdicts(self.results)
        return self.results

    def section(self, name: str, step: Callable[[], Any]) -> Any:
        """Run one part of the bench; a failure is reported in the results, and the run goes on."""
        try:
            return step()
        except Exception as exc:  # a harness that stops half-way reports nothing at all
            trace = self.opts.tmp / "logs" / f"error-{name}.log"
            trace.parent.mkdir(parents=True, exist_ok=True)
            trace.write_text(traceback.format_exc())
            self.warnings.append(
                f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
                f"(traceback in {trace.relative_to(self.opts.results)})"
            )
            log(f"{name} failed: {exc!r}")
            return None

    def pin_redis(self) -> None:
        # Redis shares the server's core: what a request or a job costs in Redis is counted against
        # the core that serves it, and wrk keeps its core to itself (sharing it starved Redis).
        assert self.redis is not None and self.redis.proc is not None
        with contextlib.suppress(OSError):
            os.sched_setaffinity(self.redis.proc.pid, {self.opts.server_core})

    def check_machine(self) -> None:
        cores = os.cpu_count() or 1
        if cores < 2:
            self.warnings.append(
                "one core only: server and load generator share it, ratios still hold, absolute figures do not"
            )
            self.opts.server_core = self.opts.client_core = 0
        if shutil.which("taskset") is None:
            self.warnings.append("taskset not found: processes are not pinned to cores")
        busy = core_busy(1.0)
        loaded = {core: share for core, share in busy.items() if share > 0.10}
        if loaded:
            self.warnings.append(
                "the machine was busy before the run ("
                + ", ".join(f"core {c} {s:.0%}" for c, s in loaded.items())
                + " busy): figures are smoke checks only, not for the README"
            )
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {self.opts.client_core})  # this script (and wrk) stay off the server core

    def meta(self) -> dict[str, Any]:
        def version(dist: str) -> str:
            from importlib.metadata import PackageNotFoundError
            from importlib.metadata import version as v

            try:
                return v(dist)
            except PackageNotFoundError:
                return "not installed"

        wrk_version = "wrk not installed"
        if shutil.which("wrk"):
            out = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
            wrk_version = (out.stdout or out.stderr).split(" [")[0].strip() or "wrk"
        cpu = "?"
        with contextlib.suppress(OSError):
            found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
            cpu = found.group(1).strip() if found else platform.processor() or "?"
        o = self.opts
        return {
            "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "mode": "quick" if o.quick else "full",
            "repetitions": o.repetitions,
            "duration_s": o.duration,
            "warmup_s": o.warmup,
            "connections": o.connections,
            "threads": o.threads,
            "users": o.users,
            "jobs": o.jobs,
            "idle_jobs": o.idle_jobs,
            "only": list(o.only),
            "cpu": cpu,
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "aiohttp": version("aiohttp"),
            "uvloop": version("uvloop"),
            "saq": version("saq"),
            "redis_py": version("redis"),
            "wrk": wrk_version,
            "server_core": o.server_core,
            "client_core": o.client_core,
            "load_before": [round(x, 2) for x in os.getloadavg()],
        }

    def close(self) -> None:
        Proc.stop_all()
        if self.upstream is not None:
            self.upstream.stop()
        if self.redis is not None:
            self.redis.__exit__(None, None, None)


# --- jobs helpers ---------------------------------------------------------------------------


def chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def drain_rate(started_completed: Sequence[tuple[int, int]], skip: float = 0.1) -> float:
    """Jobs per second over a drain, leaving out the first `skip` share of jobs as warm-up.

    SAQ stamps `started` and `completed` in epoch milliseconds.
    """
    if len(started_completed) < 2:
        raise RuntimeError("too few completed jobs to measure a drain")
    ordered = sorted(started_completed)
    first = int(len(ordered) * skip)
    window_ms = max(c for _, c in ordered) - ordered[first][0]
    return (len(ordered) - first) / max(window_ms / 1000, 0.001)


async def bulk_enqueue(queue: Any, task: str, keys: Sequence[str], scheduled: int = 0, in_flight: int = 32) -> None:
    pending = iter(keys)

    async def enqueuer() -> None:
        for key in pending:
            await queue.enqueue(task, key=key, scheduled=scheduled)

    await asyncio.gather(*(enqueuer() for _ in range(in_flight)))


async def wait_drained(queue: Any, proc: Proc, keys: Sequence[str], timeout: float) -> list[Any]:
    """Wait until the worker has emptied the queue and every job of `keys` ended; returns those jobs.

    Not `count("incomplete")`: a worker's cron jobs wait in that set until they are due.
    """
    deadline = time.monotonic() + timeout
    while True:
        if not proc.alive():
            raise StartError(f"{proc.name} exited:\n{tail(proc.log_path)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{proc.name} did not drain its queue within {timeout:.0f} s")
        if await queue.count("queued") + await queue.count("active") == 0:
            jobs = [j for chunk in chunks(keys, 500) for j in await queue.jobs(chunk)]
            # "aborting": swept by SAQ (saq#277); it turns "aborted" seconds later, no need to wait.
            if all(j is None or j.status.value in (*TERMINAL, "aborting") for j in jobs):
                return jobs
        await asyncio.sleep(0.05)


async def run_and_wait(queue: Any, pubsub: Any, task: str, timeout: float = 10.0) -> tuple[float, float, str]:
    """Enqueue one job and wait for its terminal status: (enqueue ms, enqueue→terminal ms, status).

    Subscribes to the job's channel before enqueueing (SAQ publishes every status change there),
    so a fast job cannot finish unseen between the enqueue and the wait.
    """
    key = f"bench-{uuid.uuid4().hex}"
    channel = queue.job_id(key)
    await pubsub.subscribe(channel)
    while True:  # the subscription is confirmed before the clock starts
        message = await pubsub.get_message(timeout=timeout)
        if message and message["type"] == "subscribe":
            break
    t0 = time.perf_counter()
    await queue.enqueue(task, key=key)
    t1 = time.perf_counter()
    deadline = t0 + timeout
    status = "timeout"
    while time.perf_counter() < deadline:
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=deadline - time.perf_counter())
        if message and message["type"] == "message":
            data = message["data"].decode() if isinstance(message["data"], bytes) else str(message["data"])
            if data in TERMINAL:
                status = data
                break
    t2 = time.perf_counter()
    await pubsub.unsubscribe(channel)
    return (t1 - t0) * 1000, (t2 - t0) * 1000, status


async def wait_worker(queue: Any, task: str, proc: Proc, url: str, timeout: float = 30.0) -> None:
    """Return once the worker has run a few jobs in a row; raises StartError when it does not."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    pubsub = client.pubsub()
    deadline = time.monotonic() + timeout
    completed = 0
    try:
        while completed < 20:
            if not proc.alive() or time.monotonic() > deadline:
                raise StartError(
                    f"{proc.name} did not run a {task!r} job within {timeout:.0f} s:\n{tail(proc.log_path)}"
                )
            _, _, status = await run_and_wait(queue, pubsub, task, timeout=max(0.5, deadline - time.monotonic()))
            completed = completed + 1 if status == "complete" else 0
    finally:
        await pubsub.aclose()
        await client.aclose()


async def one_at_a_time(queue: Any, task: str, count: int, url: str) -> tuple[list[float], list[float]]:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    pubsub = client.pubsub()
    enqueue_ms: list[float] = []
    e2c_ms: list[float] = []
    try:
        for _ in range(count):
            enq, e2c, status = await run_and_wait(queue, pubsub, task)
            if status != "complete":
                raise RuntimeError(f"a no-op job ended {status}")
            enqueue_ms.append(enq)
            e2c_ms.append(e2c)
    finally:
        await pubsub.aclose()
        await client.aclose()
    return enqueue_ms, e2c_ms


async def probe_task(url: str, queue_name: str, task: str, proc: Proc) -> str:
    """'complete' when the worker ran `task`, 'failed' when it does not know it, else 'timeout'."""
    from redis.asyncio import Redis
    from saq import Queue

    queue = Queue.from_url(url, name=queue_name)
    await queue.connect()
    client = Redis.from_url(url)
    pubsub = client.pubsub()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.alive():
            _, _, status = await run_and_wait(queue, pubsub, task, timeout=max(0.5, deadline - time.monotonic()))
            if status != "timeout":
                return status
        return "timeout"
    finally:
        await pubsub.aclose()
        await client.aclose()
        await queue.disconnect()


# --- data and machine helpers ---------------------------------------------------------------


def seed_users(db_path: Path, count: int) -> int:
    """Fill `users` up to `count` rows, giving every NOT NULL column without a default a value."""
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        have = db.execute("SELECT COUNT(*) FROM users").fetchone()[0]
        if have >= count:
            return have
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
        return db.execute("SELECT COUNT(*) FROM users").fetchone()[0]


def core_busy(seconds: float) -> dict[int, float]:
    """Share of each core busy over `seconds` (from /proc/stat), before the bench loads them."""

    def snapshot() -> dict[int, tuple[int, int]]:
        out = {}
        with contextlib.suppress(OSError):
            for line in Path("/proc/stat").read_text().splitlines():
                match = re.match(r"^cpu(\d+)\s+(.*)$", line)
                if match:
                    ticks = [int(x) for x in match.group(2).split()]
                    idle = ticks[3] + (ticks[4] if len(ticks) > 4 else 0)
                    out[int(match.group(1))] = (sum(ticks), idle)
        return out

    before = snapshot()
    time.sleep(seconds)
    after = snapshot()
    busy = {}
    for core, (total, idle) in after.items():
        if core in before:
            dt, di = total - before[core][0], idle - before[core][1]
            busy[core] = (dt - di) / dt if dt else 0.0
    return busy


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    bench = Bench(opts)
    try:
        results = bench.run()
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        bench.close()
    md, js = harness.write_results(results, opts.results)
    print()
    print(md.read_text())
    log(f"wrote {md.relative_to(ROOT) if md.is_relative_to(ROOT) else md} and {js.name}")
    return 0
