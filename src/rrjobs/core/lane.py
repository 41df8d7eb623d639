"""``Lane``: one pipeline's window onto the shared priority queue.

Every driver delivers through its pipeline's lane. The lane keeps, in O(1):

* the **prefetch window**: how many of the pipeline's jobs are out (in the
  priority queue or in a handler) against ``prefetch``; a driver waits for
  room with :meth:`wait_room` before it fetches, and the window frees a slot
  when a job is settled (:meth:`release`);
* the **pause gate**: while closed (:meth:`close`), :meth:`wait_room` waits and
  the pipeline's queued jobs are taken back out of the priority queue;
* the counts ``out`` and ``queued`` (``stat``'s numbers).

Concurrency: event-loop only; any number of tasks may wait for room.
``deliver`` waits while the priority queue is full (backpressure, never a
drop); everything else returns at once.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rrjobs.core.job import Job
    from rrjobs.core.queue import PriorityQueue


class Lane:
    """The prefetch window and pause gate of pipeline ``pipeline``."""

    __slots__ = ("_room", "_waiting", "_want", "is_open", "out", "pipeline", "prefetch",
                 "queue")

    def __init__(self, queue: PriorityQueue, pipeline: str, prefetch: int) -> None:
        if prefetch < 1:
            raise ValueError("prefetch must be >= 1")
        self.queue = queue
        self.pipeline = pipeline
        self.prefetch = prefetch
        #: jobs delivered and not yet settled (queued or in a handler)
        self.out = 0
        #: the pause gate: deliveries flow only while open
        self.is_open = False
        self._room = asyncio.Event()
        #: tasks in :meth:`wait_room` (nothing to wake when none)
        self._waiting = 0
        #: at most the least room a task in :meth:`wait_room` waits for (reset when
        #: they are woken, each sets it again as it waits again): a release that
        #: leaves less wakes nobody (a fetch loop waiting for half the window is not
        #: woken by each of the settlements before)
        self._want = prefetch + 1

    # -- counts ------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Jobs of the pipeline waiting in the priority queue."""
        return self.queue.count(self.pipeline)

    @property
    def reserved(self) -> int:
        """Jobs of the pipeline in a handler (out, not queued)."""
        return max(0, self.out - self.queued)

    def room(self) -> int:
        """Free slots of the window (0 while the gate is closed)."""
        return max(0, self.prefetch - self.out) if self.is_open else 0

    # -- the window --------------------------------------------------------------

    async def wait_room(self, want: int = 1) -> int:
        """Wait until the gate is open and at least ``min(want, prefetch)``
        slots are free; return the free slots."""
        want = max(1, min(want, self.prefetch))
        while True:
            room = self.room()
            if room >= want:
                return room
            self._room.clear()
            self._waiting += 1
            if want < self._want:
                self._want = want
            try:
                await self._room.wait()
            finally:
                self._waiting -= 1

    def _wake(self) -> None:
        if self._waiting and self.room() >= self._want:
            self._want = self.prefetch + 1
            self._room.set()

    async def deliver(self, job: Job) -> None:
        """Count ``job`` out and put it in the priority queue (waiting while
        the queue is full)."""
        self.out += 1
        try:
            await self.queue.insert(job)
        except BaseException:
            self.out -= 1
            self._wake()
            raise

    def deliver_nowait(self, job: Job) -> None:
        """Count ``job`` out and put it in the priority queue now; raises
        :class:`~rrjobs.core.queue.QueueFullError` when the queue is full."""
        self.queue.insert_nowait(job)
        self.out += 1

    def take(self, n: int = 1) -> None:
        """Count ``n`` jobs out that the driver holds before delivering them."""
        self.out += n

    def release(self, n: int = 1) -> None:
        """``n`` jobs were settled (or given back): free their slots."""
        out = self.out - n
        self.out = out if out > 0 else 0
        if self._waiting:
            self._wake()

    # -- the gate ----------------------------------------------------------------

    def open(self) -> None:
        self.is_open = True
        self._wake()

    def close(self) -> list[Job]:
        """Close the gate and take the pipeline's queued jobs back out of the
        priority queue (in queue order); their slots are freed."""
        self.is_open = False
        taken = self.queue.remove(self.pipeline)
        self.out = max(0, self.out - len(taken))
        self._want = self.prefetch + 1
        self._room.set()  # waiters re-check and wait again on the closed gate
        return taken

    def __repr__(self) -> str:
        return (f"<Lane {self.pipeline} out={self.out}/{self.prefetch} "
                f"{'open' if self.is_open else 'closed'}>")
