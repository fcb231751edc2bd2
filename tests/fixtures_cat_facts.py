"""Fixtures of the Cat Facts fake (testing/fakes.py): one per test, on the test's loop."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from testing.fakes import FakeCatFacts
from testing.redis import free_port


@pytest.fixture
async def fake_cat_facts(aiohttp_server) -> AsyncIterator[FakeCatFacts]:
    """The fake upstream on a free local port; `fake_cat_facts.url` is its fact endpoint."""
    fake = FakeCatFacts()
    server = await aiohttp_server(fake.app())
    fake.url = str(server.make_url("/fact"))
    yield fake
    fake.released.set()


@pytest.fixture
def refused_cat_facts_url() -> str:
    """A URL on a local port nothing listens on: the connection is refused."""
    return f"http://127.0.0.1:{free_port()}/fact"
