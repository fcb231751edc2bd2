"""Benchmark: what a bearer token and the rate limiter cost on GET /api/v1/foo.

The real server (`python -m server serve`) runs in its own process with a throwaway redis-server,
both pinned to core 0, and `wrk` on core 1 (when taskset exists). Two server configs, started in
turn each round: rate limiting on (a default so high it never refuses, so every request makes
its Redis round trip) and off. In each, `wrk` loads foo anonymously and with a token made by
`python -m server token create`, alternating which goes first. Reported, as medians over rounds
of ratios taken within a round:

- token / anonymous, limits on and off (the issue's target: at least 0.9);
- limits on / limits off, anonymous (what the rate limiter's Redis round trip costs).

On a machine shared with other work the wrk figures swing widely; `--micro` measures the part
that differs in one process without HTTP or Redis: the CPU the bearer layer spends on an
anonymous request and on one with a cached token (best of 7 runs), to set against the CPU a
whole foo request costs.

    .venv/bin/python -m bench.auth [--rounds 3] [--seconds 4] [--connections 64]
    taskset -c 1 .venv/bin/python -m bench.auth --micro
    taskset -c 0 .venv/bin/python -m bench.auth --limiter   # client CPU per rate-limit decision
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from functools import partial
from pathlib import Path

from bench.processes import cpu_seconds, http_server, pinned
from bench.stage import ours_argv, write_bench_config
from testing.redis import RedisProcess

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PATH = "/api/v1/foo"
SERVER_CORE, LOAD_CORE = 0, 1


def write_config(path: Path, db: Path, redis_url: str, *, limits: bool) -> Path:
    """Settings only: the bench's database and Redis, quiet logs, limits on (never reached) or off."""
    limit = {"enabled": limits, "default": "999999999/s", "default_burst": 999999999}
    return write_bench_config(path, db=db, redis_url=redis_url, rate_limit=limit)


def make_token(config: Path) -> str:
    done = subprocess.run(
        [PY, "-m", "server", "--config", str(config), "token", "create", "--name", "bench"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


@contextmanager
def server(config: Path) -> Iterator[tuple[str, int]]:
    """Our server on `config`, pinned to SERVER_CORE: its base URL and pid (log beside the config)."""

    with http_server("ours", partial(ours_argv, config), config.with_suffix(".log"), SERVER_CORE) as (proc, port):
        yield f"http://127.0.0.1:{port}", proc.pid


def wrk(url: str, seconds: int, connections: int, token: str | None) -> tuple[float, int]:
    headers = ["-H", f"Authorization: Bearer {token}"] if token else []
    argv = pinned(LOAD_CORE, ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", *headers, url])
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    if "Non-2xx" in out:
        raise SystemExit(f"non-2xx answers from {url}:\n{out}")
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    if rate is None or total is None:
        raise SystemExit(f"wrk printed no rate:\n{out}")
    return float(rate.group(1)), int(total.group(1))


class _StubDatabase:
    """Answers the one token lookup and swallows last-used writes: the micro run measures the
    middleware, not SQLite."""

    def __init__(self, row: tuple[object, ...]) -> None:
        self.row = row

    async def fetchone(self, sql: str, params: object = ()) -> tuple[object, ...]:
        return self.row

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[_StubDatabase]:
        yield self

    async def executemany(self, sql: str, rows: object) -> None:
        return None


async def micro(requests: int = 100_000, runs: int = 7) -> None:
    from aiohttp import web
    from aiohttp.test_utils import make_mocked_request

    from server.auth.grants import TokenGrants
    from server.config import AuthConfig
    from server.keys import GRANTS_KEY, IDENTITY_KEY
    from server.middlewares.bearer import bearer_layer
    from server.models.api_token import generate_token
    from server.routing.chain import Route
    from server.routing.meta import RouteMeta

    bearer = generate_token()
    row = (1, "bench", "", "2026-01-01T00:00:00.000Z", None, None, None)
    app = web.Application()
    app[GRANTS_KEY] = TokenGrants(_StubDatabase(row), AuthConfig())  # type: ignore[arg-type]

    async def get_foo(request: web.Request) -> web.Response:
        return web.Response()

    app.router.add_get(PATH, get_foo)
    chain = bearer_layer(AuthConfig())(Route("GET", PATH, RouteMeta()), get_foo)
    best: dict[str, float] = {}
    for _ in range(runs):
        for who, headers in (("anonymous", {}), ("token", {"Authorization": f"Bearer {bearer}"})):
            match_info = await app.router.resolve(make_mocked_request("GET", PATH, headers=headers))
            match_info.add_app(app)
            match_info.freeze()
            request = make_mocked_request("GET", PATH, headers=headers, app=app, match_info=match_info)
            started = time.process_time()
            for _ in range(requests):
                request.pop(IDENTITY_KEY, None)  # as a new request: identified again
                await chain(request)
            used = (time.process_time() - started) / requests * 1e6
            best[who] = min(best.get(who, used), used)
    for who, used in best.items():
        print(f"bearer layer, {who:9}: {used:5.2f} us CPU a request (best of {runs})")
    print(f"a cached token costs {best['token'] - best['anonymous']:.2f} us more than no token")


async def limiter_cost(url: str, count: int = 6400) -> None:
    """Client CPU per decision: one at a time, 64 at once (batched in a pipeline), and a plain GET."""
    from redis.asyncio import Redis

    from server.auth.limiter import RateLimiter
    from server.auth.policy import parse_rate

    redis = Redis.from_url(url)
    limiter = RateLimiter(redis, prefix="bench", timeout=5.0, retry_interval=1.0)
    rate = parse_rate("999999999/s", burst=999999999, name="bench")
    for _ in range(200):
        await limiter.hit("ip:1", rate)
    started = time.process_time()
    for _ in range(count):
        await limiter.hit("ip:1", rate)
    alone = (time.process_time() - started) / count * 1e6
    trips = limiter.round_trips
    started = time.process_time()
    for _ in range(count // 64):
        await asyncio.gather(*(limiter.hit("ip:1", rate) for _ in range(64)))
    together = (time.process_time() - started) / count * 1e6
    per_trip = count / (limiter.round_trips - trips)
    started = time.process_time()
    for _ in range(count):
        await redis.get("bench:nothing")
    get = (time.process_time() - started) / count * 1e6
    await redis.aclose()
    print(f"rate-limit decision, one at a time: {alone:6.1f} us client CPU")
    print(f"rate-limit decision, 64 at once:    {together:6.1f} us client CPU ({per_trip:.0f} a round trip)")
    print(f"plain GET, one at a time:           {get:6.1f} us client CPU")


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=4)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--micro", action="store_true", help="the bearer layer alone, in this process")
    parser.add_argument("--limiter", action="store_true", help="client CPU per rate-limit decision")
    args = parser.parse_args()
    if args.micro:
        asyncio.run(micro())
        return 0
    if args.limiter:
        with RedisProcess() as redis:
            asyncio.run(limiter_cost(redis.url))
        return 0
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is needed (apt-get install wrk)")

    tmp = Path(tempfile.mkdtemp(prefix="bench-auth-"))
    rates: dict[tuple[bool, str], list[float]] = {}
    cpu_us: dict[tuple[bool, str], list[float]] = {}
    try:
        with RedisProcess() as redis:
            if shutil.which("taskset") and redis.proc is not None:
                subprocess.run(["taskset", "-pc", str(SERVER_CORE), str(redis.proc.pid)], capture_output=True)
            configs = {
                limits: write_config(tmp / f"config-{limits}.yaml", tmp / "bench.db", redis.url, limits=limits)
                for limits in (True, False)
            }
            bearer = make_token(configs[True])
            for n in range(args.rounds):
                for limits in (True, False):
                    with server(configs[limits]) as (base, pid):
                        url = base + PATH
                        wrk(url, 1, args.connections, bearer)  # warm-up: the token is cached from here on
                        order = [("anonymous", None), ("token", bearer)]
                        for who, sent in order if n % 2 == 0 else reversed(order):
                            before = cpu_seconds(pid)
                            rps, total = wrk(url, args.seconds, args.connections, sent)
                            used = (cpu_seconds(pid) - before) / total * 1e6
                            rates.setdefault((limits, who), []).append(rps)
                            cpu_us.setdefault((limits, who), []).append(used)
                            state = "on " if limits else "off"
                            print(f"round {n + 1} limits {state} {who:9} {rps:9.0f} req/s {used:6.1f} us CPU/request")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    def ratio(values: list[float]) -> str:
        return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f})"

    def by_rate(top: tuple[bool, str], bottom: tuple[bool, str]) -> str:
        return ratio([a / b for a, b in zip(rates[top], rates[bottom], strict=True)])

    def by_cpu(top: tuple[bool, str], bottom: tuple[bool, str]) -> str:  # less CPU is faster
        return ratio([b / a for a, b in zip(cpu_us[top], cpu_us[bottom], strict=True)])

    print()
    for limits in (True, False):
        for who in ("anonymous", "token"):
            rps = statistics.median(rates[(limits, who)])
            used = statistics.median(cpu_us[(limits, who)])
            print(f"median limits {'on ' if limits else 'off'} {who:9} {rps:9.0f} req/s {used:6.1f} us CPU/request")
    for label, top, bottom in (
        ("token / anonymous, limits on ", (True, "token"), (True, "anonymous")),
        ("token / anonymous, limits off", (False, "token"), (False, "anonymous")),
        ("limits on / off, anonymous   ", (True, "anonymous"), (False, "anonymous")),
        ("limits on / off, token       ", (True, "token"), (False, "token")),
    ):
        print(f"{label}: {by_rate(top, bottom)} by requests/s, {by_cpu(top, bottom)} by server CPU per request")
    print(f"cpu count {os.cpu_count()}, {args.rounds} rounds of {args.seconds} s, {args.connections} connections")
    return 0


if __name__ == "__main__":
    sys.exit(main())
