"""Priority: lower number first, FIFO within one priority.

A driver that does not declare ``priority`` still delivers every job once, in
whatever order: the order checks apply where it is declared.
"""

from __future__ import annotations

from rrjobs.testing.harness import Harness, Pipe, conformance_case
from rrjobs.testing.suite.base import SuiteBase


def assert_order(pipe: Pipe, got: list[str], sent: list[str]) -> None:
    """``got`` is ``sent`` in order where the driver declares ``priority`` (FIFO
    within one priority), else the same jobs, each once."""
    if pipe.capabilities.priority:
        assert got == sent, "FIFO order was lost"
    else:
        assert sorted(got) == sorted(sent)


class PriorityTests(SuiteBase):
    """Jobs come out by priority, then in the order they went in."""

    @conformance_case
    async def test_lower_priority_number_is_delivered_first(self, h: Harness) -> None:
        pipe = await h.pipe(run=False)
        plan = [(5, "e1"), (1, "a1"), (3, "c1"), (1, "a2"), (5, "e2"), (2, "b1")]
        for priority, label in plan:
            await pipe.push(payload=label.encode(), priority=priority)
        await pipe.run()
        await pipe.wait_queued(len(plan))
        jobs = await pipe.receive_many(len(plan))
        got = [(j.priority, j.payload.decode()) for j in jobs]
        if pipe.capabilities.priority:
            assert got == [(1, "a1"), (1, "a2"), (2, "b1"), (3, "c1"), (5, "e1"), (5, "e2")]
        else:
            assert sorted(got) == sorted(plan)
        for job in jobs:
            await job.ack()

    @conformance_case
    async def test_fifo_within_one_priority(self, h: Harness) -> None:
        """Backlog pushed before consuming, and jobs pushed while consuming, keep order."""
        pipe = await h.pipe(run=False)
        backlog = await pipe.push_many(10, prefix="backlog")
        await pipe.run()
        await pipe.wait_queued(len(backlog))
        jobs = await pipe.receive_many(len(backlog))
        live = await pipe.push_many(10, prefix="live")
        jobs += await pipe.receive_many(len(live))
        assert_order(pipe, [j.id for j in jobs[:len(backlog)]], [m.id for m in backlog])
        assert_order(pipe, [j.id for j in jobs[len(backlog):]], [m.id for m in live])
        for job in jobs:
            await job.ack()

    @conformance_case
    async def test_redelivered_jobs_keep_their_priority(self, h: Harness) -> None:
        pipe = await h.pipe()
        sent = await pipe.push(payload=b"p2", priority=2)
        job = await pipe.receive()
        await job.nack(requeue=True)
        again = await pipe.receive()
        assert (again.id, again.priority) == (sent.id, 2)
        await again.requeue({"x": ["1"]})
        third = await pipe.receive()
        assert (third.id, third.priority) == (sent.id, 2)
        await third.ack()
