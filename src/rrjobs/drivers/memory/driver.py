"""The ``memory`` driver: jobs in process memory, no broker.

Capabilities (kombu-style):

* Delays: yes, any length, on one timer heap (no task per job, no cap).
* Priority: yes. FIFO within a priority.
* Durable: **no** — jobs are lost when the process exits.
* Dead-letter: no native store; use the pipeline's ``retry.dead_letter``.
* Lease extension: not needed — an unsettled job is never redelivered.
* Pause: yes; pausing takes the pipeline's jobs back out of the priority queue,
  so nothing is consumed while paused.

Flow: ``push`` → (delay heap) → the driver's ready deque → priority queue,
while fewer than ``prefetch`` of its jobs are queued or in a handler.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from rrjobs.core.base import BaseDriver
from rrjobs.core.capabilities import Capabilities
from rrjobs.core.errors import PipelineStateError
from rrjobs.core.headers import Headers
from rrjobs.core.interfaces import Constructor
from rrjobs.core.message import Message
from rrjobs.core.options import options_from_config, options_from_pipeline
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue, QueueFullError
from rrjobs.core.state import State
from rrjobs.core.timers import DelayQueue
from rrjobs.drivers.memory.config import MemoryOptions
from rrjobs.drivers.memory.job import MemoryJob

CAPABILITIES = Capabilities(
    delay=True,
    max_delay=None,
    delay_native=True,
    priority=True,
    durable=False,
    max_payload=None,
    lease_extension=False,
    dead_letter=False,
    redelivery_on_crash=False,
    pause=True,
    headers=True,
)


class MemoryDriver(BaseDriver):
    """One in-memory pipeline. All methods run on the event loop; none blocks."""

    name = "memory"
    capabilities = CAPABILITIES
    #: ``push_batch`` lets the event loop run after every this many jobs.
    BATCH_SLICE = 128

    def __init__(self, pipeline: Pipeline, queue: PriorityQueue, options: MemoryOptions) -> None:
        pipeline.setdefault("priority", options.priority)
        super().__init__(pipeline, queue)
        self.priority = options.priority
        self.prefetch = options.prefetch
        self._ready: deque[MemoryJob] = deque()
        self._delayed: DelayQueue[MemoryJob] = DelayQueue(self._due)
        #: jobs of this pipeline in the priority queue or in a handler
        self._in_flight = 0
        self._mover: asyncio.Task[None] | None = None

    # -- jobs in --------------------------------------------------------------------

    def _job(self, msg: Message) -> MemoryJob:
        payload, headers = msg.payload, msg.headers
        return MemoryJob._make(
            self,
            msg.id,
            msg.name,
            payload if type(payload) is bytes else bytes(payload),
            {k: list(v) for k, v in headers.items()} if headers else {},
            self.pipeline_name,
            msg.priority,
            msg.auto_ack,
        )

    def _accept(self, job: MemoryJob, delay: float) -> None:
        """Take ``job`` without waiting: onto the delay heap, straight into the
        priority queue, or onto the ready deque (also when the priority queue
        is full: the mover waits for room)."""
        if delay > 0:
            self._delayed.add(delay, job)
            return
        if (
            self.consuming
            and not self._ready
            and self._mover is None
            and self._in_flight < self.prefetch
        ):
            # Fast path: straight into the priority queue. When it is full the
            # job waits on the ready deque for the mover: a push never waits on
            # consumers (a handler pushing into a full queue would deadlock).
            try:
                self.queue.insert_nowait(job)
            except QueueFullError:
                pass
            else:
                self._in_flight += 1
                return
        self._ready.append(job)
        self._pump()

    async def _send(self, msg: Message) -> None:
        self._accept(self._job(msg), msg.delay)

    async def _send_batch(self, msgs: Sequence[Message]) -> None:
        # No coroutine per message, and no wait on consumers. Every BATCH_SLICE
        # jobs the loop runs once, so that a large batch does not hold the loop:
        # workers start on the first jobs meanwhile, fewer jobs wait at once, and
        # fewer outlive a young garbage collection.
        make, accept, step, total = self._job, self._accept, self.BATCH_SLICE, len(msgs)
        for start in range(0, total, step):
            if start:
                await asyncio.sleep(0)
                if self.stopped:
                    raise PipelineStateError(
                        f"pipeline {self.pipeline_name!r} stopped while a batch was pushed; "
                        f"{start} of {total} jobs were accepted"
                    )
            for msg in msgs[start:start + step]:
                accept(make(msg), msg.delay)

    def _due(self, job: MemoryJob) -> None:
        if self.stopped:
            return
        self._ready.append(job)
        self._pump()

    def _pump(self) -> None:
        """Move ready jobs into the priority queue while prefetch allows."""
        if not self.consuming or self._mover is not None:
            return
        while self._ready and self._in_flight < self.prefetch:
            if self.queue.full():
                self._mover = asyncio.get_running_loop().create_task(self._move_when_room())
                return
            self._in_flight += 1
            self.queue.insert_nowait(self._ready.popleft())

    async def _move_when_room(self) -> None:
        """Backpressure: wait for room in the priority queue, then keep moving."""
        try:
            while self.consuming and self._ready and self._in_flight < self.prefetch:
                job = self._ready[0]
                await self.queue.insert(job)
                self._ready.popleft()
                self._in_flight += 1
        finally:
            self._mover = None
        self._pump()

    # -- settlement (called by MemoryJob) ----------------------------------------------

    def release(self, job: MemoryJob) -> None:
        """A job of this pipeline left a handler: free its prefetch slot."""
        if self._in_flight > 0:
            self._in_flight -= 1
        if self._ready:
            self._pump()

    def redeliver(self, job: MemoryJob, headers: Headers, delay: float) -> None:
        """Queue a copy of ``job`` with ``headers`` after ``delay`` seconds."""
        if self.stopped:
            raise PipelineStateError(
                f"pipeline {self.pipeline_name!r} is stopped; job {job.id} cannot be requeued"
            )
        copy = MemoryJob(
            self,
            id=job.id,
            name=job.name,
            payload=job.payload,
            headers=headers,
            pipeline=job.pipeline,
            priority=job.priority,
            auto_ack=job.auto_ack,
        )
        if delay > 0:
            self._delayed.add(delay, copy)
        else:
            self._ready.append(copy)
            self._pump()

    # -- lifecycle ------------------------------------------------------------------------

    async def _start_consuming(self) -> None:
        self.consuming = True
        self._pump()

    async def _stop_consuming(self) -> None:
        if self._mover is not None:
            self._mover.cancel()
            try:
                await self._mover
            except asyncio.CancelledError:
                pass
            self._mover = None
        taken = self.queue.remove(self.pipeline_name)
        self._in_flight -= len(taken)
        self._ready.extendleft(reversed(taken))  # type: ignore[arg-type]

    async def _close(self) -> None:
        dropped = len(self._ready) + len(self._delayed)
        self._ready.clear()
        self._delayed.drain()
        if dropped:
            self.log.warning(
                "pipeline %r stopped with %d queued or delayed jobs (memory is not durable)",
                self.pipeline_name,
                dropped,
            )

    async def state(self) -> State:
        queued = self.queue.count(self.pipeline_name)
        return State(
            pipeline=self.pipeline_name,
            driver=self.name,
            queue=self.pipeline_name,
            active=len(self._ready) + queued,
            delayed=len(self._delayed),
            reserved=max(0, self._in_flight - queued),
            ready=self.consuming,
            priority=self.priority,
        )


class MemoryConstructor(Constructor):
    """Builds ``memory`` drivers. Registered as the ``memory`` entry point."""

    name = "memory"

    async def driver_from_config(
        self, config_key: str, queue: PriorityQueue, pipeline: Pipeline
    ) -> MemoryDriver:
        options = options_from_config(self.configurer, config_key, MemoryOptions)
        return MemoryDriver(pipeline, queue, options)

    async def driver_from_pipeline(self, pipeline: Pipeline, queue: PriorityQueue) -> MemoryDriver:
        return MemoryDriver(pipeline, queue, options_from_pipeline(pipeline, MemoryOptions))
