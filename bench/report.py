"""The results files: results.md (one table per section, every figure a median (min–max)) and results.json.

Pure functions of the results dict, so tests/test_bench_harness.py checks them without load.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.harness import MET, MISSED, TARGETS, UNKNOWN


def fmt_number(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def fmt_spread(s: Mapping[str, float] | None, digits: int = 0) -> str:
    """'12,345 (12,001–12,500)'; a single run shows no range."""
    if not s:
        return "–"
    if s.get("n", 1) <= 1 or s["min"] == s["max"]:
        return fmt_number(s["median"], digits)
    return f"{fmt_number(s['median'], digits)} ({fmt_number(s['min'], digits)}–{fmt_number(s['max'], digits)})"


def _mark(state: str) -> str:
    return {MET: "met", MISSED: "**missed**"}.get(state, state)


def _http_section(http: Sequence[Mapping[str, Any]], targets: Mapping[str, float]) -> list[str]:
    lines = [
        "## HTTP: ours against a bare aiohttp app doing the same work",
        "",
        f"Targets: requests/s at least {targets['http_ratio']:.2f} of the baseline's, "
        f"p99 under {targets['http_p99_ms']:g} ms.",
        "",
        "| route | app | requests/s | p50 ms | p99 ms | ours/baseline | ratio target | p99 target |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for route in http:
        label = f"`{route['method']} {route['path']}`"
        if route.get("status") != "ok":
            lines.append(f"| {label} | – | {route.get('reason', 'skipped')} | | | | | |")
            continue
        ours, base = route["ours"], route["baseline"]
        checks = route.get("targets", {})
        lines.append(
            f"| {label} | ours | {fmt_spread(ours.get('requests_per_s'))} | {fmt_spread(ours.get('p50_ms'), 2)} "
            f"| {fmt_spread(ours.get('p99_ms'), 2)} | {fmt_spread(route.get('ratio'), 2)} "
            f"| {_mark(checks.get('ratio', UNKNOWN))} | {_mark(checks.get('p99', UNKNOWN))} |"
        )
        lines.append(
            f"| | baseline | {fmt_spread(base.get('requests_per_s'))} | {fmt_spread(base.get('p50_ms'), 2)} "
            f"| {fmt_spread(base.get('p99_ms'), 2)} | | | |"
        )
    with_cpu = [r for r in http if r.get("status") == "ok" and r.get("cpu_ratio")]
    if with_cpu:
        lines += [
            "",
            "Server CPU per request (the process's own user + system time over the timed run, divided by "
            "its requests; much less moved by other load on the machine than requests/s):",
            "",
            "| route | ours CPU us/request | baseline CPU us/request | baseline/ours |",
            "| --- | ---: | ---: | ---: |",
        ]
        for route in with_cpu:
            lines.append(
                f"| `{route['method']} {route['path']}` | {fmt_spread(route['ours'].get('cpu_us_per_request'), 1)} "
                f"| {fmt_spread(route['baseline'].get('cpu_us_per_request'), 1)} "
                f"| {fmt_spread(route['cpu_ratio'], 2)} |"
            )
        lines.append("")
    with_floor = [r for r in http if r.get("status") == "ok" and r.get("floor_ratio")]
    if with_floor:
        lines += [
            "",
            "The floor: the bare app plus the least the contract asks of every request (an X-Request-ID, "
            "nosniff, the Host check, problem details, a count and latency bucket per route; "
            "`bench/baseline_app.py --contract-floor`), run in the same pairs. Its ratio to the bare app "
            "is what that work costs written plainly as one aiohttp middleware; ours/floor is what the "
            "rest of ours costs.",
            "",
            "| route | floor/baseline | ours/floor | ours/baseline |",
            "| --- | ---: | ---: | ---: |",
        ]
        for route in with_floor:
            lines.append(
                f"| `{route['method']} {route['path']}` | {fmt_spread(route['floor_ratio'], 2)} "
                f"| {fmt_spread(route.get('ours_floor_ratio'), 2)} | {fmt_spread(route.get('ratio'), 2)} |"
            )
        lines.append("")
    for route in http:
        for note in route.get("notes", []):
            lines.append(f"- `{route['method']} {route['path']}`: {note}")
    lines.append("")
    return lines


PEER_NAMES = {
    "ours": "ours (aiohttp, this project)",
    "baseline": "bare aiohttp",
    "floor": "bare aiohttp + the contract's per-request minimum",
    "fastapi": "FastAPI + uvicorn",
    "flask": "Flask + gunicorn (sync)",
}


def _peers_section(http: Sequence[Mapping[str, Any]]) -> list[str]:
    """Requests/s per core of ours, the bare baseline and each peer, on the routes the peers serve."""
    measured = [r for r in http if r.get("status") == "ok" and r.get("peers")]
    if not measured:
        return []
    kinds = ["ours", "baseline", *sorted({k for r in measured for k in r["peers"]}, key=list(PEER_NAMES).index)]
    lines = [
        "## Peers: requests/s on one core, same work, same run",
        "",
        "| route | " + " | ".join(PEER_NAMES.get(k, k) for k in kinds) + " |",
        "| --- |" + " ---: |" * len(kinds),
    ]
    for field, digits, title in (("requests_per_s", 0, None), ("cpu_us_per_request", 1, "server CPU us per request")):
        if title:
            lines += ["", f"The same runs, {title}:", "", lines[2], lines[3]]
        for route in measured:
            cells = []
            for kind in kinds:
                side = route.get(kind) if kind in ("ours", "baseline") else route["peers"].get(kind)
                cells.append(fmt_spread((side or {}).get(field), digits))
            lines.append(f"| `{route['method']} {route['path']}` | " + " | ".join(cells) + " |")
    lines.append("")
    return lines


def render_markdown(results: Mapping[str, Any]) -> str:
    """The human report: one table per section, every figure a median (min–max) of its runs."""
    meta = results.get("meta", {})
    targets = results.get("targets", TARGETS)
    lines = ["# Benchmark results", ""]
    lines.append(
        f"{meta.get('started', '?')} · {meta.get('mode', '?')} run: {meta.get('repetitions', '?')} repetition(s) "
        f"of {meta.get('duration_s', '?')} s after a {meta.get('warmup_s', '?')} s warm-up, "
        f"{meta.get('connections', '?')} connections, {meta.get('threads', '?')} wrk threads · "
        f"{meta.get('cpu', '?')} ({meta.get('cores', '?')} cores) · Python {meta.get('python', '?')}, "
        f"aiohttp {meta.get('aiohttp', '?')}, uvloop {meta.get('uvloop', '?')}, saq {meta.get('saq', '?')}, "
        f"{meta.get('wrk', 'wrk ?')} · server on core {meta.get('server_core', '?')}, "
        f"Redis with it, wrk on core {meta.get('client_core', '?')} · took {fmt_number(meta.get('elapsed_s'))} s"
    )
    lines.append("")
    for warning in results.get("warnings", []):
        lines.append(f"> **Warning:** {warning}")
        lines.append("")

    if "http" in results:
        lines += _http_section(results["http"], targets)
        lines += _peers_section(results["http"])

    jobs = results.get("jobs")
    if jobs is not None:
        lines += [
            "## Jobs: our worker against a raw SAQ worker (no-op jobs)",
            "",
            f"Target: jobs/s at least {targets['jobs_ratio']:.2f} of raw SAQ's.",
            "",
        ]
        if jobs.get("status") != "ok":
            lines.append(f"{jobs.get('reason', 'skipped')}")
        else:
            lines += [
                "| worker | jobs/s (bulk drain) | enqueue p50 ms | enqueue p99 ms "
                "| enqueue→complete p50 ms | enqueue→complete p99 ms | ours/raw | target |",
                "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
            ]
            for name in ("ours", "raw"):
                side = jobs.get(name) or {}
                if not side:
                    lines.append(f"| {name} | {jobs.get(name + '_reason', 'skipped')} | | | | | | |")
                    continue
                ratio = fmt_spread(jobs.get("ratio"), 2) if name == "ours" else ""
                mark = _mark(jobs.get("target", UNKNOWN)) if name == "ours" else ""
                lines.append(
                    f"| {name} | {fmt_spread(side.get('jobs_per_s'))} | {fmt_spread(side.get('enqueue_p50_ms'), 2)} "
                    f"| {fmt_spread(side.get('enqueue_p99_ms'), 2)} | {fmt_spread(side.get('e2c_p50_ms'), 2)} "
                    f"| {fmt_spread(side.get('e2c_p99_ms'), 2)} | {ratio} | {mark} |"
                )
        for note in jobs.get("notes", []):
            lines.append(f"- {note}")
        lines.append("")

    memory = results.get("memory")
    if memory is not None:
        lines += ["## Memory: one web process of ours", ""]
        if memory.get("status") != "ok":
            lines.append(f"{memory.get('reason', 'skipped')}")
        else:
            lines += [
                f"| state | RSS MB | target (< {targets['rss_mb']:g} MB after the runs) |",
                "| --- | ---: | --- |",
                f"| idle, after start-up | {fmt_number(memory.get('idle_mb'), 1)} | |",
                f"| after the HTTP runs | {fmt_number(memory.get('after_mb'), 1)} "
                f"| {_mark(memory.get('target', UNKNOWN))} |",
            ]
            if memory.get("max_after_run_mb") is not None:
                lines.append(f"| largest after any single timed run | {fmt_number(memory['max_after_run_mb'], 1)} | |")
        lines.append("")

    profile = results.get("profile")
    if profile is not None:
        lines += ["## Profile", ""]
        if profile.get("status") != "ok":
            lines.append(f"{profile.get('reason', 'skipped')}")
        else:
            files = ", ".join(f"`{f}`" for f in profile.get("files", []))
            lines.append(
                f"`{profile['route']}` under wrk, sampled by {profile.get('tool', '?')} "
                f"({profile.get('why', '')}): {files}."
            )
            lines += [
                "",
                "Self time in `run_app` is the event loop's own C code (uvloop: sockets, callbacks); "
                "frames in a worker thread (aiosqlite) ran beside the loop, not on it.",
            ]
            summary = profile.get("summary") or {}
            for title, key in (
                ("By package (self time)", "packages"),
                ("Hottest frames (self time)", "self"),
                ("Our code (inclusive)", "own_inclusive"),
            ):
                rows = summary.get(key) or []
                if not rows:
                    continue
                lines += ["", f"{title}:", "", "| frame | share |", "| --- | ---: |"]
                lines += [f"| `{r['frame']}` | {r['share'] * 100:.1f} % |" for r in rows]
        lines.append("")

    lines += ["## Targets", "", "| target | verdict |", "| --- | --- |"]
    for name, state in results.get("verdicts", {}).items():
        lines.append(f"| {name} | {_mark(state)} |")
    lines.append("")
    return "\n".join(lines)


def write_results(results: Mapping[str, Any], folder: Path) -> tuple[Path, Path]:
    """results.md and results.json in `folder`; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    md, js = folder / "results.md", folder / "results.json"
    md.write_text(render_markdown(results))
    js.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    return md, js


def collect_verdicts(results: Mapping[str, Any], targets: Mapping[str, float] = TARGETS) -> dict[str, str]:
    """One line per target, for the summary table and the exit message."""
    out: dict[str, str] = {}
    for route in results.get("http", []):
        label = f"{route['method']} {route['path']}"
        if route.get("status") != "ok":
            out[f"{label}: >= {targets['http_ratio']:.2f} of baseline, p99 < {targets['http_p99_ms']:g} ms"] = "skipped"
            continue
        checks = route.get("targets", {})
        out[f"{label}: >= {targets['http_ratio']:.2f} of baseline"] = checks.get("ratio", UNKNOWN)
        out[f"{label}: p99 < {targets['http_p99_ms']:g} ms"] = checks.get("p99", UNKNOWN)
    jobs = results.get("jobs")
    if jobs is not None:
        measured = jobs.get("status") == "ok" and jobs.get("ratio") is not None
        out[f"jobs: >= {targets['jobs_ratio']:.2f} of raw SAQ"] = jobs.get("target", UNKNOWN) if measured else "skipped"

    memory = results.get("memory")
    if memory is not None:
        out[f"web process < {targets['rss_mb']:g} MB RSS after the runs"] = (
            memory.get("target", UNKNOWN) if memory.get("status") == "ok" else "skipped"
        )
    return out
