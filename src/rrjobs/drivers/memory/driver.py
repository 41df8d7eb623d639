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
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any

from rrjobs.core.base import BaseDriver
from rrjobs.core.capabilities import Capabilities
from rrjobs.core.constructor import DriverConstructor
from rrjobs.core.deadletters import DeadLetter, ScannedStore, Session, failed_at_text, scanned
from rrjobs.core.errors import PipelineStateError
from rrjobs.core.feed import Feed
from rrjobs.core.headers import Headers
from rrjobs.core.job import Job
from rrjobs.core.lane import Lane
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.state import State
from rrjobs.core.timers import DelayQueue
from rrjobs.drivers.memory.config import MemoryOptions

#: Any delay, priority, headers and pause; nothing durable, nothing shared with another
#: process (every field a default).
CAPABILITIES = Capabilities()

_make = Job.make


class KeptLetters(ScannedStore[DeadLetter]):
    """The dead letters a pipeline keeps (``dead_letter_size``), oldest first; a
    letter is named by itself (by identity: a newer one may be equal)."""

    shared = False

    def __init__(self, pipeline: str, priority: int, size: int) -> None:
        super().__init__(pipeline, priority)
        self.letters: deque[DeadLetter] = deque(maxlen=size)

    @asynccontextmanager
    async def session(self, removing: bool) -> AsyncIterator[Session[DeadLetter]]:
        async def remove(letter: DeadLetter) -> None:
            for i, d in enumerate(self.letters):
                if d is letter:
                    del self.letters[i]
                    break
        yield scanned((d, d) for d in list(self.letters)), remove


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
        #: jobs waiting for the lane or for room in the priority queue (the ``mover``)
        self.feed = Feed(self.lane, self.supervisor)
        #: an ack frees the job's slot of the window (a counter update, no coroutine)
        self.ack_now = self.feed.settled
        self._delayed: DelayQueue[Job] = DelayQueue(self._due)
        #: the dead letters kept (oldest first), or None without ``dead_letter_size``
        self._dead: KeptLetters | None = None
        self._dead_full_logged = False
        if options.dead_letter_size:
            self.dead_letters = self._dead = KeptLetters(
                self.pipeline_name, self.priority, options.dead_letter_size)
            self.capabilities = replace(CAPABILITIES, dead_letter=True, dead_letter_read=True)

    async def open(self, where: str) -> None:
        """Nothing to connect to."""

    # -- jobs in --------------------------------------------------------------------

    def _accept(self, job: Job, delay: float) -> None:
        """Take ``job`` without waiting: onto the delay heap, or the feed (straight
        into the priority queue where there is room; a push never waits on consumers)."""
        if delay > 0.0:
            self._delayed.add(delay, job)
        else:
            self.feed.add(job)

    def _take(self, msgs: Sequence[Message]) -> None:
        """A job of each message (:meth:`Job.take_messages`), onto the delay heap or the
        feed's ready jobs; then the feed pumped once for all of them (straight into the
        priority queue where there is room: a push never waits on consumers)."""
        Job.take_messages(self, msgs, self.pipeline_name, self.feed.ready.append,
                          self._delayed.add)
        self.feed.pump()

    async def _send(self, msg: Message) -> None:
        self._take((msg,))

    async def _send_batch(self, msgs: Sequence[Message]) -> None:
        # No coroutine per message, and no wait on consumers. Every BATCH_SLICE
        # jobs the loop runs once, so that a large batch does not hold the loop:
        # workers start on the first jobs meanwhile, fewer jobs wait at once, and
        # fewer outlive a young garbage collection.
        take, step, total = self._take, self.BATCH_SLICE, len(msgs)
        for start in range(0, total, step):
            if start:
                await asyncio.sleep(0)
                if self.stopped:
                    raise PipelineStateError(
                        f"pipeline {self.pipeline_name!r} stopped while a batch was pushed; "
                        f"{start} of {total} jobs were accepted"
                    )
            take(msgs[start:start + step] if total > step else msgs)

    def _due(self, job: Job) -> None:
        if not self.stopped:
            self.feed.add(job)

    # -- settlement ------------------------------------------------------------------

    async def dead_letter(self, job: Job) -> None:
        """Kept in the dead-letter store with ``dead_letter_size``; otherwise dropped."""
        self.feed.settled(job)
        if self._dead is not None:
            self._keep_dead(job)

    async def requeue(self, job: Job, headers: Headers, delay: float) -> None:
        self.feed.settled(job)
        self._redeliver(job, headers, delay)

    def _redeliver(self, job: Job, headers: Headers, delay: float) -> None:
        """Queue a copy of ``job`` with ``headers`` after ``delay`` seconds."""
        if self.stopped:
            raise PipelineStateError(
                f"pipeline {self.pipeline_name!r} is stopped; job {job.id} cannot be requeued"
            )
        copy = _make(self, None, job.id, job.name, job.payload, headers, job.pipeline,
                     job.priority, job.auto_ack)
        self._accept(copy, delay)

    # -- dead letters (DeadLetterStore) -------------------------------------------------

    def _keep_dead(self, job: Job) -> None:
        assert self._dead is not None
        dead = self._dead.letters
        if len(dead) == dead.maxlen and not self._dead_full_logged:
            self._dead_full_logged = True
            self.log.warning("pipeline %r keeps %d dead letters (dead_letter_size): the oldest "
                             "are dropped from now on", self.pipeline_name, dead.maxlen)
        dead.append(DeadLetter.of(job.id, job.name, job.payload,
                                  {k: list(v) for k, v in job.headers.items()},
                                  self.pipeline_name, job.priority, failed_at_text(time.time())))

    # -- lifecycle ------------------------------------------------------------------------

    async def _start_consuming(self) -> None:
        self.feed.open()

    async def _stop_consuming(self) -> None:
        await self.feed.close()

    async def _close(self) -> None:
        dropped = len(self.feed.ready) + len(self._delayed)
        self.feed.ready.clear()
        self._delayed.drain()
        if dropped:
            self.log.warning(
                "pipeline %r stopped with %d queued or delayed jobs (memory is not durable)",
                self.pipeline_name,
                dropped,
            )

    async def state(self) -> State:
        lane = self.lane
        return self.state_of(self.pipeline_name, len(self.feed.ready) + lane.queued,
                             len(self._delayed), lane.reserved)


class MemoryConstructor(DriverConstructor):
    """Builds ``memory`` drivers. Registered as the ``memory`` entry point."""

    driver_class = MemoryDriver
    options_model = MemoryOptions
