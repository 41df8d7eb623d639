"""``Feed``: jobs a driver holds ready, moved into the priority queue as room allows.

A driver whose jobs are ready before the pipeline may take them (memory's pushes,
Kafka's fetched records) appends them to its feed's :attr:`Feed.ready` deque and
calls :meth:`Feed.pump` (or :meth:`Feed.add`). Jobs go into the priority queue in
their order while the lane's gate is open and, for jobs not counted out of the
prefetch window when they were taken (``counted=False``), while the window has room.
When the priority queue is full, the supervised task ``mover`` waits for room
(backpressure: the caller never waits on consumers, so a handler pushing into a full
queue cannot deadlock). Pausing takes the pipeline's queued jobs back to the front of
``ready``, in order.

Event-loop only; only the mover waits.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

    from rrjobs.core.job import Job
    from rrjobs.core.lane import Lane
    from rrjobs.core.supervise import Supervisor


class Feed:
    """The ready jobs of ``lane``'s pipeline, moved by ``supervisor``'s task ``mover``."""

    __slots__ = ("_blocked", "counted", "lane", "ready", "supervisor")

    def __init__(self, lane: Lane, supervisor: Supervisor, *, counted: bool = False) -> None:
        self.lane = lane
        self.supervisor = supervisor
        #: the jobs of :attr:`ready` were counted out of the window when taken (``Lane.take``)
        self.counted = counted
        #: jobs ready and not yet in the priority queue, in order
        self.ready: deque[Job] = deque()
        #: set while ready jobs wait for room in a full priority queue (the mover's turn)
        self._blocked = asyncio.Event()

    def add(self, job: Job) -> None:
        """``job`` is ready: it goes after those ready before it."""
        self.ready.append(job)
        self.pump()

    def pump(self) -> None:
        """Move ready jobs into the priority queue while the gate is open and there is
        room; when the queue is full, leave the rest to the mover."""
        lane, ready = self.lane, self.ready
        if not ready or not lane.is_open or self._blocked.is_set():
            return
        queue, counted = lane.queue, self.counted
        n = len(ready) if counted else min(len(ready), lane.prefetch - lane.out)
        if n <= 0:
            return
        room = queue.maxsize - len(queue)
        moved = n if n <= room else room
        queue.insert_from(ready, moved)
        if not counted:
            lane.take(moved)
        if moved < n:  # the queue is full
            self._blocked.set()
            if not self.supervisor.running("mover"):  # stopped by take_back
                self.supervisor.start("mover", self._move)

    def settled(self, job: Job) -> None:
        """A job delivered through this feed was settled: its slot of the window frees
        (:meth:`Lane.release`) and the ready jobs that waited for it move. Shaped as a
        driver's ``ack_now``: a driver whose ack only frees the window binds it as its
        ``ack_now`` once (an instance attribute: no bound method made per job)."""
        self.lane.release()
        if self.ready:
            self.pump()

    async def _move(self) -> None:
        """The ``mover`` task: while blocked, wait for room and move ready jobs, then pump."""
        lane = self.lane
        while True:
            await self._blocked.wait()
            while self.ready and (self.counted or lane.out < lane.prefetch):
                job = self.ready[0]
                await (lane.queue.insert(job) if self.counted else lane.deliver(job))
                self.ready.popleft()
            self._blocked.clear()
            self.pump()

    def open(self) -> None:
        """Open the gate (run, resume), start the mover once, move what is ready."""
        self.lane.open()
        if not self.supervisor.running("mover"):
            self.supervisor.start("mover", self._move)
        self.pump()

    async def _stop_mover(self) -> None:
        """Stop the mover where it waits for room (an idle mover waits on nothing)."""
        if self._blocked.is_set():
            await self.supervisor.stop_task("mover")
            self._blocked.clear()

    async def close(self) -> None:
        """Close the gate (pause, stop) and take the pipeline's queued jobs back to the
        front of :attr:`ready`, in order (still counted out when ``counted``)."""
        await self._stop_mover()
        taken = self.lane.close()
        if self.counted:
            self.lane.take(len(taken))
        self.ready.extendleft(reversed(taken))

    async def take_back(self, drop: Callable[[Job], bool]) -> list[Job]:
        """With ``counted``: take the pipeline's queued jobs back to the front of
        :attr:`ready`, in order, the gate left as it is; drop those ``drop`` picks (a
        revoked partition's), released from the window, and return them; pump the rest."""
        await self._stop_mover()
        self.ready.extendleft(reversed(self.lane.queue.remove(self.lane.pipeline)))
        ready = self.ready
        dropped = [j for j in ready if drop(j)]
        if dropped:
            kept = [j for j in ready if not drop(j)]
            ready.clear()
            ready.extend(kept)
            self.lane.release(len(dropped))
        self.pump()
        return dropped
