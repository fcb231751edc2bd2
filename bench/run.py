"""The bench run: set the stage, run each section (HTTP, memory and profile, jobs), write the results.

`python -m bench [--quick] [--only ROUTE[,ROUTE]]` (or `make bench ARGS=...`). See bench/README.md.
Every process it starts is its own child and is stopped by pid when the run ends, however it ends.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import shutil
import subprocess
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from bench import report
from bench.harness import TARGETS
from bench.http_runs import run_http
from bench.jobs import run_jobs
from bench.options import ROOT, Options, parse_args
from bench.processes import Proc, core_busy, log
from bench.profiling import run_memory_and_profile
from bench.stage import Stage


def run(stage: Stage) -> dict[str, Any]:
    opts = stage.opts
    started = time.monotonic()
    if opts.tmp.exists():
        shutil.rmtree(opts.tmp)
    opts.tmp.mkdir(parents=True)
    for old in opts.results.glob("profile-*"):
        old.unlink()
    check_machine(stage)
    results: dict[str, Any] = {"meta": meta(opts), "targets": dict(TARGETS)}
    stage.open()
    if opts.http_routes:
        http = section(stage, "http", lambda: run_http(stage)) or []
        results["http"] = http
        memory, profile = (
            section(stage, "memory", lambda: run_memory_and_profile(stage, http))
            or ({"status": "error", "reason": "error: see warnings"},) * 2
        )
        results["memory"], results["profile"] = memory, profile
    if "jobs" in opts.only:
        results["jobs"] = section(stage, "jobs", lambda: run_jobs(stage)) or {
            "status": "error",
            "reason": "error: see warnings",
        }
    results["meta"]["elapsed_s"] = round(time.monotonic() - started, 1)
    results["meta"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    results["warnings"] = stage.warnings
    results["verdicts"] = report.collect_verdicts(results)
    return results


def section(stage: Stage, name: str, step: Callable[[], Any]) -> Any:
    """Run one part of the bench; a failure is reported in the results, and the run goes on."""
    try:
        return step()
    except Exception as exc:  # a harness that stops half-way reports nothing at all
        trace = stage.opts.tmp / "logs" / f"error-{name}.log"
        trace.parent.mkdir(parents=True, exist_ok=True)
        trace.write_text(traceback.format_exc())
        stage.warnings.append(
            f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
            f"(traceback in {trace.relative_to(stage.opts.results)})"
        )
        log(f"{name} failed: {exc!r}")
        return None


def check_machine(stage: Stage) -> None:
    opts = stage.opts
    if (os.cpu_count() or 1) < 2:
        stage.warnings.append(
            "one core only: server and load generator share it, ratios still hold, absolute figures do not"
        )
        opts.server_core = opts.client_core = 0
    if shutil.which("taskset") is None:
        stage.warnings.append("taskset not found: processes are not pinned to cores")
    loaded = {core: share for core, share in core_busy(1.0).items() if share > 0.10}
    if loaded:
        stage.warnings.append(
            "the machine was busy before the run ("
            + ", ".join(f"core {c} {s:.0%}" for c, s in loaded.items())
            + " busy): figures are smoke checks only, not for the README"
        )
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {opts.client_core})  # this script (and wrk) stay off the server core


def meta(o: Options) -> dict[str, Any]:
    def dist(name: str) -> str:
        try:
            return version(name)
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
        "aiohttp": dist("aiohttp"),
        "uvloop": dist("uvloop"),
        "saq": dist("saq"),
        "redis_py": dist("redis"),
        "wrk": wrk_version,
        "server_core": o.server_core,
        "client_core": o.client_core,
        "load_before": [round(x, 2) for x in os.getloadavg()],
    }


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    stage = Stage(opts)
    try:
        results = run(stage)
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        Proc.stop_all()
        stage.close()
    md, js = report.write_results(results, opts.results)
    print()
    print(md.read_text())
    log(f"wrote {md.relative_to(ROOT) if md.is_relative_to(ROOT) else md} and {js.name}")
    return 0
