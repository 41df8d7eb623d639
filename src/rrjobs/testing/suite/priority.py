"""Priority (when declared): lower number first, FIFO within one priority."""

from __future__ import annotations

from rrjobs.testing.harness import Harness, conformance_case
from rrjobs.testing.suite.base import SuiteBase


class PriorityTests(SuiteBase):
    """Jobs come out by priority, then in the order they went in."""

    @conformance_case
    async def test_lower_priority_number_is_delivered_first(self, h: Harness) -> None:
        pipe = await h.pipe(run=False)
        h.require(pipe, "priority")
        plan = [(5, "e1"), (1, "a1"), (3, "c1"), (1, "a2"), (5, "e2"), (2, "b1")]
        for priority, label in plan:
            await pipe.push(payload=label.encode(), priority=priority)
        await pipe.run()
        await pipe.wait_queued(len(plan))
        jobs = await pipe.receive_many(len(plan))
        assert [j.payload.decode() for j in jobs] == ["a1", "a2", "b1", "c1", "e1", "e2"]
        assert [j.priority for j in jobs] == [1, 1, 2, 3, 5, 5]
        for job in jobs:
            await job.ack()

    @conformance_case
    async def test_fifo_within_one_priority(self, h: Harness) -> None:
        """Backlog pushed before consuming, and jobs pushed while consuming, keep order."""
        pipe = await h.pipe(run=False)
        h.require(pipe, "priority")
        backlog = await pipe.push_many(10, prefix="backlog")
        await pipe.run()
        await pipe.wait_queued(len(backlog))
        jobs = await pipe.receive_many(len(backlog))
        assert [j.id for j in jobs] == [m.id for m in backlog]
        live = await pipe.push_many(10, prefix="live")
        jobs += await pipe.receive_many(len(live))
        assert [j.id for j in jobs[len(backlog):]] == [m.id for m in live]
        for job in jobs:
            await job.ack()

    @conformance_case
    async def test_redelivered_jobs_keep_their_priority(self, h: Harness) -> None:
        pipe = await h.pipe()
        h.require(pipe, "priority")
        sent = await pipe.push(payload=b"p2", priority=2)
        job = await pipe.receive()
        await job.nack(requeue=True)
        again = await pipe.receive()
        assert (again.id, again.priority) == (sent.id, 2)
        await again.requeue({"x": ["1"]})
        third = await pipe.receive()
        assert (third.id, third.priority) == (sent.id, 2)
        await third.ack()
