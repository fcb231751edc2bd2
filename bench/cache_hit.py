"""Benchmark: a cache HIT on GET /api/v1/baz against a bare handler doing one Redis GET.

Both routes sit one sub-app deep behind the same middlewares (/api/v1/baz, /bench/bare); the
server runs in its own process on uvloop with a throwaway redis-server, and `wrk` loads each
route in alternating rounds. Reported per route: requests/s and the server process's CPU time per request; the
ratio is HIT / bare (>= 0.85 wanted).

    .venv/bin/python bench/cache_hit.py [--rounds 3] [--seconds 5] [--connections 64]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FACT = "Cats sleep for around sixteen hours a day, which is two thirds of their lives."


def serve(port: int, redis_url: str, db_path: str) -> None:
    """The server process: the real app plus /bench/bare and a local fact endpoint."""
    import asyncio

    from aiohttp import web
    from support import make_test_config

    from server.__main__ import new_event_loop
    from server.app import create_app
    from server.keys import API_VERSION_KEY, REDIS_KEY
    from server.middlewares.cache import cache
    from server.middlewares.validation import validation

    config = make_test_config(
        database=Path(db_path),
        redis_url=redis_url,
        logging={"level": "WARNING"},
        cat_facts={"url": f"http://127.0.0.1:{port}/_fact", "timeout": 5.0},
        cache={"default_ttl": 3600},
    )
    app = create_app(config)

    async def get_bench_bare(request: web.Request) -> web.Response:
        value = await request.config_dict[REDIS_KEY].get("bench:fact")
        return web.json_response({"fact": value.decode()})

    async def get_fact(request: web.Request) -> web.Response:
        return web.json_response({"fact": FACT, "length": len(FACT)})

    async def fill_redis(app: web.Application) -> None:
        await app[REDIS_KEY].set("bench:fact", FACT)

    bench = web.Application(middlewares=[cache, validation])  # as the API versions have
    bench[API_VERSION_KEY] = 1
    bench.router.add_get("/bare", get_bench_bare)
    app.add_subapp("/bench", bench)
    app.router.add_get("/_fact", get_fact)
    app.on_startup.append(fill_redis)
    loop = new_event_loop()
    asyncio.set_event_loop(loop)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=loop)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, seconds: int, connections: int) -> tuple[float, int]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    if "Non-2xx" in out:
        raise SystemExit(f"non-2xx answers from {url}:\n{out}")
    return rps, total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--serve", nargs=3, metavar=("PORT", "REDIS_URL", "DB"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(int(args.serve[0]), args.serve[1], args.serve[2])
        return 0
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed (apt-get install wrk)")

    from testing.redis import RedisProcess, free_port

    tmp = tempfile.mkdtemp(prefix="bench-cache-")
    port = free_port()
    env = dict(os.environ, PYTHONPATH=f"{ROOT / 'tests'}:{ROOT}")
    with RedisProcess() as redis:
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(port), redis.url, f"{tmp}/bench.db"], env=env
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 20
            while True:
                try:
                    urllib.request.urlopen(f"{base}/healthz", timeout=1).read()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            with urllib.request.urlopen(f"{base}/api/v1/baz") as resp:  # fills the entry
                json.loads(resp.read())
            with urllib.request.urlopen(f"{base}/api/v1/baz") as resp:
                assert resp.headers["X-Cache"] == "HIT", resp.headers["X-Cache"]
            routes = {"bare": f"{base}/bench/bare", "hit": f"{base}/api/v1/baz"}
            for url in routes.values():
                wrk(url, 1, args.connections)  # warm-up
            results: dict[str, list[tuple[float, float]]] = {name: [] for name in routes}
            for n in range(args.rounds):
                # Alternate which route goes first, so a change in the machine's load hits both.
                for name, url in sorted(routes.items(), reverse=n % 2 == 1):
                    before = cpu_seconds(server.pid)
                    rps, total = wrk(url, args.seconds, args.connections)
                    cpu_us = (cpu_seconds(server.pid) - before) / total * 1e6
                    results[name].append((rps, cpu_us))
                    print(f"{name:5} {rps:9.0f} req/s  {cpu_us:6.1f} us server CPU per request")
        finally:
            server.terminate()
            server.wait(10)
            shutil.rmtree(tmp, ignore_errors=True)
    rps = {name: statistics.median(r for r, _ in rows) for name, rows in results.items()}
    cpu = {name: statistics.median(c for _, c in rows) for name, rows in results.items()}
    for name in routes:
        print(f"median {name:5} {rps[name]:9.0f} req/s  {cpu[name]:6.1f} us server CPU per request")
    print(f"HIT / bare: {rps['hit'] / rps['bare']:.2f} by throughput, {cpu['bare'] / cpu['hit']:.2f} by server CPU")
    return 0


if __name__ == "__main__":
    sys.exit(main())
