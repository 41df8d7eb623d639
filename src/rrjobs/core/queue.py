"""The priority queue shared by every pipeline (RoadRunner's ``jobs.Queue``).

Differences from RoadRunner's binary heap, on purpose:

* **FIFO within one priority.** Each priority has its own FIFO deque, and a
  small heap holds the priorities that have jobs, so equal priorities come out
  in the order they went in. Inserting and extracting cost O(1) plus O(log k)
  for k distinct queued priorities (no per-job tuple, no sequence counter).
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

    __slots__ = ("_buckets", "_getters", "_len", "_maxsize", "_prios", "_putters")

    def __init__(self, maxsize: int = DEFAULT_PIPELINE_SIZE) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self._maxsize = maxsize
        #: priority → its queued jobs, oldest first; never holds an empty deque
        self._buckets: dict[int, deque[Job]] = {}
        #: the keys of ``_buckets``, as a min-heap
        self._prios: list[int] = []
        self._len = 0
        self._getters: deque[asyncio.Future[None]] = deque()
        self._putters: deque[asyncio.Future[None]] = deque()

    @property
    def maxsize(self) -> int:
        return self._maxsize

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[Job]:
        """The queued jobs in no particular order (a snapshot)."""
        return iter([j for bucket in self._buckets.values() for j in bucket])

    def full(self) -> bool:
        return self._len >= self._maxsize

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
        if self._len >= self._maxsize:
            raise QueueFullError(f"priority queue is full ({self._maxsize} jobs)")
        prio = job.priority
        bucket = self._buckets.get(prio)
        if bucket is None:
            self._buckets[prio] = bucket = deque()
            heapq.heappush(self._prios, prio)
        bucket.append(job)
        self._len += 1
        if self._getters:
            self._wake(self._getters)

    async def insert(self, job: Job) -> None:
        """Insert ``job``, waiting while the queue is full. Never drops a job."""
        while self._len >= self._maxsize:
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
                if self._len < self._maxsize and not fut.cancelled():
                    self._wake(self._putters)
                raise
        self.insert_nowait(job)

    # -- extract -----------------------------------------------------------------

    def extract_nowait(self) -> Job | None:
        """The highest-priority job, or ``None`` when the queue is empty."""
        if not self._len:
            return None
        prio = self._prios[0]
        bucket = self._buckets[prio]
        job = bucket.popleft()
        if not bucket:
            heapq.heappop(self._prios)
            del self._buckets[prio]
        self._len -= 1
        if self._putters:
            self._wake(self._putters)
        return job

    async def extract_min(self) -> Job:
        """Remove and return the highest-priority job, waiting while empty."""
        while not self._len:
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
                if self._len:
                    self._wake(self._getters)
                raise
        job = self.extract_nowait()
        assert job is not None
        return job

    # -- remove ------------------------------------------------------------------

    def remove(self, pipeline: str) -> list[Job]:
        """Remove and return every queued job of ``pipeline``, in queue order."""
        removed: list[Job] = []
        for prio in sorted(self._buckets):
            bucket = self._buckets[prio]
            kept: deque[Job] = deque()
            for j in bucket:
                (removed if j.pipeline == pipeline else kept).append(j)
            if len(kept) != len(bucket):
                if kept:
                    self._buckets[prio] = kept
                else:
                    del self._buckets[prio]
        if not removed:
            return []
        self._prios = list(self._buckets)
        heapq.heapify(self._prios)
        self._len -= len(removed)
        for _ in removed:
            if not self._putters:
                break
            self._wake(self._putters)
        return removed

    def count(self, pipeline: str) -> int:
        """How many jobs of ``pipeline`` are queued."""
        return sum(1 for b in self._buckets.values() for j in b if j.pipeline == pipeline)
