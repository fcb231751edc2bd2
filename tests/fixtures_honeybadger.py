"""Fixtures of the Honeybadger fake (testing/fakes.py): a collector on the test's loop."""

from __future__ import annotations

import pytest

from testing.fakes import FakeHoneybadger


@pytest.fixture
async def honeybadger_collector(aiohttp_server):
    collector = FakeHoneybadger()
    server = await aiohttp_server(collector.app())
    collector.url = str(server.make_url("")).rstrip("/")
    yield collector
    collector.release()  # a hanging notice must not hold the server's teardown
