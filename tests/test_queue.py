"""The priority queue: ordering, FIFO within a priority, backpressure, remove."""

from __future__ import annotations

import asyncio
import random

import pytest

from rrjobs.core.capabilities import Capabilities
from rrjobs.core.headers import Headers
from rrjobs.core.job import Job
from rrjobs.core.queue import PriorityQueue, QueueFullError


class _Job(Job):
    __slots__ = ()
    driver_name = "test"

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    async def _ack(self) -> None: ...

    async def _nack(self, requeue: bool, delay: float) -> None: ...

    async def _requeue(self, headers: Headers, delay: float) -> None: ...


def job(i: int, priority: int = 10, pipeline: str = "p") -> _Job:
    return _Job(id=str(i), name="j", payload=b"", headers={}, pipeline=pipeline,
                priority=priority)


async def test_lower_priority_number_first_and_fifo_within_priority() -> None:
    q = PriorityQueue()
    rng = random.Random(7)
    jobs = [job(i, rng.choice([1, 5, 10])) for i in range(300)]
    for j in jobs:
        q.insert_nowait(j)
    out = [await q.extract_min() for _ in jobs]
    expected = sorted(jobs, key=lambda j: (j.priority, int(j.id)))
    assert [j.id for j in out] == [j.id for j in expected]
    assert len(q) == 0


async def test_extract_min_waits_while_empty() -> None:
    q = PriorityQueue()
    getter = asyncio.create_task(q.extract_min())
    await asyncio.sleep(0.01)
    assert not getter.done()
    await q.insert(job(1))
    got = await asyncio.wait_for(getter, 1)
    assert got.id == "1"


async def test_insert_waits_when_full_and_never_drops() -> None:
    q = PriorityQueue(maxsize=3)
    for i in range(3):
        await q.insert(job(i))
    assert q.full()
    with pytest.raises(QueueFullError):
        q.insert_nowait(job(99))
    blocked = [asyncio.create_task(q.insert(job(i))) for i in range(3, 8)]
    await asyncio.sleep(0.01)
    assert not any(t.done() for t in blocked)
    assert len(q) == 3
    out = []
    for _ in range(8):
        out.append((await asyncio.wait_for(q.extract_min(), 1)).id)
        await asyncio.sleep(0)
        assert len(q) <= 3
    await asyncio.gather(*blocked)
    assert sorted(out, key=int) == [str(i) for i in range(8)]


async def test_many_producers_and_consumers() -> None:
    q = PriorityQueue(maxsize=10)
    n_prod, per = 8, 250
    got: list[str] = []

    async def producer(p: int) -> None:
        for i in range(per):
            await q.insert(job(p * per + i, priority=i % 3))

    async def consumer() -> None:
        while True:
            got.append((await q.extract_min()).id)

    consumers = [asyncio.create_task(consumer()) for _ in range(5)]
    await asyncio.gather(*(producer(p) for p in range(n_prod)))
    for _ in range(200):
        if len(got) == n_prod * per:
            break
        await asyncio.sleep(0.01)
    for c in consumers:
        c.cancel()
    assert sorted(got, key=int) == [str(i) for i in range(n_prod * per)]


async def test_cancelled_getter_passes_the_item_on() -> None:
    q = PriorityQueue()
    g1 = asyncio.create_task(q.extract_min())
    g2 = asyncio.create_task(q.extract_min())
    await asyncio.sleep(0)
    q.insert_nowait(job(1))  # wakes g1
    g1.cancel()
    got = await asyncio.wait_for(g2, 1)
    assert got.id == "1"


async def test_remove_returns_the_pipelines_jobs_in_order_and_frees_room() -> None:
    q = PriorityQueue(maxsize=4)
    for i, (prio, pipe) in enumerate([(5, "a"), (1, "b"), (3, "a"), (1, "a")]):
        q.insert_nowait(job(i, prio, pipe))
    waiting = asyncio.create_task(q.insert(job(9, 1, "c")))
    await asyncio.sleep(0)
    removed = q.remove("a")
    assert [j.id for j in removed] == ["3", "2", "0"]
    await asyncio.wait_for(waiting, 1)
    assert len(q) == 2
    assert q.count("c") == 1 and q.count("a") == 0
    assert q.remove("nope") == []


def test_maxsize_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PriorityQueue(0)
