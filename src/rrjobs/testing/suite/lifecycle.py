"""Pause and resume, state, stop and destroy."""

from __future__ import annotations

import asyncio

import pytest

from rrjobs.core.errors import PipelineStateError
from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.testing.harness import Harness, Recorder, conformance_case, poll
from rrjobs.testing.suite.base import SuiteBase
from rrjobs.testing.suite.priority import assert_order

#: A delay long enough not to fire during a state test.
PARKED = 60.0


class PauseResumeTests(SuiteBase):
    """Paused pipelines accept pushes and consume nothing until resumed."""

    @conformance_case
    async def test_pause_holds_pushes_and_resume_delivers_them(self, h: Harness) -> None:
        pipe = await h.pipe()
        if not await h.declares(pipe, "pause"):
            return
        await pipe.pause()
        sent = await pipe.push_many(3, prefix="paused")
        await pipe.expect_nothing()
        assert (await pipe.state()).ready is False
        await pipe.resume()
        jobs = await pipe.receive_many(3)
        assert {j.id for j in jobs} == {m.id for m in sent}
        for job in jobs:
            await job.ack()

    @conformance_case
    async def test_pause_takes_queued_jobs_back_out_of_the_priority_queue(self,
                                                                          h: Harness) -> None:
        """Nothing is consumed while paused, not even jobs that had reached the queue."""
        pipe = await h.pipe()
        if not await h.declares(pipe, "pause"):
            return
        sent = await pipe.push_many(3, prefix="queued")
        assert await pipe.wait_queued(3), "the jobs never reached the priority queue"
        await pipe.pause()
        assert pipe.queue.count(pipe.name) == 0, "pause left jobs in the priority queue"
        await pipe.expect_nothing()
        await pipe.resume()
        jobs = await pipe.receive_many(3)
        assert sorted(j.id for j in jobs) == sorted(m.id for m in sent)
        for job in jobs:
            await job.ack()
        await pipe.expect_nothing()

    @conformance_case
    async def test_pause_and_resume_keep_fifo_order(self, h: Harness) -> None:
        """Jobs taken back at pause go out first, before those pushed while paused."""
        pipe = await h.pipe()
        if not await h.declares(pipe, "pause"):
            return
        before = await pipe.push_many(3, prefix="before")
        await pipe.wait_queued(3)
        await pipe.pause()
        during = await pipe.push_many(3, prefix="during")
        await pipe.resume()
        jobs = await pipe.receive_many(6)
        assert_order(pipe, [j.id for j in jobs], [m.id for m in before + during])
        for job in jobs:
            await job.ack()

    @conformance_case
    async def test_jobs_falling_due_while_paused_wait_for_resume(self, h: Harness) -> None:
        pipe = await h.pipe()
        if not (await h.declares(pipe, "pause") and await h.declares(pipe, "delay")):
            return
        d = h.factory.delay_unit
        sent = await pipe.push(payload=b"due-while-paused", delay=d)
        await pipe.pause()
        await pipe.expect_nothing(d + h.factory.quiet_period)
        await h.eventually(pipe, lambda s: (s.active, s.delayed) == (1, 0),
                           "the job counted active (due) while paused")
        await pipe.resume()
        job = await pipe.receive()
        assert job.id == sent.id
        await job.ack()

    @conformance_case
    async def test_jobs_requeued_while_paused_wait_for_resume(self, h: Harness) -> None:
        """A handler that settles after ``pause`` requeues into the paused pipeline."""
        pipe = await h.pipe()
        if not await h.declares(pipe, "pause"):
            return
        sent = await pipe.push_many(2, prefix="held")
        first, second = await pipe.receive_many(2)
        await pipe.pause()
        await first.nack(requeue=True)
        await second.requeue({"r": ["1"]})
        await pipe.expect_nothing()
        await pipe.resume()
        jobs = await pipe.receive_many(2)
        assert sorted(j.id for j in jobs) == sorted(m.id for m in sent)
        for job in jobs:
            await job.ack()

    @conformance_case
    async def test_double_pause_is_an_error(self, h: Harness) -> None:
        idle = await h.pipe(run=False)
        if not await h.declares(idle, "pause"):
            return
        with pytest.raises(PipelineStateError):
            await idle.pause()  # never ran: no active listeners
        pipe = await h.pipe()
        await pipe.pause()
        with pytest.raises(PipelineStateError):
            await pipe.pause()
        await pipe.resume()
        await pipe.push(payload=b"after")
        job = await pipe.receive()
        await job.ack()

    @conformance_case
    async def test_double_resume_is_an_error(self, h: Harness) -> None:
        pipe = await h.pipe()
        if not await h.declares(pipe, "pause"):
            return
        with pytest.raises(PipelineStateError):
            await pipe.resume()
        await pipe.pause()
        await pipe.resume()
        with pytest.raises(PipelineStateError):
            await pipe.resume()
        await pipe.push(payload=b"still-consuming")
        job = await pipe.receive()
        await job.ack()

    @conformance_case
    async def test_runtime_pause_and_resume(self, h: Harness) -> None:
        """Through :class:`~rrjobs.Jobs`: pause holds jobs, resume hands them to handlers."""
        rec = Recorder()
        name = h.new_name()
        jobs = h.runtime(rec.app, {name: h.pipeline_entry(name)}, consume=[name])
        async with jobs:
            (stat,) = await jobs.stat()
            assert stat.state.ready is True, "a pipeline in consume is not ready after start"
            await jobs.pause([name])
            with pytest.raises(PipelineStateError):
                await jobs.pause([name])
            for i in range(2):
                await jobs.push(Message("conformance.paused", f"p{i}".encode(), name))
            await rec.expect_count(0, h.factory.quiet_period)
            (stat,) = await jobs.stat()
            assert stat.state.ready is False
            await jobs.resume([name])
            handled = await rec.wait_for(2, h.factory.delivery_timeout)
            assert sorted(j.payload for j in handled) == [b"p0", b"p1"]
            (stat,) = await jobs.stat()
            assert stat.state.ready is True


class StateTests(SuiteBase):
    """``state()`` agrees with what was pushed, consumed and delayed."""

    @conformance_case
    async def test_state_names_the_pipeline(self, h: Harness) -> None:
        pipe = await h.pipe(priority=6, run=False)
        state = await pipe.state()
        assert (state.pipeline, state.driver, state.priority) == (pipe.name, h.factory.driver, 6)
        assert isinstance(state.queue, str)
        assert state.error_message == ""

    @conformance_case
    async def test_state_counts_pushed_and_delayed_jobs(self, h: Harness) -> None:
        pipe = await h.pipe(run=False)
        await pipe.push_many(3, prefix="ready")
        caps = pipe.capabilities
        delayed = 0
        if caps.delay:
            parked = PARKED if caps.max_delay is None else min(PARKED, caps.max_delay)
            for i in range(2):
                await pipe.push(payload=f"delayed-{i}".encode(), delay=parked)
            delayed = 2
        state = await h.eventually(
            pipe, lambda s: (s.active, s.delayed, s.reserved) == (3, delayed, 0),
            f"active=3 delayed={delayed} reserved=0")
        assert state.ready is False

    @conformance_case
    async def test_state_counts_reserved_and_settled_jobs(self, h: Harness) -> None:
        """Jobs held by a consumer are ``reserved``; settling them clears the count."""
        pipe = await h.pipe()
        await pipe.push_many(3, prefix="reserve")
        first, second = await pipe.receive_many(2)
        await h.eventually(pipe, lambda s: (s.active, s.reserved) == (1, 2),
                           "active=1 (queued) reserved=2 (held)")
        await first.ack()
        await h.eventually(pipe, lambda s: (s.active, s.reserved) == (1, 1),
                           "active=1 reserved=1 after one ack")
        await second.nack()
        await h.eventually(pipe, lambda s: (s.active, s.reserved) == (1, 0),
                           "active=1 reserved=0 after a nack")
        third = await pipe.receive()
        await third.ack()
        await h.eventually(pipe, lambda s: (s.active, s.delayed, s.reserved) == (0, 0, 0),
                           "all counts back to zero")

    @conformance_case
    async def test_state_ready_follows_run_pause_and_resume(self, h: Harness) -> None:
        pipe = await h.pipe(run=False)
        assert (await pipe.state()).ready is False
        await pipe.run()
        assert (await pipe.state()).ready is True
        if pipe.capabilities.pause:
            await pipe.pause()
            assert (await pipe.state()).ready is False
            await pipe.resume()
            assert (await pipe.state()).ready is True


class StopDestroyTests(SuiteBase):
    """Stopping never loses a job on a durable driver; stopped jobs leave the queue."""

    @conformance_case
    async def test_stop_removes_the_pipeline_jobs_from_the_priority_queue(self,
                                                                          h: Harness) -> None:
        pipe = await h.pipe()
        await pipe.push_many(3, prefix="stop")
        assert await pipe.wait_queued(3), "the jobs never reached the priority queue"
        await pipe.stop()
        assert pipe.queue.count(pipe.name) == 0

    @conformance_case
    async def test_stop_with_unacked_jobs_loses_nothing(self, h: Harness) -> None:
        """Held and queued jobs of a stopped consumer go to the next consumer
        (``durable``). A driver that is not durable keeps no job past its stop:
        they are out of the priority queue and no new driver gets them."""
        lease = h.short_lease()
        pipe = await h.pipe(lease=lease)
        sent = await pipe.push_many(3, prefix="unacked", headers={"k": ["v"]})
        held = await pipe.receive()
        await pipe.stop()
        if not pipe.capabilities.durable:
            assert pipe.queue.count(pipe.name) == 0
            assert not h.factory.shared_broker, (
                "a driver that is not durable on a shared broker: the suite cannot tell "
                "which of its jobs a stop may keep")
            await h.assert_not_shared(pipe, f"the stopped driver's jobs (one held: {held.id})")
            return
        other = await h.second_consumer(pipe)
        timeout = h.factory.redelivery_timeout + (lease or 0)
        jobs = []
        for _ in sent:  # settle each at once: a short lease must not expire meanwhile
            job = await other.receive(within=timeout)
            await job.ack()
            jobs.append(job)
        assert sorted(j.id for j in jobs) == sorted(m.id for m in sent)
        assert held.id in {j.id for j in jobs}
        assert sorted(j.payload for j in jobs) == sorted(m.payload for m in sent)
        assert all(j.headers.get("k") == ["v"] for j in jobs)
        await other.expect_nothing()

    @conformance_case
    async def test_destroy_removes_the_pipeline_jobs_from_the_priority_queue(self,
                                                                             h: Harness) -> None:
        gate = asyncio.Event()

        async def hold(job: Job, number: int) -> None:
            await gate.wait()

        rec = Recorder(hold)
        name = h.new_name()
        jobs = h.runtime(rec.app, {name: h.pipeline_entry(name)}, consume=[name],
                         num_workers=1)
        async with jobs:
            for i in range(5):
                await jobs.push(Message("conformance.destroy", f"d{i}".encode(), name))
            await rec.wait_for(1, h.factory.delivery_timeout)
            assert await poll(lambda: jobs.queue.count(name) == 4, h.factory.delivery_timeout), (
                "the backlog never reached the priority queue")
            assert await jobs.destroy([name]) == [name]
            assert jobs.queue.count(name) == 0
            assert name not in jobs.list()
            gate.set()
            await rec.expect_count(1, h.factory.quiet_period)
