"""The driver: one pipeline on one spool queue.

Capabilities, honestly declared:

* delays of any length, kept in the spool (durable), millisecond resolution;
* priorities, FIFO within a priority (the file names order the queue);
* durable: a pushed job is a file (``fsync``'d by default) before ``push`` returns;
* leases: a delivered job is reserved for ``visibility_timeout`` seconds and
  the lease can be extended; a consumer that dies without settling its jobs
  loses nothing, they return when their reservation expires;
* dead-letter: ``nack()`` moves the job to ``dead/``;
* pause/resume; headers of any shape; no payload limit.

Flow: ``push`` → file in ``new/`` → the consumer task reserves ready files
(``new/`` → ``cur/``), at most ``prefetch`` at a time → priority queue →
handler → ``ack``/``nack``/``requeue`` (see :mod:`my_awesome_driver.job`).
Every file operation runs in a thread: nothing here blocks the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from my_awesome_driver.config import Options, Settings
from my_awesome_driver.job import Item, to_attributes
from my_awesome_driver.spool import Delivery, Spool
from rrjobs.core.base import BaseDriver
from rrjobs.core.capabilities import Capabilities
from rrjobs.core.interfaces import Configurer
from rrjobs.core.message import Message
from rrjobs.core.options import options_from_config, options_from_pipeline
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.state import State

CAPABILITIES = Capabilities(
    delay=True,
    max_delay=None,
    delay_native=True,
    priority=True,
    durable=True,
    max_payload=None,
    lease_extension=True,
    dead_letter=True,
    redelivery_on_crash=True,
    pause=True,
    headers=True,
)


async def from_config(config_key: str, configurer: Configurer, settings: Settings,
                      pipeline: Pipeline, queue: PriorityQueue) -> Driver:
    """A driver for a pipeline of the config file (RoadRunner's ``FromConfig``).

    ``config_key`` is ``jobs.pipelines.<name>.config``: errors name that path.
    """
    options = options_from_config(configurer, config_key, Options)
    return await Driver.open(pipeline, queue, options, settings)


async def from_pipeline(pipeline: Pipeline, settings: Settings,
                        queue: PriorityQueue) -> Driver:
    """A driver for a pipeline declared at run time (RoadRunner's ``FromPipeline``)."""
    options = options_from_pipeline(pipeline, Options)
    return await Driver.open(pipeline, queue, options, settings)


class Driver(BaseDriver):
    """One pipeline. All methods run on the event loop; none blocks it.

    Concurrency: ``push`` may be called from many tasks at once; one consumer
    task moves jobs into the priority queue while the pipeline is consuming.
    """

    name = "my_awesome_driver"
    capabilities = CAPABILITIES

    def __init__(self, pipeline: Pipeline, queue: PriorityQueue, options: Options,
                 settings: Settings) -> None:
        pipeline["priority"] = options.priority  # validated: BaseDriver reads it
        super().__init__(pipeline, queue)
        self.options = options
        self.capabilities = replace(CAPABILITIES, dead_letter=options.dead_letter)
        self.spool = Spool(Path(settings.dir) / (options.queue or self.pipeline_name),
                           fsync=settings.fsync)
        #: Jobs this consumer reserved and nobody settled yet, by token.
        self._held: dict[str, Item] = {}
        self._wake = asyncio.Event()
        self._consumer: asyncio.Task[None] | None = None

    @classmethod
    async def open(cls, pipeline: Pipeline, queue: PriorityQueue, options: Options,
                   settings: Settings) -> Driver:
        driver = cls(pipeline, queue, options, settings)
        await asyncio.to_thread(driver.spool.create)
        return driver

    # -- pushing ------------------------------------------------------------------------

    async def _send(self, msg: Message) -> None:
        await self._send_batch([msg])

    async def _send_batch(self, msgs: Sequence[Message]) -> None:
        items = [(to_attributes(m), bytes(m.payload), m.priority, m.delay) for m in msgs]
        await asyncio.to_thread(self.spool.publish_many, items)
        self._wake.set()

    # -- consuming ----------------------------------------------------------------------

    async def _start_consuming(self) -> None:
        self._consumer = asyncio.get_running_loop().create_task(
            self._consume(), name=f"my_awesome_driver:{self.pipeline_name}")

    async def _reserve(self, limit: int) -> list[Delivery]:
        """Reserve in a thread; if cancelled meanwhile, hand the result back."""
        task = asyncio.ensure_future(asyncio.to_thread(
            self.spool.reserve, limit, self.options.visibility_timeout))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            got = await task
            await asyncio.to_thread(self.spool.release_many, got)
            raise

    async def _consume(self) -> None:
        while True:
            room = self.options.prefetch - len(self._held)
            got = await self._reserve(room) if room > 0 else []
            for i, delivery in enumerate(got):
                job = Item(self, delivery)
                self._held[delivery.token] = job
                try:
                    await self.queue.insert(job)  # waits only while the queue is full
                except asyncio.CancelledError:
                    for rest in got[i:]:
                        self._held.pop(rest.token, None)
                    await asyncio.to_thread(self.spool.release_many, got[i:])
                    raise
            if room <= 0 or len(got) < room:
                await self._idle()

    async def _idle(self) -> None:
        """Wait for a push, a settlement, the next due job or the poll interval."""
        wait = self.options.poll_interval
        next_due = await asyncio.to_thread(self.spool.next_due_in)
        if next_due is not None:
            wait = min(wait, next_due)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._wake.wait()
        self._wake.clear()

    def forget(self, job: Item) -> None:
        """``job`` was settled: it no longer counts against ``prefetch``."""
        self._held.pop(job.delivery.token, None)
        self._wake.set()

    async def _stop_consuming(self) -> None:
        if self._consumer is not None:
            self._consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._consumer
            self._consumer = None
        # Jobs still in the priority queue never reached a handler: hand them
        # back, in their places. Jobs in handlers keep their reservations.
        taken = [job for job in self.queue.remove(self.pipeline_name) if isinstance(job, Item)]
        for job in taken:
            self._held.pop(job.delivery.token, None)
        await asyncio.to_thread(self.spool.release_many, [job.delivery for job in taken])

    # -- state --------------------------------------------------------------------------

    async def state(self) -> State:
        counts = await asyncio.to_thread(self.spool.counts)
        queued = self.queue.count(self.pipeline_name)
        return State(
            pipeline=self.pipeline_name,
            driver=self.name,
            queue=str(self.spool.root),
            active=counts.ready + queued,
            delayed=counts.delayed,
            reserved=max(0, counts.reserved - queued),
            ready=self.consuming,
            priority=self.priority,
        )
