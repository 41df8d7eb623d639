"""Concurrency (each job once) and at-least-once across a consumer's death."""

from __future__ import annotations

import asyncio

from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.testing.harness import Harness, Pipe, Recorder, conformance_case, poll
from rrjobs.testing.suite.base import SuiteBase
from rrjobs.testing.suite.delivery import assert_headers
from rrjobs.testing.suite.priority import assert_order


class ConcurrencyTests(SuiteBase):
    """N workers, M jobs, no failure injected: each job is processed exactly once."""

    @conformance_case
    async def test_many_workers_process_each_job_once(self, h: Harness) -> None:
        workers, count = h.factory.concurrency_workers, h.factory.concurrency_jobs

        async def work(job: Job, number: int) -> None:
            await asyncio.sleep(0)

        rec = Recorder(work)
        name = h.new_name()
        jobs = h.runtime(rec.app, {name: h.pipeline_entry(name)}, consume=[name],
                         num_workers=workers)
        async with jobs:
            msgs = [Message("conformance.many", f"m{i}".encode(), name) for i in range(count)]
            half = count // 2
            await jobs.push_batch(msgs[:half])
            await asyncio.gather(*(jobs.push(m) for m in msgs[half:]))
            handled = await rec.wait_for(count, h.factory.delivery_timeout + count / 50)
            await rec.expect_count(count, h.factory.quiet_period)
            ids = [j.id for j in handled]
            assert len(ids) == len(set(ids)), "a job was processed more than once"
            assert set(ids) == {m.id for m in msgs}


            async def all_acked() -> bool:
                (stat,) = await jobs.stat()
                return stat.counters.ok >= count

            await poll(all_acked, h.factory.delivery_timeout)
            (stat,) = await jobs.stat()
            assert (stat.counters.pushed, stat.counters.ok, stat.counters.failed) == (
                count, count, 0)

    @conformance_case
    async def test_concurrent_pushes_are_each_delivered_once(self, h: Harness) -> None:
        pipe = await h.pipe()
        msgs = [pipe.message(payload=f"c{i}".encode()) for i in range(50)]
        await asyncio.gather(*(pipe.driver.push(m) for m in msgs))
        jobs = await pipe.receive_many(len(msgs))
        assert sorted(j.id for j in jobs) == sorted(m.id for m in msgs)
        for job in jobs:
            await job.ack()
        await pipe.expect_nothing()

    @conformance_case
    async def test_a_full_priority_queue_delays_jobs_but_loses_none(self, h: Harness) -> None:
        """Backpressure: with room for 2 jobs, 20 still arrive, once each, in order."""
        pipe = await h.pipe(queue_size=2)
        sent = await pipe.push_many(20, prefix="backpressure")
        got = []
        for _ in sent:
            job = await pipe.receive()
            got.append(job)
            await job.ack()
        assert_order(pipe, [j.id for j in got], [m.id for m in sent])
        await pipe.expect_nothing()

    @conformance_case
    async def test_two_consumers_share_a_queue_without_duplicates(self, h: Harness) -> None:
        """Where the broker is shared; else the one driver gets every job once
        and another with the same options none."""
        pipe = await h.pipe()
        if not h.factory.shared_broker:
            sent = await pipe.push_many(40, prefix="alone")
            jobs = await pipe.receive_many(len(sent))
            assert sorted(j.id for j in jobs) == sorted(m.id for m in sent)
            await h.assert_not_shared(pipe, "the first driver's 40 jobs")
            for job in jobs:
                await job.ack()
            await pipe.expect_nothing()
            return
        other = await h.second_consumer(pipe)
        sent = await pipe.push_many(40, prefix="shared")
        seen: list[str] = []
        done = asyncio.Event()

        async def drain(p: Pipe) -> None:
            while True:
                job = await p.queue.extract_min()
                seen.append(job.id)
                await job.ack()
                if len(seen) >= len(sent):
                    done.set()

        tasks = [asyncio.create_task(drain(p)) for p in (pipe, other)]
        try:
            async with asyncio.timeout(h.factory.delivery_timeout):
                await done.wait()
        except TimeoutError:
            raise AssertionError(f"{len(seen)} of {len(sent)} jobs were delivered") from None
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        assert len(seen) == len(set(seen)), "two consumers got the same job"
        assert set(seen) == {m.id for m in sent}
        await pipe.expect_nothing()
        await other.expect_nothing(0)


class AtLeastOnceTests(SuiteBase):
    """A job received but never settled is redelivered when its consumer dies
    (``redelivery_on_crash``); a driver that does not declare it loses the job
    with its consumer, and says so."""

    @conformance_case
    async def test_consumer_dying_before_ack_gets_the_job_redelivered(self,
                                                                      h: Harness) -> None:
        lease = h.short_lease()
        pipe = await h.pipe(lease=lease)
        sent = await pipe.push(name="conformance.crash", payload=b"survive",
                               headers={"h": ["1", "2"]})
        job = await pipe.receive()
        assert job.id == sent.id
        await h.factory.kill_consumer(pipe)
        if not pipe.capabilities.redelivery_on_crash:
            assert not h.factory.shared_broker, (
                "a driver without redelivery_on_crash on a shared broker: the suite cannot "
                "tell where its unsettled job went")
            await h.assert_not_shared(pipe, "the dead consumer's unsettled job")
            return
        other = await h.second_consumer(pipe)
        again = await other.receive(within=h.factory.redelivery_timeout + (lease or 0))
        assert (again.id, again.name, again.payload) == (sent.id, sent.name, b"survive")
        assert_headers(again.headers, {"h": ["1", "2"]})
        await again.ack()
        await other.expect_nothing()
