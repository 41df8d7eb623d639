"""The priority queue: ordering, FIFO within a priority, backpressure, remove."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rrjobs.core.job import Job
from rrjobs.core.queue import PriorityQueue, QueueFullError
from tests.test_core import recording_job


def job(i: int, priority: int = 10, pipeline: str = "p") -> Job:
    return recording_job(id=str(i), name="j", payload=b"", headers={}, pipeline=pipeline,
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


async def test_jobs_of_lists_one_pipelines_queued_jobs_and_leaves_them_queued() -> None:
    q = PriorityQueue()
    for i, (prio, pipe) in enumerate([(5, "a"), (1, "b"), (3, "a"), (1, "a"), (5, "a")]):
        q.insert_nowait(job(i, prio, pipe))
    assert [j.id for j in q.jobs_of("a")] == ["3", "2", "0", "4"]
    assert [j.id for j in q.jobs_of("b")] == ["1"] and q.jobs_of("nope") == []
    assert len(q) == 5  # nothing was taken out
    assert [q.extract_nowait().id for _ in range(2)] == ["1", "3"]  # type: ignore[union-attr]
    assert [j.id for j in q.jobs_of("a")] == ["2", "0", "4"]
    q.remove("a")
    assert q.jobs_of("a") == []


def test_maxsize_must_be_positive() -> None:
    with pytest.raises(ValueError):
        PriorityQueue(0)


# -- per-pipeline bookkeeping, against a reference model ------------------------------------

PIPES = ("a", "b", "c")

op = st.one_of(
    st.tuples(st.just("insert"), st.sampled_from(PIPES), st.integers(1, 4)),
    st.tuples(st.just("extract")),
    st.tuples(st.just("remove"), st.sampled_from(PIPES)),
    st.tuples(st.just("reinsert")),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(op, max_size=120), st.integers(1, 200))
def test_matches_a_reference_model(ops: list[tuple], many_priorities: int) -> None:
    """Interleaved inserts, extracts, removes and re-inserts of removed jobs (the
    same objects, as a paused pipeline's driver does): the queue behaves as a
    list sorted by (priority, insertion order), and count/len/iter agree."""
    q = PriorityQueue()
    model: list[tuple[int, int, Job]] = []  # (priority, seq, job)
    seq = 0
    last_removed: list[Job] = []
    for o in ops:
        if o[0] == "insert":
            seq += 1
            j = job(seq, o[2] * many_priorities, o[1])
            q.insert_nowait(j)
            model.append((j.priority, seq, j))
        elif o[0] == "reinsert":
            for j in last_removed:
                seq += 1
                q.insert_nowait(j)
                model.append((j.priority, seq, j))
            last_removed = []
        elif o[0] == "extract":
            got = q.extract_nowait()
            if not model:
                assert got is None
            else:
                best = min(model, key=lambda e: e[:2])
                model.remove(best)
                assert got is best[2]
        else:
            removed = q.remove(o[1])
            want = sorted((e for e in model if e[2].pipeline == o[1]), key=lambda e: e[:2])
            assert removed == [e[2] for e in want]
            model = [e for e in model if e[2].pipeline != o[1]]
            last_removed = list(removed)
        assert len(q) == len(model)
        for p in PIPES:
            assert q.count(p) == sum(1 for e in model if e[2].pipeline == p)
        assert sorted(map(id, q)) == sorted(id(e[2]) for e in model)
    drained = [q.extract_nowait() for _ in range(len(model))]
    assert drained == [e[2] for e in sorted(model, key=lambda e: e[:2])]
    assert q.extract_nowait() is None


def test_equal_priorities_keep_the_global_insertion_order_across_pipelines() -> None:
    q = PriorityQueue()
    jobs = [job(i, 5, PIPES[i % 3]) for i in range(30)]
    for j in jobs:
        q.insert_nowait(j)
    assert [q.extract_nowait() for _ in jobs] == jobs


def test_remove_leaves_other_pipelines_in_order_and_compacts() -> None:
    q = PriorityQueue()
    jobs = [job(i, 1, "a" if i % 4 else "b") for i in range(400)]
    for j in jobs:
        q.insert_nowait(j)
    removed = q.remove("a")  # three quarters of the bucket: compacted
    assert removed == [j for j in jobs if j.pipeline == "a"]
    assert q.count("a") == 0 and q.count("b") == 100 and len(q) == 100
    for j in removed[:5]:
        q.insert_nowait(j)  # after the b jobs, once
    out = [q.extract_nowait() for _ in range(105)]
    assert out == [j for j in jobs if j.pipeline == "b"] + removed[:5]
    assert q.extract_nowait() is None and len(q) == 0


def test_remove_of_everything_then_reuse() -> None:
    q = PriorityQueue(maxsize=3)
    for i in range(3):
        q.insert_nowait(job(i, i, "a"))
    assert len(q.remove("a")) == 3
    assert q.extract_nowait() is None
    q.insert_nowait(job(7, 2, "b"))
    q.insert_nowait(job(8, 0, "a"))
    assert [q.extract_nowait().id for _ in range(2)] == ["8", "7"]  # type: ignore[union-attr]


def test_many_distinct_priorities_are_forgotten_when_idle() -> None:
    q = PriorityQueue()
    for i in range(5000):
        q.insert_nowait(job(i, i, PIPES[i % 3]))
        assert q.extract_nowait().id == str(i)  # type: ignore[union-attr]
    assert len(q._buckets) <= 2 * len(q._prios) + 65  # idle buckets do not pile up
    assert q.count("a") == 0 and list(q) == []


async def test_remove_wakes_as_many_putters_as_slots_it_frees() -> None:
    q = PriorityQueue(maxsize=3)
    for i in range(3):
        q.insert_nowait(job(i, 1, "a" if i < 2 else "b"))
    waiting = [asyncio.create_task(q.insert(job(10 + i, 1, "c"))) for i in range(3)]
    await asyncio.sleep(0)
    assert len(q.remove("a")) == 2
    await asyncio.sleep(0)
    assert sum(t.done() for t in waiting) == 2
    assert q.count("c") == 2 and len(q) == 3
    assert q.extract_nowait().pipeline == "b"  # type: ignore[union-attr]
    await asyncio.wait_for(asyncio.gather(*waiting), 1)
    assert q.count("c") == 3
