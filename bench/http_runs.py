"""HTTP: each route of ours against the bare aiohttp baseline (and the peers), run after run, interleaved.

Every timed run starts a fresh server process pinned to the server core, waits for GET /healthz,
runs wrk for the warm-up and then for the timed run, and stops it. The ratio is taken per pair
of back-to-back runs (ours, then the baseline), so slow drift of the machine cancels.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis

from bench import harness
from bench.harness import TARGETS, WrkParseError, WrkResult, parse_wrk, spread
from bench.options import BENCH_DIR, Route
from bench.peers import PEER_ROUTES, Peer, available_peers
from bench.processes import StartError, cpu_seconds, http_request, http_server, log
from bench.stage import PY, Stage, ours_argv

BASELINE_BAZ_KEY = "bench:baseline:baz"


@dataclass(frozen=True, slots=True)
class App:
    """One server the bench can start: ours, the baseline or a peer."""

    kind: str
    argv: Callable[[int], list[str]]
    env: dict[str, str] | None = None


@dataclass
class Sample:
    status: int
    body: Any
    x_cache: str | None = None


def ours(stage: Stage) -> App:
    return App("ours", lambda port: ours_argv(stage.config_path, port))


def baseline(stage: Stage) -> App:
    def argv(port: int) -> list[str]:
        return [
            PY,
            str(BENCH_DIR / "baseline_app.py"),
            "--port",
            str(port),
            "--db",
            str(stage.db_path),
            "--redis-url",
            stage.redis_url,
            "--baz-key",
            BASELINE_BAZ_KEY,
        ]

    return App("baseline", argv)


def floor(stage: Stage) -> App:
    """The baseline plus the contract's per-request minimum (bench/baseline_app.py --contract-floor)."""
    bare = baseline(stage)
    return App("floor", lambda port: [*bare.argv(port), "--contract-floor"])


def peer_app(stage: Stage, peer: Peer) -> App:
    return App(peer.kind, peer.argv, env=peer.env(stage.db_path))


def serve(stage: Stage, app: App, label: str) -> Any:
    return http_server(
        f"{app.kind} server", app.argv, stage.log_file(f"{app.kind}-{label}"), stage.opts.server_core, env=app.env
    )


def wrk(stage: Stage, port: int, route: Route, seconds: int) -> tuple[WrkResult, str]:
    opts = stage.opts
    argv = ["wrk", f"-t{opts.threads}", f"-c{opts.connections}", f"-d{seconds}s", "--latency"]
    if route.script:
        argv += ["-s", str(BENCH_DIR / route.script)]
    argv.append(f"http://127.0.0.1:{port}{route.path}")
    if opts.client_core is not None and shutil.which("taskset"):
        argv = ["taskset", "-c", str(opts.client_core), *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    return parse_wrk(done.stdout), done.stdout


def sample(port: int, route: Route) -> Sample:
    body = harness.lua_body((BENCH_DIR / route.script).read_text()) if route.script else None
    resp = http_request(port, route.method, route.path, body)
    return Sample(resp.status, resp.json(), resp.headers.get("x-cache"))


def prime_cache(port: int, route: Route) -> tuple[bool, Sample]:
    """Make sure the next GET is a cache hit; True when a sample answered X-Cache: HIT."""
    first = sample(port, route)
    if first.status != 200 or first.x_cache is None:
        return False, first
    if first.x_cache.upper() == "HIT":
        return True, first
    second = sample(port, route)
    return second.x_cache is not None and second.x_cache.upper() == "HIT", second


def take_samples(stage: Stage, routes: list[Route], apps: list[App]) -> tuple[dict[str, dict[str, Sample]], dict]:
    """One answer of each app to each route (compared in the notes), and why a route cannot be run.

    Ours first: its primed baz answer is what the baseline's Redis key is set to.
    """
    samples: dict[str, dict[str, Sample]] = {app.kind: {} for app in apps}
    errors: dict[str, str] = {}
    for app in apps:
        wanted = [
            r for r in routes if r.name not in errors and (app.kind in ("ours", "baseline") or r.name in PEER_ROUTES)
        ]
        if not wanted:
            continue
        with serve(stage, app, "sample") as (_proc, port):
            for route in wanted:
                if app.kind == "ours" and route.name == "baz":
                    hit, got = prime_cache(port, route)
                    if not hit:
                        errors[route.name] = f"error: no cache hit (X-Cache: {got.x_cache or 'absent'} after priming)"
                        continue
                    set_baseline_baz(stage.redis_url, got.body)
                else:
                    got = sample(port, route)
                if got.status != 200 and app.kind in ("ours", "baseline", "floor"):
                    errors[route.name] = f"error: {app.kind} answered a sample request with {got.status}"
                    continue
                samples[app.kind][route.name] = got
    return samples, errors


def set_baseline_baz(redis_url: str, body: Any) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        client.set(BASELINE_BAZ_KEY, json.dumps(body))
    finally:
        client.close()


def timed_run(stage: Stage, app: App, route: Route, rep: int) -> dict[str, Any]:
    with serve(stage, app, f"{route.name}-{rep}") as (proc, port):
        notes: list[str] = []
        if app.kind == "ours" and route.name == "baz":
            hit, got = prime_cache(port, route)
            if not hit:
                notes.append(f"no cache hit before the run (X-Cache: {got.x_cache})")
        if stage.opts.warmup > 0:
            wrk(stage, port, route, stage.opts.warmup)
        cpu_before = cpu_seconds(proc.pid)
        result, _ = wrk(stage, port, route, stage.opts.duration)
        cpu_us = (cpu_seconds(proc.pid) - cpu_before) / max(result.requests, 1) * 1e6
        if app.kind == "ours" and route.name == "baz":
            after = sample(port, route)
            if (after.x_cache or "").upper() != "HIT":
                notes.append(f"X-Cache after the run: {after.x_cache}")
        run = {
            "requests_per_s": result.requests_per_s,
            "p50_ms": result.p50_ms,
            "p99_ms": result.p99_ms,
            # The server process's own CPU per request: far less moved by other load on the
            # machine than requests/s (Redis, on the same core, is not counted).
            "cpu_us_per_request": cpu_us,
            "requests": result.requests,
            "non_2xx": result.non_2xx,
            "socket_errors": result.socket_errors,
            "rss_mb_after": proc.rss_mb() if app.kind == "ours" else None,
        }
        if result.error_share > 0.001:
            notes.append(
                f"{app.kind}: {result.non_2xx} non-2xx answers and {result.socket_errors} socket errors "
                f"in {result.requests} requests"
            )
        run["notes"] = notes
        return run


def skipped(routes: list[Route], reason: str) -> list[dict[str, Any]]:
    return [{"name": r.name, "method": r.method, "path": r.path, "status": "skipped", "reason": reason} for r in routes]


def run_http(stage: Stage) -> list[dict[str, Any]]:
    routes = stage.opts.http_routes
    if not routes:
        return []
    if shutil.which("wrk") is None:
        return skipped(
            routes, "skipped: wrk is not installed (make bench installs it as root; else `sudo apt-get install -y wrk`)"
        )
    peers: list[App] = []
    if stage.opts.peers:
        found, reason = available_peers()
        peers = [peer_app(stage, p) for p in found]
        if reason:
            stage.warnings.append(reason)
    apps = [ours(stage), baseline(stage), floor(stage), *peers]
    try:
        samples, errors = take_samples(stage, routes, apps)
    except StartError as exc:
        stage.warnings.append(f"a server did not start: {exc}")
        return skipped(routes, "skipped: a server did not start (see warnings)")
    out: list[dict[str, Any]] = []
    for route in routes:
        entry: dict[str, Any] = {"name": route.name, "method": route.method, "path": route.path}
        out.append(entry)
        if route.name in errors:
            entry.update(status="error", reason=errors[route.name])
            log(f"{route.label}: {errors[route.name]}")
            continue
        runners = [a for a in apps if a.kind in ("ours", "baseline") or route.name in PEER_ROUTES]
        runs: dict[str, list[dict[str, Any]]] = {a.kind: [] for a in runners}
        try:
            for rep in range(stage.opts.repetitions):
                for app in runners:  # interleaved, so drift hits every app alike
                    run = timed_run(stage, app, route, rep)
                    runs[app.kind].append(run)
                    log(
                        f"{route.label} {app.kind:<8} rep {rep + 1}: {run['requests_per_s']:,.0f} req/s, "
                        f"p50 {run['p50_ms']:.2f} ms, p99 {run['p99_ms']:.2f} ms"
                    )
        except (StartError, WrkParseError, subprocess.TimeoutExpired) as exc:
            entry.update(status="error", reason=f"error: {str(exc).splitlines()[0]}")
            stage.warnings.append(f"{route.label}: {exc}")
            continue
        entry.update(summarize(route, runs, samples))
    return out


FIELDS = ("requests_per_s", "p50_ms", "p99_ms", "cpu_us_per_request")


def floor_ratios(runs: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Where the floor ran: floor/baseline (what the contract's per-request minimum leaves of the
    bare app) and ours/floor (what the rest of ours costs), by requests/s, pair by pair."""
    if not runs.get("floor"):
        return {}

    def rps(kind: str) -> list[float]:
        return [r["requests_per_s"] for r in runs[kind]]

    return {
        "floor_ratio": spread(harness.pairwise_ratios(rps("floor"), rps("baseline"))).as_dict(),
        "ours_floor_ratio": spread(harness.pairwise_ratios(rps("ours"), rps("floor"))).as_dict(),
    }


def summarize(route: Route, runs: dict[str, list[dict[str, Any]]], samples: dict[str, dict[str, Sample]]) -> dict:
    """A route's figures: each app's medians and ranges, ours/baseline pair by pair, notes."""
    ratio = spread(
        harness.pairwise_ratios(
            [r["requests_per_s"] for r in runs["ours"]], [r["requests_per_s"] for r in runs["baseline"]]
        )
    )
    notes = sorted({n for kind in runs for r in runs[kind] for n in r["notes"]})
    ours_sample = samples["ours"].get(route.name)
    for kind in runs:
        other = samples.get(kind, {}).get(route.name)
        if kind != "ours" and ours_sample and other and ours_sample.body != other.body:
            ours_text, other_text = json.dumps(ours_sample.body)[:160], json.dumps(other.body)[:160]
            notes.append(f"{kind}'s answer differs from ours: ours {ours_text}, {kind} {other_text}")
    return {
        "status": "ok",
        "ours": {**harness.summarize_runs(runs["ours"], FIELDS), "runs": runs["ours"]},
        "baseline": {**harness.summarize_runs(runs["baseline"], FIELDS), "runs": runs["baseline"]},
        "peers": {
            kind: {**harness.summarize_runs(r, FIELDS), "runs": r}
            for kind, r in runs.items()
            if kind not in ("ours", "baseline")
        },
        "ratio": ratio.as_dict(),
        # The same comparison by server CPU per request: baseline's / ours, pair by pair.
        "cpu_ratio": spread(
            harness.pairwise_ratios(
                [r["cpu_us_per_request"] for r in runs["baseline"]], [r["cpu_us_per_request"] for r in runs["ours"]]
            )
        ).as_dict(),
        "targets": harness.http_targets(ratio, spread(r["p99_ms"] for r in runs["ours"]), TARGETS),
        **floor_ratios(runs),
        "notes": notes,
    }
