"""The ``memory`` driver: jobs in process memory, no broker (see ``docs/drivers/memory.md``).

Flow: ``push`` → (delay heap) → the driver's ready deque → priority queue,
while fewer than ``prefetch`` of its jobs are queued or in a handler. While
consuming, the supervised ``mover`` task moves ready jobs when the priority
queue was full (backpressure; a push never waits on consumers). With
``dead_letter_size``, jobs given up with ``nack()`` are kept, newest last, in a
bounded deque that ``rrjobs dlq`` reads (:class:`~rrjobs.core.deadletters.DeadLetterStore`).
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from rrjobs.core.base import BaseDriver
from rrjobs.core.capabilities import Capabilities
from rrjobs.core.constructor import DriverConstructor
from rrjobs.core.deadletters import DeadLetter, DeadLetterStore, Replay, failed_at_text
from rrjobs.core.errors import PipelineStateError
from rrjobs.core.headers import Headers
from rrjobs.core.job import Job
from rrjobs.core.lane import Lane
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue, QueueFullError
from rrjobs.core.state import State
from rrjobs.core.timers import DelayQueue
from rrjobs.drivers.memory.config import MemoryOptions

#: Any delay, priority, headers and pause; nothing durable (every field a default).
CAPABILITIES = Capabilities()

_make = Job.make


class MemoryDriver(BaseDriver):
    """One in-memory pipeline, and the settler of its jobs (``nack()`` drops a
    job; a requeue goes to the end of the pipeline after its delay). Event-loop
    only; nothing blocks."""

    name = "memory"
    capabilities = CAPABILITIES
    #: ``push_batch`` lets the event loop run after every this many jobs.
    BATCH_SLICE = 128

    def __init__(self, pipeline: Pipeline, queue: PriorityQueue, options: MemoryOptions,
                 section: Any = None) -> None:
        super().__init__(pipeline, queue)
        self.priority = options.priority
        self.prefetch = options.prefetch
        self.lane = Lane(queue, self.pipeline_name, options.prefetch)
        self._ready: deque[Job] = deque()
        self._delayed: DelayQueue[Job] = DelayQueue(self._due)
        #: set while ready jobs wait for room in a full priority queue (the mover's turn)
        self._blocked = asyncio.Event()
        #: the dead letters kept (oldest first), or None without ``dead_letter_size``
        self._dead: deque[DeadLetter] | None = None
        self._dead_full_logged = False
        if options.dead_letter_size:
            self._dead = deque(maxlen=options.dead_letter_size)
            self.capabilities = replace(CAPABILITIES, dead_letter=True, dead_letter_read=True)

    async def open(self, where: str) -> None:
        """Nothing to connect to."""

    # -- jobs in --------------------------------------------------------------------

    def _job(self, msg: Message) -> Job:
        payload, headers = msg.payload, msg.headers
        return _make(self, None, msg.id, msg.name,
                     payload if type(payload) is bytes else bytes(payload),
                     {k: list(v) for k, v in headers.items()} if headers else {},
                     self.pipeline_name, msg.priority, msg.auto_ack)

    def _accept(self, job: Job, delay: float) -> None:
        """Take ``job`` without waiting: onto the delay heap, straight into the
        priority queue, or onto the ready deque (also when the priority queue
        is full: the mover waits for room)."""
        if delay > 0:
            self._delayed.add(delay, job)
            return
        lane = self.lane
        if lane.is_open and not self._ready and lane.out < lane.prefetch:
            # Fast path: straight into the priority queue. When it is full the
            # job waits on the ready deque for the mover: a push never waits on
            # consumers (a handler pushing into a full queue would deadlock).
            try:
                lane.deliver_nowait(job)
            except QueueFullError:
                pass
            else:
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

    def _due(self, job: Job) -> None:
        if self.stopped:
            return
        self._ready.append(job)
        self._pump()

    def _pump(self) -> None:
        """Move ready jobs into the priority queue while the lane has room."""
        lane = self.lane
        if not lane.is_open or self._blocked.is_set():
            return
        ready = self._ready
        while ready and lane.out < lane.prefetch:
            if self.queue.full():
                self._blocked.set()
                return
            lane.deliver_nowait(ready.popleft())

    async def _move(self) -> None:
        """The ``mover`` task: while blocked, wait for room in the priority
        queue and move ready jobs, then pump again."""
        lane, ready = self.lane, self._ready
        while True:
            await self._blocked.wait()
            while ready and lane.out < lane.prefetch:
                await lane.deliver(ready[0])
                ready.popleft()
            self._blocked.clear()
            self._pump()

    # -- settlement ------------------------------------------------------------------

    def ack_now(self, job: Job) -> None:
        """Acknowledge ``job`` (a counter update: no coroutine on the hot path)."""
        self.lane.release()
        if self._ready:
            self._pump()

    async def dead_letter(self, job: Job) -> None:
        """Kept in the dead-letter store with ``dead_letter_size``; otherwise dropped."""
        self.ack_now(job)
        if self._dead is not None:
            self._keep_dead(job)

    async def requeue(self, job: Job, headers: Headers, delay: float) -> None:
        self.ack_now(job)
        self._redeliver(job, headers, delay)

    def queue_name(self, job: Job) -> str:
        return self.pipeline_name

    def _redeliver(self, job: Job, headers: Headers, delay: float) -> None:
        """Queue a copy of ``job`` with ``headers`` after ``delay`` seconds."""
        if self.stopped:
            raise PipelineStateError(
                f"pipeline {self.pipeline_name!r} is stopped; job {job.id} cannot be requeued"
            )
        copy = _make(self, None, job.id, job.name, job.payload, headers, job.pipeline,
                     job.priority, job.auto_ack)
        if delay > 0:
            self._delayed.add(delay, copy)
        else:
            self._ready.append(copy)
            self._pump()

    # -- dead letters (DeadLetterStore) -------------------------------------------------

    def _keep_dead(self, job: Job) -> None:
        dead = self._dead
        assert dead is not None
        if len(dead) == dead.maxlen and not self._dead_full_logged:
            self._dead_full_logged = True
            self.log.warning("pipeline %r keeps %d dead letters (dead_letter_size): the oldest "
                             "are dropped from now on", self.pipeline_name, dead.maxlen)
        dead.append(DeadLetter.of(job.id, job.name, job.payload,
                                  {k: list(v) for k, v in job.headers.items()},
                                  self.pipeline_name, job.priority, failed_at_text(time.time())))

    def dead_letter_store(self) -> DeadLetterStore | None:
        return self if self._dead is not None else None

    def _letters(self) -> deque[DeadLetter]:
        if self._dead is None:  # the runtime checks the capability first
            raise RuntimeError(f"pipeline {self.pipeline_name!r} keeps no dead letters")
        return self._dead

    async def list_dead_letters(self, limit: int) -> list[DeadLetter]:
        return list(self._letters())[:limit]

    async def peek_dead_letter(self, id: str) -> DeadLetter | None:
        return next((d for d in self._letters() if d.id == id), None)

    async def take_dead_letters(self, ids: Sequence[str] | None,
                                replay: Replay) -> list[str]:
        dead = self._letters()
        if ids is None:
            chosen = list(dead)
        else:
            found = (next((d for d in dead if d.id == i), None) for i in dict.fromkeys(ids))
            chosen = [d for d in found if d is not None]
        taken: list[str] = []
        for letter in chosen:
            await replay(letter)
            for i, d in enumerate(dead):  # by identity: a new letter may be equal
                if d is letter:
                    del dead[i]
                    break
            taken.append(letter.id)
        return taken

    async def purge_dead_letters(self) -> int:
        dead = self._letters()
        count = len(dead)
        dead.clear()
        return count

    # -- lifecycle ------------------------------------------------------------------------

    async def _start_consuming(self) -> None:
        self.lane.open()
        self.consuming = True
        if not self.supervisor.running("mover"):
            self.supervisor.start("mover", self._move)
        self._pump()

    async def _stop_consuming(self) -> None:
        if self._blocked.is_set():  # the mover may be waiting for room: stop it there
            await self.supervisor.stop_task("mover")
            self._blocked.clear()
        self._ready.extendleft(reversed(self.lane.close()))

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
        lane = self.lane
        return State(
            pipeline=self.pipeline_name,
            driver=self.name,
            queue=self.pipeline_name,
            active=len(self._ready) + lane.queued,
            delayed=len(self._delayed),
            reserved=lane.reserved,
            ready=self.ready,
            priority=self.priority,
        )


class MemoryConstructor(DriverConstructor):
    """Builds ``memory`` drivers. Registered as the ``memory`` entry point."""

    driver_class = MemoryDriver
    options_model = MemoryOptions
