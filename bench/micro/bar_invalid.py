"""What an invalid POST /api/v1/bar costs against a valid one of the same size (1 KiB and 1 MiB).

Run: .venv/bin/python -m bench.micro.bar_invalid [--requests N]

The whole app runs in-process (its own throwaway Redis and SQLite file); each body is posted N
times in a row and the median and p99 time per request are printed, with the ratio
invalid/valid per size. The invalid bodies are the issue's: `world` holds integers where objects
belong, one violation per item (about 500,000 at 1 MiB), of which the answer lists the first
`server.max_violations` (50). Before the bound, the 1 MiB one took seconds and answered 36 MB.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from server.app import create_app
from testing.config import make_test_config
from testing.redis import RedisProcess

KIB, MIB = 1024, 1024 * 1024
_ENVELOPE = len(b'{"hello":"x","world":[]}')


def invalid_body(size: int) -> bytes:
    """`world` of integers: every item violates `type: object`."""
    return json.dumps({"hello": "x", "world": [1] * ((size - _ENVELOPE) // 2)}, separators=(",", ":")).encode()


def valid_body(size: int) -> bytes:
    item = {"color": "c"}
    count = (size - _ENVELOPE) // (len(json.dumps(item, separators=(",", ":"))) + 1)
    return json.dumps({"hello": "x", "world": [item] * count}, separators=(",", ":")).encode()


async def timings(session: ClientSession, url: str, body: bytes, requests: int) -> tuple[list[float], int, int]:
    """Seconds per request, the status and the answer's size."""
    headers = {"Content-Type": "application/json"}
    times, status, size = [], 0, 0
    for _ in range(requests):
        started = time.perf_counter()
        async with session.post(url, data=body, headers=headers) as resp:
            answer = await resp.read()
        times.append(time.perf_counter() - started)
        status, size = resp.status, len(answer)
    return times, status, size


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * 0.99) - 1)]


async def run(requests: int) -> None:
    with RedisProcess() as redis, tempfile.TemporaryDirectory() as tmp:
        config = make_test_config(database=Path(tmp) / "bench.db", redis_url=redis.url, logging={"level": "WARNING"})
        server = TestServer(create_app(config))
        await server.start_server()
        url = str(server.make_url("/api/v1/bar"))
        try:
            async with ClientSession() as session:
                print(f"{'size':>6} {'body':>8} {'status':>6} {'answer B':>9} {'median ms':>10} {'p99 ms':>8}  ratio")
                for size, label in ((KIB, "1 KiB"), (MIB - 64, "1 MiB")):
                    count = requests if size < MIB // 2 else max(5, requests // 10)
                    results = {}
                    for kind, body in (("valid", valid_body(size)), ("invalid", invalid_body(size))):
                        await timings(session, url, body, 3)  # warm-up
                        times, status, answer = await timings(session, url, body, count)
                        results[kind] = statistics.median(times)
                        ratio = f"{results[kind] / results['valid']:.2f}" if kind == "invalid" else ""
                        print(
                            f"{label:>6} {kind:>8} {status:>6} {answer:>9} {results[kind] * 1e3:>10.2f} "
                            f"{p99(times) * 1e3:>8.2f}  {ratio}"
                        )
        finally:
            await server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per 1 KiB body (a tenth per 1 MiB)")
    args = parser.parse_args(argv)
    asyncio.run(run(args.requests))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
