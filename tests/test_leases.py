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
