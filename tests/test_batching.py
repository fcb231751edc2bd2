"""The shared round trips under the cache lookups and the rate limiter (server/batching.py):
concurrent asks share one, an ask never gets an answer from a round trip that began before it,
errors and cancellations reach the right asks."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from server.batching import Batcher


class Trips:
    """A round trip function whose calls wait until the test lets them go."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.gates: list[asyncio.Event] = []
        self.error: Exception | None = None

    async def run(self, items: Sequence[str]) -> list[str]:
        trip = len(self.calls)
        self.calls.append(list(items))
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        if self.error is not None:
            raise self.error
        return [f"{item}@{trip}" for item in items]

    async def started(self, count: int) -> None:
        while len(self.calls) < count:
            await asyncio.sleep(0)


async def test_asks_during_a_round_trip_share_the_next_one_which_starts_after_them():
    trips = Trips()
    batch: Batcher[str, str] = Batcher(trips.run)
    first = asyncio.create_task(batch.ask("a"))
    await trips.started(1)
    # These arrive while the first round trip is under way: it began before them, so none of
    # them may be answered by it.
    later = [asyncio.create_task(batch.ask(name)) for name in ("b", "c", "a")]
    await asyncio.sleep(0)
    assert trips.calls == [["a"]]
    trips.gates[0].set()
    assert await first == "a@0"
    await trips.started(2)
    assert trips.calls[1] == ["b", "c", "a"]
    trips.gates[1].set()
    assert await asyncio.gather(*later) == ["b@1", "c@1", "a@1"]
    assert (batch.round_trips, batch.asked) == (2, 4)


async def test_an_ask_alone_goes_at_once():
    trips = Trips()
    batch: Batcher[str, str] = Batcher(trips.run)
    ask = asyncio.create_task(batch.ask("x"))
    await trips.started(1)
    trips.gates[0].set()
    assert await ask == "x@0"
    ask = asyncio.create_task(batch.ask("y"))
    await trips.started(2)
    trips.gates[1].set()
    assert await ask == "y@1"


async def test_a_failed_round_trip_fails_its_asks_and_the_next_one_still_runs():
    trips = Trips()
    batch: Batcher[str, str] = Batcher(trips.run)
    failing = [asyncio.create_task(batch.ask(n)) for n in ("a", "b")]
    await trips.started(1)
    trips.error = ConnectionError("down")
    trips.gates[0].set()
    for ask in failing:
        with pytest.raises(ConnectionError, match="down"):
            await ask
    trips.error = None
    ask = asyncio.create_task(batch.ask("c"))
    await trips.started(2)
    trips.gates[1].set()
    assert await ask == "c@1"


async def test_a_round_trip_past_its_timeout_fails_its_asks():
    async def never(items: Sequence[str]) -> list[str]:
        await asyncio.Event().wait()
        return []

    batch: Batcher[str, str] = Batcher(never, timeout=0.05)
    with pytest.raises(TimeoutError):
        await batch.ask("a")


async def test_a_cancelled_ask_leaves_the_others_their_answers():
    trips = Trips()
    batch: Batcher[str, str] = Batcher(trips.run)
    asks = [asyncio.create_task(batch.ask(n)) for n in ("a", "b")]
    await trips.started(1)
    asks[0].cancel()
    trips.gates[0].set()
    assert await asks[1] == "b@0"
    assert asks[0].cancelled()


async def test_closing_waits_for_the_round_trip_under_way():
    trips = Trips()
    batch: Batcher[str, str] = Batcher(trips.run)
    ask = asyncio.create_task(batch.ask("a"))
    await trips.started(1)
    closing = asyncio.create_task(batch.close())
    await asyncio.sleep(0.01)
    assert not closing.done()
    trips.gates[0].set()
    await closing
    assert await ask == "a@0"


async def test_a_cancelled_round_trip_fails_its_asks_and_those_waiting():
    trips = Trips()
    batch: Batcher[str, str] = Batcher(trips.run)
    first = asyncio.create_task(batch.ask("a"))
    await trips.started(1)
    waiting = asyncio.create_task(batch.ask("b"))
    await asyncio.sleep(0)
    assert batch._sender is not None
    batch._sender.cancel()  # what stopping the loop does to every task
    for ask in (first, waiting):
        with pytest.raises(ConnectionError, match="stopped"):
            await ask
