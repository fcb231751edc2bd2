"""Configs for tests and benchmarks: built like config.yaml's, pointed at throwaway services."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from server.config import Config, build_config


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


_metrics_dir: Path | None = None


def process_metrics_dir() -> Path:
    """A temporary metrics directory for this test or bench process: prometheus_client writes to
    one directory per process (server/metrics.py), so every config of the process names it."""
    global _metrics_dir
    if _metrics_dir is None:
        _metrics_dir = Path(tempfile.mkdtemp(prefix="test-metrics-"))
    return _metrics_dir


def make_test_config(*, database: Path, redis_url: str, database_url: str = "", **overrides: Any) -> Config:
    """A Config for one test: its own SQLite file (or PostgreSQL database), the throwaway Redis, no
    embedded worker, no rate limits (the tests of them turn them on)."""
    raw: dict[str, Any] = {
        "server": {"access_log": False},
        "logging": {"level": "DEBUG"},
        "metrics": {"dir": str(process_metrics_dir())},
        "database": {"path": str(database), "url": database_url},
        "redis": {"url": redis_url},
        "queue": {"embedded_worker": False},
        "cat_facts": {"url": "http://127.0.0.1:9/fact", "timeout": 2.0},
        "honeybadger": {"api_key": "", "environment": "test", "endpoint": "http://127.0.0.1:9"},
        "rate_limit": {"enabled": False},
    }
    return build_config(deep_merge(raw, overrides))
