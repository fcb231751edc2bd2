"""What `python -m bench` measures and how: the routes, the sections, the command-line options."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent


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
    peers: bool = True
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
        "--no-peers",
        action="store_true",
        help="leave out Flask + gunicorn and FastAPI + uvicorn (bench/.peers-venv)",
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
        peers=not args.no_peers,
        profile_route=args.profile_route,
        profiler=args.profiler,
        results=args.results.resolve(),
    )
