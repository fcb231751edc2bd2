"""Configs for tests and benchmarks: built like config.yaml's, pointed at throwaway services."""

from __future__ import annotations

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


def make_test_config(*, database: Path, redis_url: str, database_url: str = "", **overrides: Any) -> Config:
    """A Config for one test: its own SQLite file (or PostgreSQL database), the throwaway Redis, no embedded worker."""
    raw: dict[str, Any] = {
        "server": {"access_log": False},
        "logging": {"level": "DEBUG"},
        "database": {"path": str(database), "url": database_url},
        "redis": {"url": redis_url},
        "queue": {"embedded_worker": False},
        "cat_facts": {"url": "http://127.0.0.1:9/fact", "timeout": 2.0},
        "honeybadger": {"api_key": "", "environment": "test", "endpoint": "http://127.0.0.1:9"},
    }
    return build_config(deep_merge(raw, overrides))
