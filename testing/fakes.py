"""Local stand-ins for the third parties (Cat Facts, Honeybadger), as small aiohttp apps the config points at."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from testing.redis import free_port

HONEYBADGER_API_KEY = "test-api-key"


@dataclass
class FakeCatFacts:
    """The Cat Facts API (https://catfact.ninja/fact) whose behaviour a test sets.

    Set `mode` to ok | error | malformed | missing | slow | drop_once; read `calls`.
    """

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

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/fact", self._serve_fact)
        return app

    async def _serve_fact(self, request: web.Request) -> web.StreamResponse:
        self.calls += 1
        n = self.calls
        mode = self.mode
        if mode == "drop_once":
            self.mode = "ok"
            assert request.transport is not None
            request.transport.abort()  # the client sees the connection reset, no answer
            return web.Response()
        if mode == "slow":
            try:
                await asyncio.wait_for(self.released.wait(), self.slow_for)
            except TimeoutError:
                pass
        if mode == "error":
            return web.json_response({"message": "upstream broke"}, status=self.status)
        if mode == "malformed":
            return web.Response(text='{"fact": "Cats are', content_type="application/json")
        if mode == "missing":
            return web.json_response({"length": 3})
        if self.delay:
            await asyncio.sleep(self.delay)
        text = self.fact(n)
        return web.json_response({"fact": text, "length": len(text)})


@dataclass
class Received:
    headers: dict[str, str]
    payload: dict[str, Any]


class FakeHoneybadger:
    """A Honeybadger collector: records POSTs to /v1/notices/ and can hang, like a sick endpoint.

    The reporter sends from its own thread, so this may run on the test's event loop.
    """

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
        if request.headers.get("X-Api-Key") != HONEYBADGER_API_KEY:
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
            "api_key": HONEYBADGER_API_KEY,
            "environment": "test",
            "force_report_data": True,
            "endpoint": self.url,
            "timeout": 5.0,
            "flush_timeout": 2.0,
        }
        section.update(overrides)
        return section


class ThreadedServer:
    """Serves an aiohttp app on loopback from a loop in a daemon thread, for code without a loop (the bench)."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.port = free_port()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-server", daemon=True)
        self._runner: web.AppRunner | None = None

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self) -> ThreadedServer:
        async def setup() -> None:
            self._runner = web.AppRunner(self.app, access_log=None)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

        self._thread.start()
        asyncio.run_coroutine_threadsafe(setup(), self._loop).result(10)
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
