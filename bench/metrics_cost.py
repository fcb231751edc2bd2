"""Benchmark: what the metrics cost per request, on GET /api/v1/foo (target: at most 5 %).

The same server (`python -m server serve`), the same config but for `metrics.enabled`, started
afresh for each run, on: off, on, off... in pairs, the server pinned to core 0 and wrk to core 1
(as `make bench` does). Reported: requests/s of each run, the ratio on/off of each pair back to
back, and its median (1.0 = free; 0.95 = 5 % slower). Also the cost of one request's metric
updates in isolation (in-flight gauge up and down, one histogram observation), in microseconds.

    .venv/bin/python -m bench.metrics_cost [--pairs 5] [--seconds 5] [--connections 64]

Results: bench/results/metrics-cost.json (git-ignored like the rest of bench/results/).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path
from typing import Any

from bench.harness import parse_wrk
from bench.processes import http_server, pinned
from bench.stage import ours_argv, seed_users, write_bench_config

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
PATH = "/api/v1/foo"


def write_config(path: Path, *, db: Path, redis_url: str, metrics_dir: Path, enabled: bool) -> Path:
    metrics = {"enabled": enabled, "dir": str(metrics_dir)}
    return write_bench_config(path, db=db, redis_url=redis_url, metrics=metrics)


def wrk(port: int, seconds: int, connections: int) -> dict[str, float]:
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}{PATH}"]
    out = subprocess.run(pinned(1, argv), capture_output=True, text=True, timeout=seconds + 60).stdout
    result = parse_wrk(out)
    return {"requests_per_s": result.requests_per_s, "p50_ms": result.p50_ms, "p99_ms": result.p99_ms}


def run_once(config: Path, seconds: int, connections: int, log: Path) -> dict[str, float]:
    with http_server("ours", partial(ours_argv, config), log, 0) as (_proc, port):
        wrk(port, 1, connections)  # warm-up, discarded
        return wrk(port, seconds, connections)


def micro_cost(metrics_dir: Path) -> dict[str, float]:
    """Microseconds for one request's metric updates as the middleware makes them, for one
    publish() (once a second), and for the same updates written to the files at once: in
    multiprocess mode, in a child process (prometheus_client imported after its directory is set,
    as in the server)."""
    code = f"""
import time, timeit
from server.config import build_config
from server.metrics import setup_process_metrics
m = setup_process_metrics(build_config({{"metrics": {{"dir": {str(metrics_dir)!r}}}}}))
def one():
    m.in_flight += 1
    m.in_flight -= 1
    m.observe_request("/api/v1/foo", "GET", 200, 0.0004)
def direct():  # the same figures written to the files at once, without publish()'s batching
    m.http_in_flight.inc()
    m.http_in_flight.dec()
    m.http_requests.labels("/api/v1/foo", "GET", "200").observe(0.0004)
n = 20000
batched = min(timeit.repeat(one, number=n, repeat=5)) / n * 1e6
publish = min(timeit.repeat(m.publish, number=1, repeat=5)) * 1e6
written = min(timeit.repeat(direct, number=n, repeat=5)) / n * 1e6
print(batched, publish, written)
"""
    out = subprocess.run(pinned(0, [sys.executable, "-c", code]), capture_output=True, text=True, cwd=ROOT, check=True)
    batched, publish, written = (float(x) for x in out.stdout.split())
    return {
        "per_request_us": round(batched, 2),
        "publish_us": round(publish, 1),
        "per_request_written_at_once_us": round(written, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=5, help="on/off pairs (default 5)")
    parser.add_argument("--seconds", type=int, default=5, help="seconds per timed run (default 5)")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument(
        "--metrics-dir",
        type=Path,
        help="where the metrics files go (default: a new folder in the system's temporary folder; "
        "compare a disk folder with one on tmpfs such as /dev/shm)",
    )
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed: apt-get install wrk (make bench installs it)")

    from testing.redis import RedisProcess

    tmp = Path(tempfile.mkdtemp(prefix="bench-metrics-"))
    db = tmp / "bench.db"
    metrics_dir = args.metrics_dir or tmp / "metrics"
    runs: list[dict[str, Any]] = []
    with RedisProcess() as redis:
        on = write_config(tmp / "on.yaml", db=db, redis_url=redis.url, metrics_dir=metrics_dir, enabled=True)
        off = write_config(tmp / "off.yaml", db=db, redis_url=redis.url, metrics_dir=metrics_dir, enabled=False)
        subprocess.run([sys.executable, "-m", "server", "--config", str(on), "migrate"], cwd=ROOT, check=True,
                       capture_output=True)  # fmt: skip
        seed_users(db, args.users)
        for pair in range(args.pairs):
            for label, config in (("on", on), ("off", off)):
                result = run_once(config, args.seconds, args.connections, tmp / f"{label}.log")
                runs.append({"pair": pair, "metrics": label, **result})
                print(f"pair {pair} metrics {label:>3}: {result['requests_per_s']:8.0f} req/s  "
                      f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms", flush=True)  # fmt: skip
    ratios = []
    for pair in range(args.pairs):
        rps = {r["metrics"]: r["requests_per_s"] for r in runs if r["pair"] == pair}
        ratios.append(rps["on"] / rps["off"])
    report = {
        "route": f"GET {PATH}",
        "pairs": args.pairs,
        "seconds": args.seconds,
        "connections": args.connections,
        "metrics_dir": str(metrics_dir),
        "ratio_on_off_median": round(statistics.median(ratios), 3),
        "ratio_on_off_min": round(min(ratios), 3),
        "ratio_on_off_max": round(max(ratios), 3),
        "cost_percent_median": round((1 - statistics.median(ratios)) * 100, 1),
        "micro": micro_cost(tmp / "micro-metrics"),
        "runs": runs,
        "cpu": os.cpu_count(),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "metrics-cost.json").write_text(json.dumps(report, indent=1) + "\n")
    print(
        f"metrics on/off on GET {PATH}: median {report['ratio_on_off_median']} "
        f"(range {report['ratio_on_off_min']}-{report['ratio_on_off_max']}, {args.pairs} pairs): "
        f"cost {report['cost_percent_median']} %; one request's updates {report['micro']['per_request_us']} us "
        f"(written at once: {report['micro']['per_request_written_at_once_us']} us)"
    )
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
