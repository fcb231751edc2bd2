"""Memory and profile: one web process of ours under every measured route, then py-spy on the slowest.

Memory is VmRSS of that process idle (1 s after it answers) and after 2 s of load per route. The
profile samples the same process (250 Hz, without pausing it) while wrk loads the route furthest
below its baseline; where py-spy cannot attach (no ptrace) the server runs under pyinstrument.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from bench import harness
from bench.harness import TARGETS, WrkParseError
from bench.http_runs import ours, prime_cache, serve, wrk
from bench.options import ROUTES, Route
from bench.processes import Proc, StartError, pinned
from bench.stage import PY, Stage
from testing.redis import free_port

MEMORY_RUN_S = 2  # seconds of load per route on the process whose memory is measured


def run_memory_and_profile(stage: Stage, http: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    opts = stage.opts
    measured = [e for e in http if e.get("status") == "ok"]
    routes = {r.name: r for r in ROUTES}
    if not measured:
        skipped = {"status": "skipped", "reason": "skipped: no HTTP route was measured"}
        return dict(skipped), dict(skipped)
    memory: dict[str, Any] = {"status": "ok"}
    target_name = opts.profile_route or min(measured, key=lambda e: e["ratio"]["median"])["name"]
    why = "chosen with --profile-route" if opts.profile_route else "the route furthest below its baseline"
    with serve(stage, ours(stage), "memory") as (proc, port):
        time.sleep(1.0)
        memory["idle_mb"] = proc.rss_mb()
        for entry in measured:
            route = routes[entry["name"]]
            if route.name == "baz":
                prime_cache(port, route)
            wrk(stage, port, route, min(opts.duration, MEMORY_RUN_S))
        memory["after_mb"] = proc.rss_mb()
        profile = py_spy(stage, proc, port, routes[target_name], why)
    after_runs = [r["rss_mb_after"] for e in measured for r in e["ours"]["runs"] if r.get("rss_mb_after")]
    memory["max_after_run_mb"] = max(after_runs) if after_runs else None
    memory["target"] = harness.verdict(None if memory["after_mb"] is None else memory["after_mb"] < TARGETS["rss_mb"])
    if profile.get("status") != "ok" and opts.profiler in ("auto", "pyinstrument"):
        profile = pyinstrument(stage, routes[target_name], why, profile.get("reason"))
    return memory, profile


def py_spy(stage: Stage, proc: Proc, port: int, route: Route, why: str) -> dict[str, Any]:
    opts = stage.opts
    if opts.profiler not in ("auto", "py-spy"):
        return {"status": "skipped", "reason": f"skipped: --profiler {opts.profiler}"}
    spy_path = shutil.which("py-spy") or str(Path(PY).parent / "py-spy")
    if not Path(spy_path).exists():
        return {"status": "skipped", "reason": "skipped: py-spy is not installed (pip install -e '.[bench]')"}
    files = []
    raw_text = ""
    # Raw stacks with full file names for the summary, then a flame graph to look at.
    for fmt, suffix, extra in (("raw", "txt", ["--full-filenames"]), ("flamegraph", "svg", [])):
        out = opts.results / f"profile-{route.name}.{suffix}"
        argv = [
            spy_path,
            "record",
            "--pid",
            str(proc.pid),
            "--duration",
            str(opts.duration),
            "--rate",
            "250",
            "--nonblocking",
            "--format",
            fmt,
            "--output",
            str(out),
            *extra,
        ]
        if route.name == "baz":
            prime_cache(port, route)
        spy = subprocess.Popen(pinned(opts.client_core, argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(0.3)  # let it attach before the load starts
        wrk(stage, port, route, opts.duration)
        spy_out = spy.communicate(timeout=opts.duration + 30)[0].decode(errors="replace")
        if spy.returncode != 0 or not out.exists():
            return {"status": "error", "reason": f"py-spy failed ({spy.returncode}): {spy_out.strip()[-300:]}"}
        files.append(out.name)
        if fmt == "raw":
            raw_text = out.read_text()
    summary = harness.summarize_collapsed(raw_text)
    (opts.results / f"profile-{route.name}-summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    files.append(f"profile-{route.name}-summary.json")
    return {
        "status": "ok",
        "route": route.label,
        "tool": "py-spy (250 Hz, all threads)",
        "why": why,
        "files": files,
        "summary": summary,
    }


def pyinstrument(stage: Stage, route: Route, why: str, reason: str | None) -> dict[str, Any]:
    """Fallback when py-spy cannot attach: our server run under pyinstrument, stopped with SIGINT."""
    opts = stage.opts
    port = free_port()
    out = opts.results / f"profile-{route.name}.html"
    argv = [PY, "-m", "pyinstrument", "--renderer", "html", "--outfile", str(out)]
    argv += ["-m", "server", "--config", str(stage.config_path), "serve", "--port", str(port)]
    proc = Proc("ours under pyinstrument", pinned(opts.server_core, argv), stage.log_file("ours-pyinstrument"))
    try:
        proc.start().wait_http(port)
        if route.name == "baz":
            prime_cache(port, route)
        wrk(stage, port, route, opts.duration)
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
