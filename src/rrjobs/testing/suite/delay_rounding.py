"""Delay rounding: a delay is rounded up to the driver's granularity, never down.

A broker keeps delays in whole units (SQS ``DelaySeconds``, RabbitMQ's
millisecond TTLs, RoadRunner's whole-second ``rr_delay``). The driver rounds
a delay *up* to that unit, so a job is never delivered before its delay:
``delay=1.0000001`` on a whole-second broker is delivered after 2 s, not 1 s.

The granularity is the driver's ``capabilities.delay_granularity`` when it
declares one, else the factory's :attr:`~rrjobs.testing.DriverFactory.delay_granularity`
(what the broker is known to keep; 0 for drivers that time delays
themselves).
"""

from __future__ import annotations

import math
import time

from rrjobs.testing.harness import CLOCK_SLACK, Harness, Pipe, conformance_case, now
from rrjobs.testing.suite.base import SuiteBase

#: A delay a hair over one second: rounding it down gives 1 s.
OVER_ONE_SECOND = 1.0000001


def granularity(h: Harness, pipe: Pipe) -> float:
    declared = getattr(pipe.capabilities, "delay_granularity", None)
    if isinstance(declared, int | float) and not isinstance(declared, bool) and declared > 0:
        return float(declared)
    return h.factory.delay_granularity


def earliest(delay: float, unit: float) -> float:
    """``delay`` rounded up to a multiple of ``unit`` (``delay`` itself for 0)."""
    if unit <= 0:
        return delay
    return math.ceil(delay / unit - 1e-12) * unit


class DelayRoundingTests(SuiteBase):
    """A delay just over a granularity step is never delivered early."""

    async def _check(self, h: Harness, pipe: Pipe, delay: float) -> None:
        unit = granularity(h, pipe)
        due = earliest(delay, unit)
        resolution = time.get_clock_info("monotonic").resolution
        start = now()
        sent = await pipe.push(payload=b"rounding", delay=delay)
        job = await pipe.receive(within=due + h.factory.delay_tolerance + 1)
        elapsed = now() - start
        assert job.id == sent.id
        await job.ack()
        assert elapsed >= delay - resolution, (
            f"delay={delay!r}: delivered after {elapsed:.6f}s, before the delay")
        # The broker's clock is not ours: the step itself is checked with timer slack.
        assert elapsed >= due - CLOCK_SLACK, (
            f"delay={delay!r}: delivered after {elapsed:.6f}s; with a granularity of "
            f"{unit:g}s the delay rounds up to {due:g}s (rounded down?)")
        assert elapsed <= due + h.factory.delay_tolerance, (
            f"delay={delay!r}: delivered after {elapsed:.3f}s, more than "
            f"{h.factory.delay_tolerance:g}s after {due:g}s")

    @conformance_case
    async def test_push_delay_just_over_a_second_is_not_rounded_down(self, h: Harness) -> None:
        pipe = await h.pipe()
        if not await h.declares(pipe, "delay"):
            return
        await self._check(h, pipe, OVER_ONE_SECOND)

    @conformance_case
    async def test_requeue_delay_just_over_a_second_is_not_rounded_down(self,
                                                                        h: Harness) -> None:
        pipe = await h.pipe()
        if not await h.declares(pipe, "delay"):
            return
        unit = granularity(h, pipe)
        due = earliest(OVER_ONE_SECOND, unit)
        await pipe.push(payload=b"requeue-rounding")
        job = await pipe.receive()
        start = now()
        await job.requeue(delay=OVER_ONE_SECOND)
        again = await pipe.receive(within=due + h.factory.delay_tolerance + 1)
        elapsed = now() - start
        await again.ack()
        assert elapsed >= due - CLOCK_SLACK, (
            f"requeue(delay={OVER_ONE_SECOND!r}): delivered again after {elapsed:.6f}s; "
            f"with a granularity of {unit:g}s the delay rounds up to {due:g}s")
