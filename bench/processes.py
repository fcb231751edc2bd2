"""The processes a bench run starts: pinned to a core, logged to a file, stopped by their own pid.

Also the small HTTP client the bench samples answers with, and the machine checks (core load).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from bench import harness
from bench.options import ROOT
from testing.redis import free_port


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


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
        """Resident memory of the process, MiB (None once it is gone)."""
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


@contextlib.contextmanager
def http_server(
    name: str, argv_for_port: Any, log_path: Path, core: int | None, env: dict[str, str] | None = None
) -> Iterator[tuple[Proc, int]]:
    """Start `argv_for_port(port)` on a free port pinned to `core`, wait for GET /healthz, stop it after."""
    port = free_port()
    proc = Proc(name, pinned(core, argv_for_port(port)), log_path, env=env)
    try:
        proc.start().wait_http(port)
        yield proc, port
    finally:
        proc.stop()


def _children(pid: int) -> list[int]:
    found = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                found += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) used so far by `pid` and every process under it (gunicorn's worker)."""
    total, pending, tick = 0.0, [pid], os.sysconf("SC_CLK_TCK")
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError, ValueError, IndexError):
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        pending += _children(current)
    return total


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
