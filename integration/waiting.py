"""Waiting in the integration tests: for jobs in a pipeline's priority queue, for the
absence of one, and for a condition, each within a time limit (a broker's round trip on
a loaded machine is not a fixed time)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from rrjobs.core.job import Job
from rrjobs.core.queue import PriorityQueue
from rrjobs.testing.pipe import poll


async def take(queue: PriorityQueue, count: int = 1, within: float = 10.0) -> list[Job]:
    """The next ``count`` jobs of ``queue``, in its order; :class:`TimeoutError` if they do
    not all come within ``within`` seconds."""
    out: list[Job] = []
    async with asyncio.timeout(within):
        while len(out) < count:
            out.append(await queue.extract_min())
    return out


async def nothing(queue: PriorityQueue, within: float = 0.5) -> None:
    """Fail if a job reaches ``queue`` within ``within`` seconds."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(within):
            job = await queue.extract_min()
            raise AssertionError(f"unexpected job {job!r}")


async def eventually(check: Callable[[], Any], within: float = 10.0, what: str = "") -> None:
    """Poll ``check`` (a function, or one returning a coroutine) every 50 ms until its
    result is true; fail with ``what`` after ``within`` seconds."""
    if not await poll(check, within, 0.05):
        raise AssertionError(f"never happened within {within:g}s: {what}")
