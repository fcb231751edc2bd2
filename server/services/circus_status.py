"""Read circusd's watchers and processes from its control endpoint (for /internal/status)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any


class CircusUnavailable(Exception):
    """circusd does not answer on the configured endpoint (the app is not running under circus)."""


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    pid: int
    uptime_s: float
    cpu_percent: float
    rss: str
    mem_percent: float


@dataclass(frozen=True, slots=True)
class WatcherInfo:
    name: str
    status: str
    processes: list[ProcessInfo] = field(default_factory=list)


def _call(endpoint: str, timeout: float, message: dict[str, Any]) -> dict[str, Any]:
    from circus.client import CircusClient  # zmq: imported only when the page is asked for

    client = CircusClient(endpoint=endpoint, timeout=timeout)
    try:
        answer: dict[str, Any] = client.call(message)
    except Exception as exc:  # CallError on timeout, zmq errors on a bad endpoint
        raise CircusUnavailable(f"circusd does not answer on {endpoint}: {exc}") from None
    finally:
        client.stop()
    if answer.get("status") != "ok":
        raise CircusUnavailable(f"circusd answered {answer.get('status')}: {answer.get('reason')}")
    return answer


def _read(endpoint: str, timeout: float) -> list[WatcherInfo]:
    statuses = _call(endpoint, timeout, {"command": "status", "properties": {}})["statuses"]
    stats = _call(endpoint, timeout, {"command": "stats", "properties": {}}).get("infos", {})
    watchers = []
    for name in sorted(statuses):
        processes = []
        for pid, info in sorted((stats.get(name) or {}).items()):
            if not isinstance(info, dict):  # "No such process (stopped?)"
                continue
            processes.append(
                ProcessInfo(
                    pid=int(info.get("pid", pid)),
                    uptime_s=float(info.get("age", 0.0)),
                    cpu_percent=float(info.get("cpu", 0.0)),
                    rss=str(info.get("mem_info1", "?")),
                    mem_percent=float(info.get("mem", 0.0)),
                )
            )
        watchers.append(WatcherInfo(name=name, status=statuses[name], processes=processes))
    return watchers


async def read_circus_status(endpoint: str, timeout: float) -> list[WatcherInfo]:
    """Every watcher with its processes; raises CircusUnavailable. The zmq client runs off the loop."""
    return await asyncio.wait_for(asyncio.to_thread(_read, endpoint, timeout), timeout * 3)
