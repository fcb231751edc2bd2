"""A local stand-in for the Cat Facts API (https://catfact.ninja/fact) whose behaviour each test sets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from server.helpers.redis_server import free_port

@dataclass
class FakeCatFacts:
    """Set `mode` to ok | error | malformed | missing | slow | drop_once; read `calls`."""

    url: str = ""
    mode: str = "ok"
    # Seconds an "ok" answer takes (so concurrent misses overlap); "slow" waits `slow_for`.
    delay: float = 0.0
    slow_for: float = 30.0
    status: int = 500
    calls: int = 0
    # Set at teardown so a "slow" handler does not hold the server's shutdown.
    released: asyncio.Event = field(default_factory=asyncio.Event)

    def fact(self, n: int) -> str:
        return f"Cat fact number {n}: cats sleep for around 16 hours a day."


FAKE_CAT_FACTS_KEY = web.AppKey("fake_cat_facts", FakeCatFacts)


async def serve_fact(request: web.Request) -> web.StreamResponse:
    fake = request.app[FAKE_CAT_FACTS_KEY]
    fake.calls += 1
    n = fake.calls
    mode = fake.mode
    if mode == "drop_once":
        fake.mode = "ok"
        assert request.transport is not None
        request.transport.abort()  # the client sees the connection reset, no answer
        return web.Response()
    if mode == "slow":
        try:
            await asyncio.wait_for(fake.released.wait(), fake.slow_for)
        except TimeoutError:
            pass
    if mode == "error":
        return web.json_response({"message": "upstream broke"}, status=fake.status)
    if mode == "malformed":
        return web.Response(text='{"fact": "Cats are', content_type="application/json")
    if mode == "missing":
        return web.json_response({"length": 3})
    if fake.delay:
        await asyncio.sleep(fake.delay)
    text = fake.fact(n)
    return web.json_response({"fact": text, "length": len(text)})


@pytest.fixture
async def fake_cat_facts(aiohttp_server) -> AsyncIterator[FakeCatFacts]:
    """The fake upstream on a free local port; `fake_cat_facts.url` is its fact endpoint."""
    fake = FakeCatFacts()
    app = web.Application()
    app[FAKE_CAT_FACTS_KEY] = fake
    app.router.add_get("/fact", serve_fact)
    server = await aiohttp_server(app)
    fake.url = str(server.make_url("/fact"))
    yield fake
    fake.released.set()


@pytest.fixture
def refused_cat_facts_url() -> str:
    """A URL on a local port nothing listens on: the connection is refused."""
    return f"http://127.0.0.1:{free_port()}/fact"
