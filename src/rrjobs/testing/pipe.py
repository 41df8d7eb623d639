"""``Pipe``: one pipeline's driver with a conformance test as its consumer.

The :class:`~rrjobs.testing.harness.Harness` builds pipes; the
:class:`~rrjobs.testing.factory.DriverFactory` hooks take them. This module
imports neither, so the two do not import each other.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

from rrjobs.core.capabilities import Capabilities
from rrjobs.core.interfaces import Driver
from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.state import State

Via = Literal["config", "declare"]


class Limits(Protocol):
    """The waits of a pipe's checks (a :class:`~rrjobs.testing.factory.DriverFactory`)."""

    @property
    def delivery_timeout(self) -> float:
        """The longest wait for a job that should be delivered."""

    @property
    def quiet_period(self) -> float:
        """How long a pipe waits to see that nothing is delivered."""


class Pipe:
    """One pipeline's driver with the test as its consumer.

    ``queue`` is private to this pipe, so everything in it was delivered by
    this driver. Not shared between tests; use from the test's loop only.
    """

    def __init__(self, limits: Limits, name: str, driver: Driver, queue: PriorityQueue,
                 pipeline: Pipeline, options: dict[str, Any], via: Via) -> None:
        self.limits = limits
        self.name = name
        self.driver = driver
        self.queue = queue
        self.pipeline = pipeline
        self.options = options
        self.via = via

    @property
    def capabilities(self) -> Capabilities:
        return self.driver.capabilities

    def __repr__(self) -> str:
        return f"<Pipe {self.name} ({self.via}) of {self.driver.name}>"

    # -- pushing ----------------------------------------------------------------------------

    def message(self, name: str = "conformance.job", payload: bytes = b"",
                **fields: Any) -> Message:
        """A :class:`Message` for this pipeline."""
        return Message(name, payload, self.name, **fields)

    async def push(self, name: str = "conformance.job", payload: bytes = b"",
                   **fields: Any) -> Message:
        """Push a job and return a copy of it *as sent* (the driver may fill
        in the inherited priority on the object it was given)."""
        msg = self.message(name, payload, **fields)
        sent = copy.deepcopy(msg)
        await self.driver.push(msg)
        return sent

    async def push_many(self, count: int, prefix: str = "job", **fields: Any) -> list[Message]:
        """Push ``count`` jobs one after the other, payloads ``<prefix>-<i>``."""
        return [await self.push(payload=f"{prefix}-{i}".encode(), **fields)
                for i in range(count)]

    # -- consuming ---------------------------------------------------------------------------

    async def receive(self, within: float | None = None) -> Job:
        """The next delivered job; fails the test if none comes ``within`` seconds."""
        limit = self.limits.delivery_timeout if within is None else within
        try:
            async with asyncio.timeout(limit):
                return await self.queue.extract_min()
        except TimeoutError:
            raise AssertionError(
                f"{self}: no job was delivered within {limit:g}s"
            ) from None

    async def receive_many(self, count: int, within: float | None = None) -> list[Job]:
        """``count`` delivered jobs in delivery order (one shared deadline)."""
        limit = self.limits.delivery_timeout if within is None else within
        got: list[Job] = []
        try:
            async with asyncio.timeout(limit):
                while len(got) < count:
                    got.append(await self.queue.extract_min())
        except TimeoutError:
            raise AssertionError(
                f"{self}: {len(got)} of {count} jobs were delivered within {limit:g}s"
            ) from None
        return got

    async def expect_nothing(self, within: float | None = None) -> None:
        """Fail the test if any job is delivered within ``within`` seconds."""
        limit = self.limits.quiet_period if within is None else within
        try:
            async with asyncio.timeout(limit):
                job = await self.queue.extract_min()
        except TimeoutError:
            return
        raise AssertionError(
            f"{self}: a job was delivered when none should be: {job!r} "
            f"payload={job.payload[:40]!r} headers={job.headers!r}"
        )

    async def wait_queued(self, count: int, within: float | None = None) -> bool:
        """Wait until ``count`` of this pipeline's jobs sit in the priority
        queue. Returns ``False`` on timeout (a driver may prefetch fewer)."""
        return await poll(lambda: self.queue.count(self.name) >= count,
                          self.limits.delivery_timeout if within is None else within)

    # -- lifecycle ---------------------------------------------------------------------------

    async def run(self) -> None:
        await self.driver.run(self.pipeline)

    async def pause(self) -> None:
        await self.driver.pause(self.name)

    async def resume(self) -> None:
        await self.driver.resume(self.name)

    async def stop(self) -> None:
        await self.driver.stop()

    async def state(self) -> State:
        return await self.driver.state()




async def poll(condition: Callable[[], bool | Awaitable[bool]], within: float,
               interval: float = 0.01) -> bool:
    """Check ``condition`` every ``interval`` s until it holds (``True``) or
    ``within`` s passed (``False``). For conditions that have no event; an awaitable
    result is awaited, and any other is taken for its truth."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while True:
        result = condition()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return True
        if loop.time() > end:
            return False
        await asyncio.sleep(interval)


