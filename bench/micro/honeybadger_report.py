"""What error reporting costs the event loop: per-report capture time, and /api/v1/fail latency
and loop lag with a healthy and with a hung Honeybadger collector.

    .venv/bin/python -m bench.micro.honeybadger_report [--requests 200]

Needs no Redis (the routes used do not touch it) and writes a throwaway SQLite file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import aiohttp
from aiohttp import web

from server.app import create_app
from server.keys import REPORTER_KEY
from server.middlewares.reporting import report_request_error
from testing.config import make_test_config
from testing.fakes import FakeHoneybadger


async def serve(app: web.Application) -> tuple[web.AppRunner, str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]


def pct(values: list[float], q: float) -> float:
    return sorted(values)[min(len(values) - 1, int(q * len(values)))]


def collector_thread(hang: float) -> tuple[FakeHoneybadger, asyncio.AbstractEventLoop]:
    """The collector on a loop of its own, so its work does not count against the app's loop."""
    loop = asyncio.new_event_loop()
    collector = FakeHoneybadger()
    collector.hang(hang)
    started = threading.Event()

    def main() -> None:
        asyncio.set_event_loop(loop)
        _runner, collector.url = loop.run_until_complete(serve(collector.app()))
        started.set()
        loop.run_forever()

    threading.Thread(target=main, daemon=True).start()
    started.wait()
    return collector, loop


async def run(requests: int, hang: float, tmp: Path) -> None:
    collector, collector_loop = collector_thread(hang)
    config = make_test_config(
        database=tmp / f"bench-{hang}.db",
        redis_url="redis://127.0.0.1:9/0",
        honeybadger=collector.honeybadger_config(timeout=5.0, max_backlog=100_000, flush_timeout=1.0),
    )
    app = create_app(config)
    reporter_cost: list[float] = []

    async def capture(request: web.Request) -> web.Response:
        reporter = request.config_dict[REPORTER_KEY]
        try:
            {}["x"]
        except KeyError as exc:
            start = time.perf_counter()
            for _ in range(1000):
                report_request_error(reporter, request, exc)
            reporter_cost.append((time.perf_counter() - start) / 1000)
        return web.json_response({})

    app.router.add_get("/capture", capture)
    runner, base = await serve(app)
    loop = asyncio.get_running_loop()
    lags = [0.0]

    async def tick() -> None:
        while True:
            t = loop.time()
            await asyncio.sleep(0.005)
            lags.append(loop.time() - t - 0.005)

    ticker = asyncio.create_task(tick())
    latencies = []
    async with aiohttp.ClientSession() as http:
        for _ in range(requests):
            t = time.perf_counter()
            async with http.get(f"{base}/api/v1/fail") as resp:
                await resp.read()
            latencies.append(time.perf_counter() - t)
        if hang == 0:
            while len(collector.notices) < requests:
                await asyncio.sleep(0.01)
        ticker.cancel()  # the capture loop below blocks the loop on purpose
        async with http.get(f"{base}/capture") as resp:
            await resp.read()
    stats = app[REPORTER_KEY].stats()
    t = time.perf_counter()
    await runner.cleanup()
    shutdown = time.perf_counter() - t
    collector_loop.call_soon_threadsafe(collector.release)
    ms = 1000
    print(
        f"collector {'hung ' + str(hang) + ' s' if hang else 'healthy'}: {requests} x /api/v1/fail "
        f"p50 {statistics.median(latencies) * ms:.2f} ms, p99 {pct(latencies, 0.99) * ms:.2f} ms, "
        f"max {max(latencies) * ms:.2f} ms; loop lag max {max(lags) * ms:.2f} ms; "
        f"capture+enqueue {reporter_cost[0] * 1e6:.1f} us/report; shutdown {shutdown:.2f} s; "
        f"received {len(collector.notices)}; {stats}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    # Log as the server does (tracebacks are formatted on the loop), but not to the terminal.
    logging.basicConfig(level=logging.INFO, stream=open(os.devnull, "w"))  # noqa: SIM115 (open for the whole run)
    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(args.requests, 0, Path(tmp)))
        asyncio.run(run(args.requests, 30, Path(tmp)))


if __name__ == "__main__":
    main()
