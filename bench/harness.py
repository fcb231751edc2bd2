"""The bench's pure logic: wrk output, medians and spreads, ratios, targets, profile summaries.

Nothing here starts a process or opens a socket, so tests/test_bench_harness.py checks it all
without load.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

# The targets (per core, uvloop, 64 connections).
TARGETS: dict[str, float] = {
    "http_ratio": 0.85,  # every route's requests/s at least this share of its bare baseline's
    "http_p99_ms": 10.0,  # p99 latency below this at 64 connections
    "jobs_ratio": 0.90,  # our worker's jobs/s at least this share of a raw SAQ worker's
    "rss_mb": 80.0,  # one web process's resident memory after the HTTP runs
}

MET, MISSED, UNKNOWN = "met", "missed", "n/a"

_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_DURATION_RE = re.compile(r"^\s*([0-9.]+)\s*(us|ms|s|m|h)\s*$")


class WrkParseError(ValueError):
    """wrk printed something without the figures we need (it failed, or its format changed)."""


def duration_ms(text: str) -> float:
    """wrk's '812.00us', '1.23ms', '2.00s' as milliseconds; raises WrkParseError."""
    match = _DURATION_RE.match(text)
    if not match:
        raise WrkParseError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS_MS[match.group(2)]


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    requests: int
    seconds: float
    non_2xx: int = 0
    socket_errors: int = 0

    @property
    def error_share(self) -> float:
        return (self.non_2xx + self.socket_errors) / self.requests if self.requests else 1.0


def parse_wrk(output: str) -> WrkResult:
    """Figures from `wrk --latency` output; raises WrkParseError when one is missing."""
    rps = re.search(r"^Requests/sec:\s*([0-9.]+)", output, re.M)
    total = re.search(r"^\s*(\d+) requests in ([0-9.]+\w+),", output, re.M)
    latencies = dict(re.findall(r"^\s*(50|75|90|99)%\s+(\S+)\s*$", output, re.M))
    if not rps or not total or "50" not in latencies or "99" not in latencies:
        raise WrkParseError("wrk output without Requests/sec, a request count or the latency distribution")
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    return WrkResult(
        requests_per_s=float(rps.group(1)),
        p50_ms=duration_ms(latencies["50"]),
        p99_ms=duration_ms(latencies["99"]),
        requests=int(total.group(1)),
        seconds=duration_ms(total.group(2)) / 1000,
        non_2xx=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(g) for g in errors.groups()) if errors else 0,
    )


@dataclass(frozen=True, slots=True)
class Spread:
    """A median with the smallest and largest value it was taken from."""

    median: float
    min: float
    max: float
    n: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def spread(values: Iterable[float]) -> Spread:
    """Median, min and max of the repetitions; raises ValueError on no values."""
    data = [float(v) for v in values]
    if not data:
        raise ValueError("no values")
    return Spread(statistics.median(data), min(data), max(data), len(data))


def pairwise_ratios(ours: Sequence[float], baseline: Sequence[float]) -> list[float]:
    """ours[i] / baseline[i] for runs made back to back, which cancels slow drift of the machine."""
    if len(ours) != len(baseline):
        raise ValueError(f"{len(ours)} runs of ours against {len(baseline)} of the baseline")
    return [o / b for o, b in zip(ours, baseline, strict=False) if b > 0]


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile (pct in 0..100) of a non-empty sequence."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(pct / 100 * len(ordered))))
    return ordered[rank - 1]


def verdict(ok: bool | None) -> str:
    return UNKNOWN if ok is None else MET if ok else MISSED


def http_targets(ratio: Spread | None, p99_ms: Spread | None, targets: Mapping[str, float] = TARGETS) -> dict[str, str]:
    """Per route: ratio of baseline and p99, judged on the medians."""
    return {
        "ratio": verdict(None if ratio is None else ratio.median >= targets["http_ratio"]),
        "p99": verdict(None if p99_ms is None else p99_ms.median < targets["http_p99_ms"]),
    }


def summarize_runs(runs: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> dict[str, dict[str, float]]:
    """{field: spread over runs} for the fields every run has."""
    return {f: spread(r[f] for r in runs).as_dict() for f in fields if runs and all(f in r for r in runs)}


# --- profiles ------------------------------------------------------------------------------


def _frame_name(frame: str) -> str:
    # py-spy's raw frames read "function (path/to/module.py:123)": keep function and file.
    match = re.match(r"^(.*?) \((.*?)(?::\d+)?\)$", frame.strip())
    if not match:
        return frame.strip()
    func, path = match.groups()
    return f"{func} ({shorten_path(path)})"


def shorten_path(path: str) -> str:
    """site-packages/aiohttp/web_protocol.py -> aiohttp/web_protocol.py; ours from server/ on."""
    if "site-packages/" in path:
        return path.split("site-packages/", 1)[1]
    stdlib = re.search(r"/lib/python3\.\d+/(.*)$", path)
    if stdlib:
        return stdlib.group(1)
    for marker in ("/server/", "/bench/"):
        if marker in path:
            return marker.strip("/") + "/" + path.split(marker, 1)[1]
    return path


def summarize_collapsed(text: str, top: int = 15) -> dict[str, Any]:
    """From py-spy's raw (collapsed) stacks: the hottest frames by self time and by package."""
    self_time: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    own_inclusive: Counter[str] = Counter()
    total = 0
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if f]
        if not frames:
            continue
        total += count
        leaf = _frame_name(frames[-1])
        self_time[leaf] += count
        by_package[package_of(leaf)] += count
        for name in {n for n in map(_frame_name, frames) if package_of(n) == "server"}:
            own_inclusive[name] += count

    def share(counter: Counter[str]) -> list[dict[str, Any]]:
        return [{"frame": name, "samples": n, "share": round(n / total, 4)} for name, n in counter.most_common(top)]

    return {
        "samples": total,
        "self": share(self_time),
        "packages": share(by_package),
        "own_inclusive": share(own_inclusive),
    }


def package_of(frame: str) -> str:
    """'handle (aiohttp/web_protocol.py)' -> 'aiohttp'; our code -> 'server'."""
    match = re.search(r"\(([^)]*)\)$", frame)
    if not match:
        return "other"
    path = match.group(1)
    head = path.split("/", 1)[0]
    if head.endswith(".py"):
        return "stdlib" if "/" not in path else head
    return head or "other"


def rss_mb_from_status(status_text: str) -> float:
    """VmRSS of a /proc/<pid>/status text, in MiB; raises ValueError when absent."""
    match = re.search(r"^VmRSS:\s*(\d+)\s*kB", status_text, re.M)
    if not match:
        raise ValueError("no VmRSS line")
    return int(match.group(1)) / 1024


def lua_body(script: str) -> str:
    """The request body a wrk lua script sends (`wrk.body = '...'`), so samples send the same."""
    match = re.search(r"^wrk\.body\s*=\s*'(.*)'\s*$", script, re.M)
    if not match:
        raise ValueError("no single-quoted wrk.body line")
    return match.group(1)
