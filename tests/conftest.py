"""Shared fixtures: a throwaway redis-server per test session, a fresh SQLite file per test."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio
from support import make_test_config

from server.app import create_app
from server.config import Config
from server.log_context import install_log_record_factory
from server.metrics import setup_process_metrics
from testing.config import process_metrics_dir
from testing.redis import RedisProcess

# Fixture modules of their own per area, to keep this file small and merges easy.
pytest_plugins = [
    "fixtures_validation",
    "fixtures_honeybadger",
    "fixtures_data",
    "fixtures_cat_facts",
    "fixtures_jobs",
    "fixtures_auth",
]


def pytest_configure(config: pytest.Config) -> None:
    """As `python -m server` does, before anything (a test module's imports included) imports
    prometheus_client: this process's metrics write to the session's directory, which every
    test config names."""
    setup_process_metrics(make_test_config(database=process_metrics_dir() / "unused.db", redis_url="redis://x"))


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(process_metrics_dir(), ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def request_ids_in_log_records() -> None:
    """As `python -m server` does: every log record carries the request id."""
    install_log_record_factory()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisProcess]:
    """One redis-server on a free port for the whole session (never the developer's 6379)."""
    with RedisProcess() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> Iterator[str]:
    """The session Redis, emptied before each test."""
    client = redis.Redis.from_url(redis_server.url)
    try:
        client.flushall()
    finally:
        client.close()
    yield redis_server.url


@pytest.fixture(name="redis")
async def redis_client(redis_url: str) -> AsyncIterator[redis.asyncio.Redis]:
    """An asyncio client of the session Redis, for a test that looks at what was stored."""
    client = redis.asyncio.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def private_redis() -> Iterator[RedisProcess]:
    """A Redis of this test's own, which the test may stop and start."""
    with RedisProcess() as server:
        yield server


@pytest.fixture
def config(tmp_path, redis_url, database_url) -> Config:
    return make_test_config(database=tmp_path / "test.db", redis_url=redis_url, database_url=database_url)


@pytest.fixture
async def client(redis_url, aiohttp_client, config):
    # redis_url comes first so the server outlives the app's cleanup.
    return await aiohttp_client(create_app(config))
