"""Delays: on push, on ``nack(requeue=True, delay)`` and on ``requeue(headers, delay)``.

Each delay is checked for "not before" (exactly, but for a hair of timer
slack) and "not much after" (``factory.delay_tolerance``, generous for a
loaded machine).
"""

from __future__ import annotations

import pytest

from rrjobs.core.errors import UnsupportedFeatureError
from rrjobs.core.headers import RR_ATTEMPTS
from rrjobs.testing.harness import CLOCK_SLACK, Harness, conformance_case, now
from rrjobs.testing.suite.base import SuiteBase
from rrjobs.testing.suite.delivery import assert_headers

#: The delay a driver that declares no ``max_delay`` must take: a week (SQS's
#: own limit is 15 minutes; a driver without a maximum must go past such limits).
LONG_DELAY = 7 * 24 * 3600.0


def assert_on_time(h: Harness, elapsed: float, delay: float, what: str) -> None:
    assert elapsed >= delay - CLOCK_SLACK, (
        f"{what}: delivered after {elapsed:.3f}s, before its delay of {delay:g}s")
    assert elapsed <= delay + h.factory.delay_tolerance, (
        f"{what}: delivered after {elapsed:.3f}s, more than "
        f"{h.factory.delay_tolerance:g}s after its delay of {delay:g}s")


class DelayTests(SuiteBase):
    """Delayed jobs arrive not before their delay and not much after it."""

    @conformance_case
    async def test_push_with_a_delay(self, h: Harness) -> None:
        """A delayed job waits; a job pushed after it without delay does not."""
        pipe = await h.pipe()
        if not await h.declares(pipe, "delay"):
            return
        d = h.factory.delay_unit
        start = now()
        delayed = await pipe.push(payload=b"later", delay=d)
        prompt = await pipe.push(payload=b"now")
        first = await pipe.receive()
        assert first.id == prompt.id, "a delayed job held back the job pushed after it"
        await first.ack()
        job = await pipe.receive(within=d + h.factory.delay_tolerance + 1)
        assert_on_time(h, now() - start, d, "push delay")
        assert (job.id, job.payload) == (delayed.id, b"later")
        await job.ack()

    @conformance_case
    async def test_delays_fire_in_due_order(self, h: Harness) -> None:
        pipe = await h.pipe()
        if not await h.declares(pipe, "delay"):
            return
        d = h.factory.delay_unit
        start = now()
        long = await pipe.push(payload=b"long", delay=2 * d)
        short = await pipe.push(payload=b"short", delay=d)
        first = await pipe.receive(within=d + h.factory.delay_tolerance + 1)
        assert first.id == short.id
        assert_on_time(h, now() - start, d, "shorter delay")
        second = await pipe.receive(within=2 * d + h.factory.delay_tolerance + 1)
        assert second.id == long.id
        assert_on_time(h, now() - start, 2 * d, "longer delay")
        await first.ack()
        await second.ack()

    @conformance_case
    async def test_nack_with_requeue_and_delay(self, h: Harness) -> None:
        pipe = await h.pipe()
        if not await h.declares(pipe, "delay"):
            return
        d = h.factory.delay_unit
        sent = await pipe.push(payload=b"retry-later", headers={"h": ["1", "2"]})
        job = await pipe.receive()
        start = now()
        await job.nack(requeue=True, delay=d)
        again = await pipe.receive(within=d + h.factory.delay_tolerance + 1)
        assert_on_time(h, now() - start, d, "nack delay")
        assert (again.id, again.name, again.payload) == (sent.id, sent.name, b"retry-later")
        assert_headers(again.headers, {"h": ["1", "2"]})
        await again.ack()

    @conformance_case
    async def test_requeue_merges_headers_and_applies_the_delay(self, h: Harness) -> None:
        pipe = await h.pipe()
        if not await h.declares(pipe, "delay"):
            return
        d = h.factory.delay_unit
        sent = await pipe.push(payload=b"requeue",
                               headers={"keep": ["1"], "replace": ["old", "older"]})
        job = await pipe.receive()
        start = now()
        await job.requeue({"replace": ["new1", "new2"], "added": ["x"]}, delay=d)
        again = await pipe.receive(within=d + h.factory.delay_tolerance + 1)
        assert_on_time(h, now() - start, d, "requeue delay")
        assert (again.id, again.payload) == (sent.id, b"requeue")
        assert_headers(again.headers, {"keep": ["1"], "replace": ["new1", "new2"],
                                       "added": ["x"]})
        await again.ack()
        await pipe.expect_nothing()

    @conformance_case
    async def test_requeue_without_delay_redelivers_with_merged_headers(self,
                                                                        h: Harness) -> None:
        """What the runtime's retry does: ``requeue({rr_attempts: [n]})``."""
        pipe = await h.pipe()
        sent = await pipe.push(payload=b"attempts", headers={"a": ["b"]})
        job = await pipe.receive()
        assert job.attempts == 0
        await job.requeue({RR_ATTEMPTS: ["1"]})
        again = await pipe.receive()
        assert again.id == sent.id
        assert again.attempts == 1
        assert_headers(again.headers, {"a": ["b"], RR_ATTEMPTS: ["1"]})
        await again.ack()

    @conformance_case
    async def test_delays_beyond_the_maximum_are_refused(self, h: Harness) -> None:
        """Over a declared ``max_delay``, every delay raises; a driver that declares
        none takes a delay of :data:`LONG_DELAY` on push, ``nack`` and ``requeue``
        and holds each job back."""
        pipe = await h.pipe()
        if not await h.declares(pipe, "delay"):
            return
        limit = pipe.capabilities.max_delay
        if limit is None:
            await pipe.push(payload=b"parked", delay=LONG_DELAY)
            await pipe.push_many(2, prefix="plain")
            first, second = await pipe.receive_many(2)
            await first.nack(requeue=True, delay=LONG_DELAY)
            await second.requeue({"parked": ["1"]}, delay=LONG_DELAY)
            await pipe.expect_nothing()
            return
        with pytest.raises(UnsupportedFeatureError):
            await pipe.push(payload=b"too-late", delay=limit + 1)
        await pipe.push(payload=b"plain")
        job = await pipe.receive()
        with pytest.raises(UnsupportedFeatureError):
            await job.nack(requeue=True, delay=limit + 1)
        with pytest.raises(UnsupportedFeatureError):
            await job.requeue(delay=limit + 1)
        assert job.settled is None
        await job.ack()
