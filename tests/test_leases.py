"""The kit's leases (``rrjobs.core.leases``): the handles a consumer holds, the check
before a settlement, and lease extension, on a fake broker that leases messages."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from typing import Any

import pytest

from rrjobs.core.capabilities import Capabilities
from rrjobs.core.errors import AckLostError, PipelineStateError
from rrjobs.core.job import Job
from rrjobs.core.leases import Leases, LeasingDriver
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.state import State


async def test_leases_forget_what_ran_out_and_keep_what_the_driver_keeps_alive() -> None:
    now = asyncio.get_running_loop().time()
    leases = Leases()
    leases.hold("short", now + 0.05)
    leases.hold("kept")  # kept alive by the driver: no end
    assert leases.holds("short") and leases.holds("kept") and len(leases) == 2
    leases.extended("kept", now)  # a lease the driver keeps alive is not cut short
    leases.extended("gone", now + 10)  # one let go is not held again
    assert "gone" not in leases
    await asyncio.sleep(0.06)
    assert not leases.holds("short") and "short" not in leases  # ran out: forgotten
    assert leases.holds("kept")
    leases.let_go("kept")
    assert list(leases) == [] and not leases.holds("kept")


class _Leasing(LeasingDriver):
    name = "fakelease"
    capabilities = Capabilities(lease_extension=True)
    max_lease = 600
    lease_lost = "its lease ran out"

    def __init__(self) -> None:
        super().__init__(Pipeline(name="p", driver="fakelease"), PriorityQueue(), 4)
        self.changes: list[tuple[Any, int]] = []

    async def change_lease(self, job: Job, seconds: int) -> None:
        await asyncio.sleep(0)
        self.changes.append((job.handle, seconds))

    async def fetch(self, max_messages: int) -> Sequence[Any]:
        return []

    async def _send(self, msg: Message) -> None:
        raise NotImplementedError

    async def state(self) -> State:
        return self.state_of("q")


def _job(d: _Leasing, handle: str) -> Job:
    return Job(d, id=f"j-{handle}", name="n", payload=b"", headers={}, pipeline="p",
               priority=1, handle=handle, lease=30.0)


async def test_extend_clamps_to_whole_seconds_and_moves_a_finite_lease_on() -> None:
    d = _Leasing()
    loop = asyncio.get_running_loop()
    d.leases.hold("a", loop.time() + 0.05)
    d.leases.hold("b")
    await d.extend(_job(d, "a"), 0.2)
    await d.extend(_job(d, "b"), 10_000)
    assert d.changes == [("a", 1), ("b", 600)]
    await asyncio.sleep(0.1)  # past a's first lease, within the extended one
    assert d.still_held(_job(d, "a")) and d.still_held(_job(d, "b"))
    d.leases.extended("b", loop.time())  # still the driver's to keep alive
    assert d.leases.holds("b")


async def test_a_handle_no_longer_held_or_a_stopped_driver_refuse_settlement() -> None:
    d = _Leasing()
    d.leases.hold("a", asyncio.get_running_loop().time() - 1)  # ran out already
    with pytest.raises(AckLostError, match="fakelease: job j-a: its lease ran out"):
        d.check_held(_job(d, "a"))
    with pytest.raises(AckLostError):
        await d.extend(_job(d, "never"), 5)
    assert d.changes == [] and d.hold_at_pause
    d.leases.hold("c", math.inf)
    await d.stop()
    with pytest.raises(PipelineStateError, match="is stopped"):
        d.check_held(_job(d, "c"))


# -- the leases of queued jobs (PullDriver.renew_waiting, the task "renew") ----------------


class _Renewing(_Leasing):
    """A leasing broker with a 60 ms lease: the kit renews every 20 ms."""

    renew_batch = 2

    def __init__(self, lease: float = 0.06) -> None:
        super().__init__()
        self.lease = lease
        self.batches: list[list[Any]] = []
        self.rounds = 0
        self.round_done = asyncio.Event()
        self.gate: asyncio.Event | None = None  # set: renewals wait for it
        self.log_of: list[str] = []

    def queued_lease(self) -> float:
        return self.lease

    async def renew_queued(self, jobs: Sequence[Job], seconds: float
                           ) -> Sequence[BaseException | None]:
        self.batches.append([job.handle for job in jobs])
        if self.gate is not None:
            self.log_of.append("renewing")
            await self.gate.wait()
            self.log_of.append("renewed")
        return await super().renew_queued(jobs, seconds)

    async def renew_waiting(self) -> int:
        renewed = await super().renew_waiting()
        self.rounds += 1
        self.round_done.set()
        return renewed

    async def fetch(self, max_messages: int) -> Sequence[Any]:
        await asyncio.Event().wait()  # nothing from the broker: the tests deliver
        return []

    async def ack(self, job: Job) -> None:
        self.log_of.append(f"ack {job.handle}")
        self.leases.let_go(job.handle)
        self.settled(job)

    async def _close(self) -> None:
        self.log_of.append(f"give back {sorted(j.handle for j in self.held)}")
        self.held = []


async def _deliver(d: _Renewing, *handles: str) -> list[Job]:
    ends = asyncio.get_running_loop().time() + d.lease
    jobs = []
    for handle in handles:
        d.leases.hold(handle, ends)
        job = _job(d, handle)
        await d.lane.deliver(job)
        jobs.append(job)
    return jobs


async def _until(ready: Any) -> None:
    for _ in range(100):
        if ready():
            return
        await asyncio.sleep(0)
    raise AssertionError("never ready")


async def _rounds(d: _Renewing, n: int) -> None:
    async with asyncio.timeout(30):  # a bound on a broken loop, not a measurement
        while d.rounds < n:
            d.round_done.clear()
            await d.round_done.wait()


async def test_queued_jobs_are_renewed_in_batches_for_many_lease_periods() -> None:
    d = _Renewing()
    await d.run(d.pipeline)
    assert d.supervisor.running("renew")
    await _deliver(d, "a", "b", "c")
    await _rounds(d, 12)  # 12 thirds of the lease: four leases long
    assert all(d.leases.holds(h) for h in "abc"), "a queued job's lease ran out"
    assert max(map(len, d.batches)) == 2  # renew_batch
    renewed = [h for batch in d.batches for h in batch]
    assert min(renewed.count(h) for h in "abc") >= 11  # each one in (nearly) every round
    assert all(seconds == 1 for _, seconds in d.changes)  # the lease, in whole seconds
    await d.stop()


async def test_a_started_or_settled_job_is_not_renewed() -> None:
    d = _Renewing(lease=3600.0)  # the task waits; rounds are run here
    await d.run(d.pipeline)
    started, settled, _ = await _deliver(d, "started", "settled", "queued")
    assert d.queue.extract_nowait() is started  # a handler took it
    assert d.queue.extract_nowait() is settled
    await settled.ack()
    await d.lane.deliver(settled)  # (settled, yet back in the queue: still not renewed)
    assert await d.renew_waiting() == 1
    assert d.batches == [["queued"]]
    assert d.changes == [("queued", 600)]  # max_lease
    await d.stop()


async def test_a_settlement_waits_for_the_renewal_of_its_job() -> None:
    d = _Renewing(lease=3600.0)
    await d.run(d.pipeline)
    (job,) = await _deliver(d, "a")
    d.gate = asyncio.Event()
    renewal = asyncio.ensure_future(d.renew_waiting())
    await _until(lambda: d.log_of)
    assert d.log_of == ["renewing"]
    assert d.queue.extract_nowait() is job
    assert not job.ack_nowait()  # an extension is in flight: not on the hot path
    ack = asyncio.ensure_future(job.ack())
    for _ in range(10):
        await asyncio.sleep(0)
    assert d.log_of == ["renewing"]  # the ack waits
    d.gate.set()
    await asyncio.gather(renewal, ack)
    assert d.log_of == ["renewing", "renewed", "ack a"]
    await d.stop()


async def test_pause_and_stop_end_the_renewals_after_the_one_in_flight() -> None:
    d = _Renewing(lease=3600.0)
    await d.run(d.pipeline)
    await _deliver(d, "a", "b")
    d.gate = asyncio.Event()
    renewal = asyncio.ensure_future(d.renew_waiting())
    d._renewal = renewal  # as the task does
    await _until(lambda: d.log_of)
    pausing = asyncio.ensure_future(d.pause("p"))
    await asyncio.sleep(0.01)
    assert not pausing.done()  # waits for the renewal in flight
    d.gate.set()
    await pausing
    assert renewal.done() and not d.supervisor.running("renew")
    assert sorted(j.handle for j in d.held) == ["a", "b"] and len(d.queue) == 0
    await d.resume("p")
    assert d.supervisor.running("renew") and len(d.queue) == 2
    d.gate = None
    await d.stop()  # the queued jobs are given back at once, not left to their lease
    assert not d.supervisor.running("renew")
    assert d.log_of[-1] == "give back ['a', 'b']"


async def test_a_driver_without_a_lease_runs_no_renewals() -> None:
    d = _Renewing(lease=0.0)
    await d.run(d.pipeline)
    await _deliver(d, "a")
    assert not d.supervisor.running("renew")
    assert await d.renew_waiting() == 0 and d.batches == []
    await d.stop()
