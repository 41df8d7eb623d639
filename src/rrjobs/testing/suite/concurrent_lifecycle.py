"""Lifecycle calls issued concurrently.

The rule every driver follows: a lifecycle call made while another one is
inside waits for it, then does its own work or, when that work is already
done, is a no-op. So calls gathered in any order raise nothing (not even the
:class:`~rrjobs.core.errors.PipelineStateError` that the same call raises when
issued on its own into a state that makes it redundant), leave the pipeline
in the state that applying them one after the other in issue order gives, and
lose no job.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Sequence
from itertools import permutations

from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.runtime.jobs import Jobs
from rrjobs.testing.harness import Harness, Pipe, Recorder, conformance_case, poll
from rrjobs.testing.suite.base import SuiteBase

#: Jobs pushed before the calls; one of them is held by the consumer.
BACKLOG = 4

Order = tuple[str, ...]


def end_state(start: str, order: Iterable[str]) -> str:
    """``running``, ``paused`` or ``stopped``: ``order`` applied one call after
    the other from ``start``, a redundant call changing nothing."""
    state = start
    for call in order:
        if state == "stopped":
            continue
        if call in ("stop", "destroy"):
            state = "stopped"
        elif call == "pause":
            state = "paused"
        elif call == "resume":
            state = "running"
    return state


def start_state(order: Sequence[str]) -> str:
    """The state in which the first call of ``order`` does work."""
    return "paused" if order[0] == "resume" else "running"


def pair_orders(calls: Sequence[str]) -> list[Order]:
    """Every ordered pair of two different calls."""
    return list(permutations(calls, 2))


def failures(outcome: Sequence[object]) -> list[str]:
    return [repr(e) for e in outcome if isinstance(e, BaseException)]


class ConcurrentLifecycleTests(SuiteBase):
    """``pause``, ``resume`` and ``stop`` gathered in every order on a pipeline
    with jobs queued and in flight."""

    async def _scenario(self, h: Harness, order: Order) -> None:
        lease = h.short_lease()
        pipe = await h.pipe(lease=lease)
        if ("pause" in order or "resume" in order) and not await h.declares(pipe, "pause"):
            return
        sent = await pipe.push_many(BACKLOG, prefix="-".join(order))
        held = await pipe.receive()
        await pipe.wait_queued(BACKLOG - 1, within=h.factory.quiet_period)
        start = start_state(order)
        if start == "paused":
            await pipe.pause()
        calls: dict[str, Callable[[], Awaitable[None]]] = {
            "pause": pipe.pause, "resume": pipe.resume, "stop": pipe.stop}
        outcome = await asyncio.gather(*(calls[c]() for c in order), return_exceptions=True)
        errors = failures(outcome)
        assert not errors, f"gather{order} from {start}: {errors}"
        expected = end_state(start, order)
        what = f"after gather{order} from {start} (expected {expected})"
        state = await pipe.state()
        ids = {m.id for m in sent}
        if expected == "stopped":
            assert pipe.queue.count(pipe.name) == 0, f"{what}: jobs left in the priority queue"
            if h.factory.shared_broker:
                later = await h.second_consumer(pipe)
                await _all_delivered(h, later, ids, lease, what)
                await later.stop()
            return
        await held.ack()
        seen = {held.id}
        if expected == "paused":
            assert state.ready is False, f"{what}: state {state!r}"
            assert pipe.queue.count(pipe.name) == 0, f"{what}: jobs left in the priority queue"
            await pipe.expect_nothing()
            await pipe.resume()
        else:
            assert state.ready is True, f"{what}: state {state!r}"
        await _all_delivered(h, pipe, ids - seen, lease, what)
        await pipe.stop()

    async def _each(self, h: Harness, orders: Iterable[Order]) -> None:
        """Every order, each on a fresh pipeline; fails listing every failed order."""
        failed: list[str] = []
        for order in orders:
            try:
                await self._scenario(h, order)
            except AssertionError as exc:
                failed.append(str(exc).splitlines()[0])
        assert not failed, "\n".join(failed)

    @conformance_case
    async def test_the_same_call_twice_at_once(self, h: Harness) -> None:
        """``pause``+``pause``, ``resume``+``resume`` (from paused), ``stop``+``stop``."""
        await self._each(h, [("pause", "pause"), ("resume", "resume"), ("stop", "stop")])

    @conformance_case
    async def test_pause_resume_and_stop_pairs_in_every_order(self, h: Harness) -> None:
        await self._each(h, pair_orders(("pause", "resume", "stop")))

    @conformance_case
    async def test_pause_resume_and_stop_together_in_every_order(self, h: Harness) -> None:
        await self._each(h, permutations(("pause", "resume", "stop")))



class ConcurrentRuntimeLifecycleTests(SuiteBase):
    """``Jobs.pause``, ``Jobs.resume`` and ``Jobs.destroy`` gathered in every
    order on running pipelines: the same rule through the runtime."""

    @conformance_case
    async def test_runtime_pause_resume_and_destroy_in_every_order(self, h: Harness) -> None:
        """Through :class:`~rrjobs.Jobs`, one pipeline per order, handlers running."""
        orders: list[Order] = [*permutations(("pause", "resume", "destroy")),
                               ("destroy", "destroy"), ("pause", "destroy"),
                               ("destroy", "resume")]
        rec = Recorder()
        lease = h.short_lease()
        names = [h.new_name("lc") for _ in orders]
        jobs = h.runtime(rec.app, {n: h.pipeline_entry(n, lease=lease) for n in names},
                         consume=names, num_workers=2)
        failed: list[str] = []
        async with jobs:
            for name, order in zip(names, orders, strict=True):
                try:
                    await self._runtime_scenario(h, jobs, rec, name, order, lease)
                except AssertionError as exc:
                    failed.append(str(exc).splitlines()[0])
        assert not failed, "\n".join(failed)

    async def _runtime_scenario(self, h: Harness, jobs: Jobs, rec: Recorder, name: str,
                                order: Order, lease: float | None) -> None:
        start = start_state(order)
        if start == "paused":
            await jobs.pause([name])
        msgs = [Message("conformance.lifecycle", f"{name}-{i}".encode(), name)
                for i in range(BACKLOG)]
        for msg in msgs:
            await jobs.push(msg)
        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "pause": lambda: jobs.pause([name]), "resume": lambda: jobs.resume([name]),
            "destroy": lambda: jobs.destroy([name])}
        outcome = await asyncio.gather(*(calls[c]() for c in order), return_exceptions=True)
        errors = failures(outcome)
        assert not errors, f"Jobs: gather{order} from {start}: {errors}"
        expected = end_state(start, order)
        what = f"Jobs: after gather{order} from {start} (expected {expected})"
        ids = {m.id for m in msgs}

        def handled() -> set[str]:
            return {j.id for j in rec.jobs if j.pipeline == name}

        if expected == "stopped":
            assert name not in jobs.list(), f"{what}: the pipeline is still registered"
            assert jobs.queue.count(name) == 0, f"{what}: jobs left in the priority queue"
            if h.factory.shared_broker:
                rest = ids - handled()
                if rest:
                    later = await h.pipe(name=name, lease=lease)
                    await _all_delivered(h, later, rest, lease, what)
                    await later.stop()
            return
        (stat,) = [s for s in await jobs.stat() if s.state.pipeline == name]
        if expected == "paused":
            assert stat.state.ready is False, f"{what}: {stat.state!r}"
            await jobs.resume([name])
        else:
            assert stat.state.ready is True, f"{what}: {stat.state!r}"
        assert await poll(lambda: handled() >= ids, h.factory.delivery_timeout), (
            f"{what}: handled {len(handled() & ids)} of {len(ids)} jobs")


async def _all_delivered(h: Harness, pipe: Pipe, ids: set[str], lease: float | None,
                         what: str) -> None:
    """Every job of ``ids`` is delivered by ``pipe`` (each acked on receipt)."""
    limit = h.factory.delivery_timeout + h.factory.redelivery_timeout + (lease or 0)
    missing = set(ids)
    try:
        async with asyncio.timeout(limit):
            while missing:
                job: Job = await pipe.queue.extract_min()
                await job.ack()
                missing.discard(job.id)
    except TimeoutError:
        raise AssertionError(f"{what}: {len(missing)} of {len(ids)} jobs were lost "
                             f"(not delivered within {limit:g}s)") from None
