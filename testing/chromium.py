"""Headless Chromium driven over the Chrome DevTools Protocol with aiohttp's websocket client.

No selenium or playwright: a page target's websocket takes JSON commands ({"id", "method",
"params"}) and sends back answers with the same id, and events. That is all a test of a page
needs: navigate, evaluate JavaScript, watch the network and the console.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

# Debian's package name first; Ubuntu's and Google's builds under their names (a CI runner).
CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Without the background-networking flags Chromium keeps calling Google's hosts, which a closed
# network refuses many times a second; as root it needs --no-sandbox.
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--mute-audio",
    "--no-default-browser-check",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)
_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


def find_chromium() -> str | None:
    """$CHROMIUM, or the first Chromium or Chrome on PATH."""
    named = os.environ.get("CHROMIUM")
    if named:
        return named if shutil.which(named) else None
    return next((path for name in CANDIDATES if (path := shutil.which(name))), None)


class CDPError(RuntimeError):
    pass


class Page:
    """One page target's protocol session."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(message.data)
            if "id" in data:
                future = self._pending.pop(data["id"], None)
                if future is not None and not future.done():
                    if "error" in data:
                        future.set_exception(CDPError(str(data["error"])))
                    else:
                        future.set_result(data.get("result", {}))
            else:
                self.events.append(data)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(CDPError("the browser closed the connection"))

    async def send(self, method: str, timeout: float = 30.0, **params: Any) -> Any:
        message_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        await self.ws.send_str(json.dumps({"id": message_id, "method": method, "params": params}))
        return await asyncio.wait_for(future, timeout)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (promises awaited); raises CDPError on a JS error."""
        result = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise CDPError(json.dumps(result["exceptionDetails"])[:2000])
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 20.0, what: str = "") -> Any:
        """Poll until the expression is truthy; its value. Fails with `what` after `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout} s waiting for {what or expression}")
            await asyncio.sleep(0.1)

    def requested_urls(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def console_errors(self) -> list[str]:
        errors = []
        for event in self.events:
            if event.get("method") == "Log.entryAdded" and event["params"]["entry"]["level"] == "error":
                errors.append(event["params"]["entry"].get("text", ""))
            elif event.get("method") == "Runtime.exceptionThrown":
                errors.append(json.dumps(event["params"]["exceptionDetails"])[:500])
            elif event.get("method") == "Runtime.consoleAPICalled" and event["params"]["type"] == "error":
                errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in event["params"]["args"]))
        return errors

    async def close(self) -> None:
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self.ws.close()


@contextlib.asynccontextmanager
async def chromium_page(binary: str, *, start_timeout: float = 30.0) -> AsyncIterator[Page]:
    """A fresh headless Chromium (its own profile, stopped by pid at the end) and its first page."""
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    proc = subprocess.Popen(
        [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    session = aiohttp.ClientSession()
    page: Page | None = None
    try:
        browser_ws = await asyncio.wait_for(asyncio.to_thread(_devtools_url, proc), start_timeout)
        http_base = "http://" + browser_ws.removeprefix("ws://").split("/", 1)[0]
        deadline = time.monotonic() + start_timeout
        while True:
            async with session.get(f"{http_base}/json/list") as resp:
                targets = [t for t in await resp.json() if t.get("type") == "page"]
            if targets:
                break
            if time.monotonic() > deadline:
                raise AssertionError("Chromium opened no page")
            await asyncio.sleep(0.1)
        ws = await session.ws_connect(targets[0]["webSocketDebuggerUrl"], max_msg_size=0)
        page = Page(ws)
        for domain in ("Page", "Runtime", "Network", "Log"):
            await page.send(f"{domain}.enable")
        yield page
    finally:
        if page is not None:
            await page.close()
        await session.close()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await asyncio.to_thread(proc.wait)
        shutil.rmtree(profile, ignore_errors=True)


def _devtools_url(proc: subprocess.Popen[bytes]) -> str:
    """Chromium prints its browser websocket on stderr once it listens."""
    assert proc.stderr is not None
    seen: list[str] = []
    for raw in proc.stderr:
        line = raw.decode(errors="replace")
        seen.append(line)
        match = _LISTENING.search(line)
        if match:
            # Keep reading stderr, or Chromium blocks once the pipe is full.
            threading.Thread(target=_drain, args=(proc.stderr,), daemon=True).start()
            return match.group(1)
    proc.stderr.close()
    raise AssertionError("Chromium exited before listening: " + "".join(seen[-20:]))


def _drain(stream: Any) -> None:
    with stream:
        for _ in stream:
            pass
