"""The SQS driver's call batcher (no broker)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from rrjobs.drivers.sqs.batch import Batcher


async def test_calls_of_one_turn_go_in_batches_of_ten_and_get_their_own_outcome() -> None:
    calls: list[list[int]] = []

    async def send(entries: Sequence[int]) -> list[BaseException | None]:
        calls.append(list(entries))
        await asyncio.sleep(0)
        return [ValueError(e) if e == 13 else None for e in entries]

    batcher: Batcher[int] = Batcher(send, size=10, concurrency=4)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(25)),
                                   return_exceptions=True)
    assert sorted(len(c) for c in calls) == [5, 10, 10]
    assert sorted(e for c in calls for e in c) == list(range(25))
    assert isinstance(results[13], ValueError)
    assert [r for i, r in enumerate(results) if i != 13] == [None] * 24


async def test_busy_slots_make_later_entries_wait_and_batch_together() -> None:
    gate = asyncio.Event()
    calls: list[list[int]] = []

    async def send(entries: Sequence[int]) -> list[BaseException | None]:
        calls.append(list(entries))
        await gate.wait()
        return [None] * len(entries)

    batcher: Batcher[int] = Batcher(send, size=10, concurrency=1)
    first = asyncio.ensure_future(batcher.submit(0))
    await asyncio.sleep(0.01)
    later = [asyncio.ensure_future(batcher.submit(i)) for i in range(1, 4)]
    await asyncio.sleep(0.01)
    assert calls == [[0]]  # one call at a time: the others wait
    gate.set()
    await asyncio.gather(first, *later)
    assert calls == [[0], [1, 2, 3]]
    await batcher.drain()


async def test_a_failed_call_fails_every_entry_of_its_batch() -> None:
    async def send(entries: Sequence[int]) -> list[BaseException | None]:
        raise ConnectionError("down")

    batcher: Batcher[int] = Batcher(send)
    with pytest.raises(ConnectionError):
        await asyncio.gather(batcher.submit(1), batcher.submit(2))
