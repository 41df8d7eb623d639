"""Nack, auto-ack and lease extension."""

from __future__ import annotations

import asyncio

from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.testing.harness import (
    CLOCK_SLACK,
    Harness,
    Recorder,
    conformance_case,
    hook,
    now,
    poll,
    refuses_extension,
)
from rrjobs.testing.suite.base import SuiteBase
from rrjobs.testing.suite.delivery import assert_headers


def quiet_for(h: Harness, lease: float | None) -> float:
    """Long enough that a broker would have redelivered an unsettled job."""
    return max(h.factory.quiet_period, 1.5 * lease if lease else 0.0)


class NackTests(SuiteBase):
    """``nack()`` never redelivers; ``nack(requeue=True)`` always does."""

    @conformance_case
    async def test_nack_without_requeue_is_never_redelivered(self, h: Harness) -> None:
        """The job is gone from the pipeline; where the driver declares
        ``dead_letter`` it is in the broker's dead-letter store."""
        lease = h.short_lease()
        pipe = await h.pipe(lease=lease)
        dead_letter = pipe.capabilities.dead_letter
        if dead_letter:
            await hook(h.factory.dead_letters(pipe))
        payload = f"dead-{pipe.name}".encode()
        await pipe.push(payload=payload)
        job = await pipe.receive()
        await job.nack()
        assert job.settled == "nack"
        await pipe.expect_nothing(quiet_for(h, lease))
        await h.eventually(pipe, lambda s: (s.active, s.delayed, s.reserved) == (0, 0, 0),
                           "the nacked job gone from the pipeline")
        if dead_letter:

            async def dead_lettered() -> bool:
                return payload in await h.factory.dead_letters(pipe)

            assert await poll(dead_lettered, h.factory.delivery_timeout, 0.05), (
                "the nacked job never reached the dead-letter store")

    @conformance_case
    async def test_nack_with_requeue_is_redelivered(self, h: Harness) -> None:
        pipe = await h.pipe()
        sent = await pipe.push(name="conformance.nack", payload=b"again",
                               headers={"h": ["1", "2"]}, priority=6)
        job = await pipe.receive()
        await job.nack(requeue=True)
        again = await pipe.receive()
        assert again.settled is None
        assert (again.id, again.name, again.payload) == (sent.id, "conformance.nack", b"again")
        assert again.priority == 6
        assert_headers(again.headers, {"h": ["1", "2"]})
        await again.ack()
        await pipe.expect_nothing()


class AutoAckTests(SuiteBase):
    """An ``auto_ack`` job is acknowledged on receipt and never redelivered."""

    @conformance_case
    async def test_auto_ack_job_is_never_redelivered(self, h: Harness) -> None:
        lease = h.short_lease()
        pipe = await h.pipe(lease=lease)
        sent = await pipe.push(payload=b"auto", auto_ack=True)
        job = await pipe.receive()
        assert (job.id, job.auto_ack) == (sent.id, True)
        await job.ack()  # what the runtime does on receipt
        await job.nack(requeue=True)  # a no-op on an auto_ack job
        await job.ack()
        await pipe.expect_nothing(quiet_for(h, lease))

    @conformance_case
    async def test_failing_auto_ack_job_is_not_retried(self, h: Harness) -> None:
        async def fail(job: Job, number: int) -> None:
            raise RuntimeError("handler failed")

        rec = Recorder(fail)
        name = h.new_name()
        entry = h.pipeline_entry(name, retry={"max_attempts": 3, "backoff": 0})
        jobs = h.runtime(rec.app, {name: entry}, consume=[name])
        async with jobs:
            await jobs.push(Message("conformance.auto", b"auto", name, auto_ack=True))
            await rec.wait_for(1, h.factory.delivery_timeout)
            await rec.expect_count(1, quiet_for(h, None))
            (stat,) = await jobs.stat()
            assert (stat.counters.failed, stat.counters.retried) == (1, 0)


class LeaseTests(SuiteBase):
    """A job whose lease is extended stays with its consumer; an expired one returns.

    A driver without ``lease_extension`` refuses ``extend_lease``
    (:class:`UnsupportedFeatureError`), its jobs carry no lease, and a held
    job stays with its consumer as long as the broker's own deadline allows.
    """

    @conformance_case
    async def test_extended_lease_keeps_the_job(self, h: Harness) -> None:
        """Held for 2.5 ack deadlines with extensions: never redelivered, to anyone."""
        lease = h.short_lease()
        pipe = await h.pipe(lease=lease)
        sent = await pipe.push(payload=b"long-job")
        job = await pipe.receive()
        assert job.id == sent.id
        # Started once the job is held, so that it cannot win the job in the first place.
        others = [await h.second_consumer(pipe)] if h.factory.shared_broker else []
        extensions = pipe.capabilities.lease_extension
        if not extensions:
            await refuses_extension(job)
        step = hold_step(h, lease)
        end = now() + 10 * step
        while now() < end:
            await pipe.expect_nothing(step)
            if extensions:
                await job.extend_lease(lease or LONG_LEASE)
        for other in others:
            await other.expect_nothing(0)
        await job.ack()
        await pipe.expect_nothing(6 * step)
        for other in others:
            await other.expect_nothing(0)

    @conformance_case
    async def test_a_running_handler_keeps_its_job_past_the_ack_deadline(self,
                                                                         h: Harness) -> None:
        """Through the runtime: the worker pool extends the lease while the handler
        runs (where the driver has leases); the job is handled once, and well."""
        lease = h.short_lease()
        hold = 10 * hold_step(h, lease)

        async def slow(job: Job, number: int) -> None:
            await asyncio.sleep(hold)

        rec = Recorder(slow, timeout=60 + 2 * hold)
        name = h.new_name()
        # exec_ttl only sets how often the pool's watchdog looks at running
        # handlers (a tenth of it); the handler's own timeout is longer.
        jobs = h.runtime(rec.app, {name: h.pipeline_entry(name, lease=lease)}, consume=[name],
                         exec_ttl=lease or 0.0)
        async with jobs:
            await jobs.push(Message("conformance.slow", b"slow", name))
            await rec.wait_for(1, h.factory.delivery_timeout)
            await rec.expect_count(1, hold + 6 * hold_step(h, lease))
            (stat,) = await jobs.stat()
            assert (stat.counters.ok, stat.counters.failed) == (1, 0)

    @conformance_case
    async def test_unextended_lease_expires_and_the_job_returns(self, h: Harness) -> None:
        """The control for the tests above: the deadline is real. Without a short
        ack deadline the factory can set, a held job does not come back on its own."""
        lease = h.short_lease()
        pipe = await h.pipe(lease=lease)
        sent = await pipe.push(payload=b"slow-job")
        job = await pipe.receive()
        if lease is None:
            await pipe.expect_nothing(quiet_for(h, None))
            await job.ack()
            await pipe.expect_nothing()
            return
        start = now()
        again = await pipe.receive(within=lease + h.factory.redelivery_timeout)
        assert now() - start >= lease - 0.5 - CLOCK_SLACK, "redelivered long before the deadline"
        assert (again.id, again.payload) == (sent.id, b"slow-job")
        await again.ack()
        assert job.settled is None

    @conformance_case
    async def test_jobs_carry_their_lease(self, h: Harness) -> None:
        """``job.lease`` tells the worker pool when to extend (half of it); a
        driver without ``lease_extension`` leaves it ``None`` (nothing to extend)."""
        lease = h.short_lease()
        pipe = await h.pipe(lease=lease)
        await pipe.push(payload=b"lease")
        job = await pipe.receive()
        value = getattr(job, "lease", None)
        if not pipe.capabilities.lease_extension:
            assert value is None, (
                f"a driver without lease_extension set job.lease={value!r}: the worker pool "
                "would try to extend it")
            await refuses_extension(job)
        else:
            assert isinstance(value, int | float) and not isinstance(value, bool), (
                "a driver with lease_extension must set job.lease (seconds)")
            assert 0 < value <= (lease or LONG_LEASE) + CLOCK_SLACK
        await job.ack()


#: The extension asked for when the factory sets no short ack deadline.
LONG_LEASE = 30.0


def hold_step(h: Harness, lease: float | None) -> float:
    """A tenth of how long the lease tests hold a job: a quarter of the short
    ack deadline (so 2.5 deadlines in all), else of the quiet period."""
    return (lease if lease is not None else h.factory.quiet_period) / 4
