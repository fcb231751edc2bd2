"""Round trips shared by the requests that wait on them: one Redis or database call for many requests.

A request asks for one item (a key, a namespace) and awaits its answer. The first ask starts a
round trip at once; asks arriving while it is under way wait together for the next one, which
starts as soon as the first returns and carries all of them. Nobody waits for a timer: alone, a
request makes its own round trip as it would without the batch; under load, the requests of one
process that arrive during a round trip share the next (at 64 connections, tens of them).

Every round trip starts after each of its asks arrived: an answer is never older than the
request that reads it. That is what lets the cache read namespace generations this way without
weakening read-your-writes (server/cache/store.py).

Standard library only; what a round trip does is the caller's function.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Answer = TypeVar("Answer")

# `run(items)` answers one value per item, in order; it may raise (every ask of the batch
# then raises that error).
RoundTrip = Callable[[Sequence[Item]], Awaitable[Sequence[Answer]]]


class Batcher(Generic[Item, Answer]):
    """Sends the items asked while a round trip is under way together in the next one.

    `timeout` bounds each round trip (one timer per round trip, not one per request); past it
    the asks of that round trip raise TimeoutError. `round_trips` and `asked` count what was done
    (asked / round_trips: the batching).
    """

    def __init__(self, run: RoundTrip[Item, Answer], *, timeout: float | None = None) -> None:
        self._run = run
        self._timeout = timeout
        self._waiting: list[tuple[Item, asyncio.Future[Answer]]] = []
        self._sender: asyncio.Task[None] | None = None
        self.round_trips = 0
        self.asked = 0

    async def ask(self, item: Item) -> Answer:
        """`item`'s answer from a round trip that starts after this call; raises what it raised."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Answer] = loop.create_future()
        self._waiting.append((item, answer))
        if self._sender is None:
            # A context of its own: the round trips serve many requests, and must not carry the
            # first one's (its request id in log lines, a database transaction it is inside).
            self._sender = loop.create_task(self._send(), context=contextvars.Context())
        return await answer

    async def _send(self) -> None:
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                self.round_trips += 1
                self.asked += len(batch)
                try:
                    async with asyncio.timeout(self._timeout):
                        results = await self._run([item for item, _ in batch])
                except asyncio.CancelledError:
                    # The loop is stopping: this round trip's asks and those waiting for the next
                    # fail rather than hang.
                    batch, self._waiting = batch + self._waiting, []
                    self._fail(batch, ConnectionError("the batcher stopped"))
                    raise
                except Exception as exc:  # the round trip's error is every ask's error
                    self._fail(batch, exc)
                    continue
                for (_, answer), result in zip(batch, results, strict=True):
                    if not answer.done():  # an ask cancelled meanwhile (its client went away)
                        answer.set_result(result)
        finally:
            self._sender = None

    @staticmethod
    def _fail(batch: list[tuple[Item, asyncio.Future[Answer]]], exc: BaseException) -> None:
        for _, answer in batch:
            if not answer.done():
                answer.set_exception(exc)

    async def close(self) -> None:
        """Wait for the round trip under way (call before closing what it uses)."""
        if self._sender is not None:
            await asyncio.gather(self._sender, return_exceptions=True)
