"""The priority queue shared by every pipeline (RoadRunner's ``jobs.Queue``).

Differences from RoadRunner's binary heap, on purpose:

* **FIFO within one priority.** Entries carry an insertion sequence number, so
  equal priorities come out in the order they went in.
* **Backpressure that never drops.** ``insert`` waits while the queue holds
  ``maxsize`` jobs and resumes as soon as one slot frees (RoadRunner v1.0.6
  waits for a full drain).

A lower priority number wins. The queue is safe for any number of producer and
consumer tasks on one event loop; it is not thread-safe.
"""

from __future__ import annotations

import asyncio
import heapq
from collections import deque
from collections.abc import Iterator
from itertools import count
from typing import TYPE_CHECKING

from rrjobs.core.errors import RRJobsError

if TYPE_CHECKING:
    from rrjobs.core.job import Job

DEFAULT_PIPELINE_SIZE = 1_000_000


class QueueFullError(RRJobsError):
    """``insert_nowait`` on a full queue."""


class PriorityQueue:
    """A bounded min-priority queue of jobs, FIFO within a priority.

    ``insert`` and ``extract_min`` are coroutines that wait (never busy-spin)
    when the queue is full or empty. ``remove`` takes out all jobs of one
    pipeline. ``len(queue)`` is the number of queued jobs.
    """

    __slots__ = ("_getters", "_heap", "_maxsize", "_putters", "_seq")

    def __init__(self, maxsize: int = DEFAULT_PIPELINE_SIZE) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self._maxsize = maxsize
        self._heap: list[tuple[int, int, Job]] = []
        self._seq = count()
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()

    @property
    def maxsize(self) -> int:
        return self._maxsize

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[Job]:
        """The queued jobs in no particular order (a snapshot)."""
        return iter([e[2] for e in self._heap])

    def full(self) -> bool:
        return len(self._heap) >= self._maxsize

    @staticmethod
    def _wake(waiters: deque[asyncio.Future[None]]) -> None:
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return

    # -- insert ------------------------------------------------------------------

    def insert_nowait(self, job: Job) -> None:
        """Insert without waiting; raise :class:`QueueFullError` when full."""
        if len(self._heap) >= self._maxsize:
            raise QueueFullError(f"priority queue is full ({self._maxsize} jobs)")
        heapq.heappush(self._heap, (job.priority, next(self._seq), job))
        if self._getters:
            self._wake(self._getters)

    async def insert(self, job: Job) -> None:
        """Insert ``job``, waiting while the queue is full. Never drops a job."""
        while len(self._heap) >= self._maxsize:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._putters.append(fut)
            try:
                await fut
            except BaseException:
                fut.cancel()
                try:
                    self._putters.remove(fut)
                except ValueError:
                    pass
                if len(self._heap) < self._maxsize and not fut.cancelled():
                    self._wake(self._putters)
                raise
        heapq.heappush(self._heap, (job.priority, next(self._seq), job))
        if self._getters:
            self._wake(self._getters)

    # -- extract -----------------------------------------------------------------

    def extract_nowait(self) -> Job | None:
        """The highest-priority job, or ``None`` when the queue is empty."""
        if not self._heap:
            return None
        job = heapq.heappop(self._heap)[2]
        if self._putters:
            self._wake(self._putters)
        return job

    async def extract_min(self) -> Job:
        """Remove and return the highest-priority job, waiting while empty."""
        while not self._heap:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._getters.append(fut)
            try:
                await fut
            except BaseException:
                fut.cancel()
                try:
                    self._getters.remove(fut)
                except ValueError:
                    pass
                # We may have been woken for an item we will not take: pass it on.
                if self._heap:
                    self._wake(self._getters)
                raise
        job = heapq.heappop(self._heap)[2]
        if self._putters:
            self._wake(self._putters)
        return job

    # -- remove ------------------------------------------------------------------

    def remove(self, pipeline: str) -> list[Job]:
        """Remove and return every queued job of ``pipeline``, in queue order."""
        kept: list[tuple[int, int, Job]] = []
        removed: list[tuple[int, int, Job]] = []
        for entry in self._heap:
            (removed if entry[2].pipeline == pipeline else kept).append(entry)
        if not removed:
            return []
        heapq.heapify(kept)
        self._heap = kept
        for _ in removed:
            if not self._putters:
                break
            self._wake(self._putters)
        removed.sort()
        return [e[2] for e in removed]

    def count(self, pipeline: str) -> int:
        """How many jobs of ``pipeline`` are queued."""
        return sum(1 for e in self._heap if e[2].pipeline == pipeline)
