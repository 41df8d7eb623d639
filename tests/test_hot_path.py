"""What the performance work on the memory hot path must keep.

The priority queue's buckets give heapq's order, ids stay uuid4, a memory job
settles once, and a large ``push_batch`` lets the loop run without reordering
or losing jobs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import heapq
import itertools
import random
import uuid
from collections import deque
from typing import Any

import pytest

from rrjobs import App, Config, Jobs, Message
from rrjobs.core.errors import JobAlreadySettledError, PipelineStateError
from rrjobs.core.job import Job as MemoryJob
from rrjobs.core.message import new_id
from rrjobs.core.queue import PriorityQueue, QueueFullError
from rrjobs.drivers.memory import MemoryDriver


class _Item:
    __slots__ = ("n", "pipeline", "priority")

    def __init__(self, n: int, priority: int, pipeline: str) -> None:
        self.n, self.priority, self.pipeline = n, priority, pipeline


@pytest.mark.parametrize("priorities", [[10], [1, 5, 10], [-3, 0, 2, 7, 100, 2**40]])
def test_priority_queue_matches_heapq_under_random_operations(priorities: list[int]) -> None:
    rng = random.Random(11)
    q = PriorityQueue()
    ref: list[tuple[int, int, Any]] = []
    seq = itertools.count()
    for n in range(3000):
        op = rng.random()
        if op < 0.55:
            item = _Item(n, rng.choice(priorities), rng.choice("ab"))
            q.insert_nowait(item)  # type: ignore[arg-type]
            heapq.heappush(ref, (item.priority, next(seq), item))
        elif op < 0.97:
            got = q.extract_nowait()
            want = heapq.heappop(ref)[2] if ref else None
            assert got is want
        else:
            pipeline = rng.choice("ab")
            removed = q.remove(pipeline)
            want_removed = sorted(e for e in ref if e[2].pipeline == pipeline)
            ref = [e for e in ref if e[2].pipeline != pipeline]
            heapq.heapify(ref)
            assert [j.n for j in removed] == [e[2].n for e in want_removed]  # type: ignore[attr-defined]
        assert len(q) == len(ref)
        assert q.count("a") == sum(1 for e in ref if e[2].pipeline == "a")
    assert sorted(j.n for j in q) == sorted(e[2].n for e in ref)  # type: ignore[attr-defined]


def test_new_ids_are_distinct_uuid4_strings() -> None:
    ids = [new_id() for _ in range(5000)]  # several refills
    assert len(set(ids)) == len(ids)
    for i in ids:
        u = uuid.UUID(i)
        assert (u.version, u.variant, str(u)) == (4, uuid.RFC_4122, i)
    # every random position takes every hex digit: nothing is fixed by mistake
    fixed = {8: {"-"}, 13: {"-"}, 14: {"4"}, 18: {"-"}, 19: set("89ab"), 23: {"-"}}
    for pos in range(36):
        assert {i[pos] for i in ids} == fixed.get(pos, set("0123456789abcdef")), pos
    assert Message("a").id != Message("a").id


def _runtime(workers: int = 2, prefetch: int = 100_000) -> Config:
    return Config.from_yaml(
        f"jobs:\n  consume: [p]\n  pool: {{num_workers: {workers}}}\n"
        f"  pipelines:\n    p: {{driver: memory, config: {{prefetch: {prefetch}}}}}\n"
    )


async def test_memory_job_settles_once() -> None:
    app = App()
    seen: list[MemoryJob] = []
    errors: list[BaseException] = []

    @app.handler("once")
    async def once(job: MemoryJob) -> None:
        await job.ack()
        try:
            await job.ack()
        except JobAlreadySettledError as exc:
            errors.append(exc)
        seen.append(job)

    async with Jobs(_runtime(), app) as jobs:
        await jobs.push(Message("once", b"x", "p"))
        await jobs.push(Message("once", b"y", "p", auto_ack=True))
        for _ in range(200):
            if len(seen) == 2:
                break
            await asyncio.sleep(0.005)
        stats = await jobs.stat()
    assert [j.settled for j in seen] == ["ack", "ack"]
    assert len(errors) == 1  # the auto_ack job's second ack is a no-op
    assert stats[0].counters.ok == 2
    assert stats[0].state.reserved == 0


async def test_large_push_batch_lets_workers_run_and_keeps_fifo() -> None:
    app = App()
    order: list[int] = []
    batch_done = asyncio.Event()
    handled_during_batch = 0

    @app.handler("n")
    async def handle(job: MemoryJob) -> None:
        nonlocal handled_during_batch
        order.append(int(job.payload))
        if not batch_done.is_set():
            handled_during_batch += 1

    n = MemoryDriver.BATCH_SLICE * 5 + 3
    async with Jobs(_runtime(workers=1), app) as jobs:
        await jobs.push_batch([Message("n", str(i).encode(), "p") for i in range(n)])
        batch_done.set()
        for _ in range(400):
            if len(order) == n:
                break
            await asyncio.sleep(0.005)
    assert order == list(range(n))  # one worker: exactly push order
    assert handled_during_batch > 0  # the loop ran while the batch was pushed


async def test_stop_during_a_batch_is_an_error_not_a_silent_loss() -> None:
    app = App()

    @app.handler("n")
    async def handle(job: MemoryJob) -> None:
        await asyncio.sleep(0)

    async with Jobs(_runtime(workers=1, prefetch=10), app) as jobs:
        msgs = [Message("n", b"", "p") for _ in range(MemoryDriver.BATCH_SLICE * 3)]
        pushing = asyncio.ensure_future(jobs.push_batch(msgs))
        await asyncio.sleep(0)  # the batch has pushed its first slice and yielded
        assert not pushing.done()
        assert await jobs.destroy(["p"]) == ["p"]
        with pytest.raises(PipelineStateError, match="stopped while a batch was pushed"):
            await pushing


@pytest.mark.parametrize("priorities", [[10], [1, 5], [3, 3, 7, 1]])
def test_insert_from_is_inserts_one_by_one(priorities: list[int]) -> None:
    rng = random.Random(5)
    one, many = PriorityQueue(), PriorityQueue()
    first = _Item(-1, priorities[0], "b")  # queued first: mixed buckets too
    for q in (one, many):
        q.insert_nowait(first)  # type: ignore[arg-type]
    items = [_Item(n, rng.choice(priorities), rng.choice("aab")) for n in range(500)]
    for it in items:
        one.insert_nowait(it)  # type: ignore[arg-type]
    ready = deque(items)
    many.insert_from(ready, 300)  # type: ignore[arg-type]
    assert len(ready) == 200 and ready[0] is items[300]
    many.insert_from(ready, 200)  # type: ignore[arg-type]
    assert not ready and len(many) == len(one) == 501
    assert many.count("a") == one.count("a")
    assert [many.extract_nowait() for _ in range(501)] == [one.extract_nowait() for _ in range(501)]


async def test_insert_from_wakes_a_getter_per_job_and_refuses_what_does_not_fit() -> None:
    q = PriorityQueue(3)
    getters = [asyncio.ensure_future(q.extract_min()) for _ in range(3)]
    await asyncio.sleep(0)
    ready = deque([_Item(n, 1, "a") for n in range(2)])
    q.insert_from(ready, 2)  # type: ignore[arg-type]
    await asyncio.sleep(0)
    assert sorted(g.result().n for g in getters if g.done()) == [0, 1]  # type: ignore[attr-defined]
    assert not getters[2].done()
    getters[2].cancel()
    ready = deque([_Item(n, 1, "a") for n in range(4)])
    with pytest.raises(QueueFullError):
        q.insert_from(ready, 4)  # type: ignore[arg-type]
    assert len(ready) == 4 and len(q) == 0  # nothing moved


def test_message_keeps_its_fields_defaults_and_checks() -> None:
    m = Message("n")
    assert (m.payload, m.pipeline, m.headers, m.priority, m.delay, m.auto_ack) == (
        b"",
        "",
        {},
        0,
        0.0,
        False,
    )
    assert m.headers is not Message("n").headers  # a dict of its own
    assert Message("n", id="x") == Message("n", id="x")
    assert dataclasses.replace(m, priority=3).id == m.id
    names = [f.name for f in dataclasses.fields(Message)]
    assert names[:4] == ["name", "payload", "pipeline", "id"]
    with pytest.raises(TypeError):
        Message("n", "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Message("n", delay=-1)
