"""Settlement racing a lease extension.

The worker pool extends a running handler's lease every ``lease / 2``
seconds, so an extension can still be on its way to the broker when the
handler returns and the job is settled. Whatever the interleaving, the job is
settled exactly once on the broker and neither call raises.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from rrjobs.core.job import Job
from rrjobs.testing.harness import Harness, Pipe, conformance_case, refuses_extension
from rrjobs.testing.suite.base import SuiteBase
from rrjobs.testing.suite.settlement import LONG_LEASE, quiet_for

Settle = Callable[[Job], Awaitable[None]]


async def _ack(job: Job) -> None:
    await job.ack()


async def _nack(job: Job) -> None:
    await job.nack()


async def _nack_requeue(job: Job) -> None:
    await job.nack(requeue=True)


async def _requeue(job: Job) -> None:
    await job.requeue({"raced": ["1"]})


class SettleDuringLeaseExtensionTests(SuiteBase):
    """``ack``/``nack``/``requeue`` issued while ``extend_lease`` is in flight.

    A driver with ``lease_extension`` must let the settlement and the extension
    both return without an exception, in either order of arrival, and the
    broker must see exactly one settlement: an acknowledged or nacked job is
    never delivered again (to this consumer or another one on the same broker
    queue), a requeued one is delivered exactly once more. An extension that
    arrives after the job was settled is a no-op, never an error and never a
    new reservation. A driver without ``lease_extension`` refuses the extension
    with :class:`~rrjobs.core.errors.UnsupportedFeatureError` and settles the
    job as usual (each test checks that instead).
    """

    async def _race(self, h: Harness, settle: Settle, *, redelivered: bool,
                    extension_first: bool) -> None:
        lease = h.short_lease()
        pipe = await h.pipe(lease=lease)
        # The other consumer starts before the push: on a loaded machine starting it can
        # take longer than a short lease, which runs from the delivery.
        others = [await h.second_consumer(pipe)] if h.factory.shared_broker else []
        sent = await pipe.push(payload=b"race")
        job = await _receive_from_any(pipe, others, h, "the job")
        assert job.id == sent.id
        if pipe.capabilities.lease_extension:
            await _settle_racing_extension(job, settle, lease or LONG_LEASE,
                                           extension_first=extension_first)
        else:
            await refuses_extension(job)
            await settle(job)
        if redelivered:
            again = await _receive_from_any(pipe, others, h, "the requeued job")
            assert (again.id, again.payload) == (sent.id, b"race")
            await again.ack()
        await pipe.expect_nothing(quiet_for(h, lease))
        for other in others:
            await other.expect_nothing(0)

    @conformance_case
    async def test_ack_racing_lease_extension_is_final(self, h: Harness) -> None:
        await self._race(h, _ack, redelivered=False, extension_first=True)

    @conformance_case
    async def test_nack_racing_lease_extension_is_final(self, h: Harness) -> None:
        await self._race(h, _nack, redelivered=False, extension_first=True)

    @conformance_case
    async def test_nack_requeue_racing_lease_extension_redelivers_once(self,
                                                                       h: Harness) -> None:
        await self._race(h, _nack_requeue, redelivered=True, extension_first=True)

    @conformance_case
    async def test_requeue_racing_lease_extension_redelivers_once(self, h: Harness) -> None:
        await self._race(h, _requeue, redelivered=True, extension_first=True)

    @conformance_case
    async def test_lease_extension_arriving_after_ack_is_a_no_op(self, h: Harness) -> None:
        """The settlement leaves first; the extension is issued on the same tick."""
        await self._race(h, _ack, redelivered=False, extension_first=False)

async def _settle_racing_extension(job: Job, settle: Settle, extension: float, *,
                                   extension_first: bool) -> None:
    """``settle(job)`` and ``job.extend_lease(extension)`` in flight together:
    neither raises."""
    if extension_first:
        extend = asyncio.ensure_future(job.extend_lease(extension))
        # Let the extension start its broker round trip, not finish it.
        await asyncio.sleep(0)
        settling = asyncio.ensure_future(settle(job))
    else:
        settling = asyncio.ensure_future(settle(job))
        extend = asyncio.ensure_future(job.extend_lease(extension))
    outcome = await asyncio.gather(extend, settling, return_exceptions=True)
    errors = [repr(e) for e in outcome if isinstance(e, BaseException)]
    assert not errors, f"extend_lease racing {settle.__name__.lstrip('_')}: {errors}"


async def _receive_from_any(pipe: Pipe, others: list[Pipe], h: Harness, what: str) -> Job:
    """The one delivery of ``what``, from whichever consumer of the broker queue gets it."""
    pipes = [pipe, *others]
    waits = [asyncio.ensure_future(p.queue.extract_min()) for p in pipes]
    try:
        await asyncio.wait(waits, timeout=h.factory.delivery_timeout,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
        results = await asyncio.gather(*waits, return_exceptions=True)
    got = [r for r in results if isinstance(r, Job)]
    assert got, f"{what} was not delivered within {h.factory.delivery_timeout:g}s"
    assert len(got) == 1, f"{what} was delivered {len(got)} times: {got!r}"
    return got[0]
