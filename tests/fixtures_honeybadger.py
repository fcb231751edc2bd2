"""A fake Honeybadger collector: records POSTs to /v1/notices/ and can hang, like a sick endpoint."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import pytest
from aiohttp import web

API_KEY = "test-api-key"


@dataclass
class Received:
    headers: dict[str, str]
    payload: dict[str, Any]


class FakeHoneybadger:
    """Runs on the test's own event loop: the reporter sends from its thread, never from the loop."""

    def __init__(self) -> None:
        self.notices: list[Received] = []
        self.hang_seconds = 0.0
        self._release = asyncio.Event()
        self.url = ""  # set once the server listens

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/notices/", self._notice)
        return app

    async def _notice(self, request: web.Request) -> web.Response:
        payload = await request.json()
        self.notices.append(Received(dict(request.headers), payload))
        if self.hang_seconds:
            try:
                await asyncio.wait_for(self._release.wait(), self.hang_seconds)
            except TimeoutError:
                pass
        if request.headers.get("X-Api-Key") != API_KEY:
            return web.json_response({"error": "Invalid API key"}, status=403)
        return web.json_response({"id": payload["error"]["token"]}, status=201)

    def hang(self, seconds: float) -> None:
        """From now on every notice is answered only after `seconds` (or at teardown)."""
        self.hang_seconds = seconds

    def release(self) -> None:
        self._release.set()

    async def wait_for(self, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        """The payloads once at least `count` notices have arrived; fails after `timeout` s."""
        deadline = time.monotonic() + timeout
        while len(self.notices) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"expected {count} notices, got {len(self.notices)} in {timeout}s")
            await asyncio.sleep(0.01)
        return [n.payload for n in self.notices]

    def honeybadger_config(self, **overrides: Any) -> dict[str, Any]:
        """The `honeybadger` config section that reports here."""
        section: dict[str, Any] = {
            "api_key": API_KEY,
            "environment": "test",
            "force_report_data": True,
            "endpoint": self.url,
            "timeout": 5.0,
            "flush_timeout": 2.0,
        }
        section.update(overrides)
        return section


@pytest.fixture
async def honeybadger_collector(aiohttp_server):
    collector = FakeHoneybadger()
    server = await aiohttp_server(collector.app())
    collector.url = str(server.make_url("")).rstrip("/")
    yield collector
    collector.release()  # a hanging notice must not hold the server's teardown
