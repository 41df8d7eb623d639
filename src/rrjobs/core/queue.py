"""The priority queue shared by every pipeline (RoadRunner's ``jobs.Queue``).

Differences from RoadRunner's binary heap, on purpose:

* **FIFO within one priority.** Equal priorities come out in the order they
  went in, across pipelines too. Inserting and extracting cost O(1) plus
  O(log k) for k distinct queued priorities (no per-job tuple, no sequence
  counter).
* **Backpressure that never drops.** ``insert`` waits while the queue holds
  ``maxsize`` jobs and resumes as soon as one slot frees (RoadRunner v1.0.6
  waits for a full drain).
* **Per-pipeline bookkeeping.** ``count(pipeline)`` is O(1) and
  ``remove(pipeline)`` costs in proportion to that pipeline's queued jobs
  (amortised), never walking other pipelines' jobs: ``stat`` and a pipeline's
  stop stay cheap with many jobs of other pipelines queued.

How: each priority has a *bucket*, a FIFO with one entry per queued job that
names the job's *lane*; a lane is the FIFO of one pipeline's jobs at that
priority. Extracting takes the oldest entry of the best bucket and the oldest
job of the lane it names, so the bucket keeps the global order while the lanes
index the jobs by pipeline. ``remove`` empties and detaches the pipeline's
lanes; their entries stay behind as *tombstones* (entries naming an empty,
detached lane), skipped when extracting reaches them, and a bucket is
compacted when tombstones make up more than half of it, so they never hold
more than the jobs that were removed.

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


class _Pipeline:
    """One pipeline's queued jobs: how many, and its lanes by priority."""

    __slots__ = ("lanes", "n")

    def __init__(self) -> None:
        self.n = 0
        self.lanes: dict[int, _Lane] = {}


class _Lane(deque["Job"]):
    """The queued jobs of one pipeline at one priority, oldest first.

    A lane in use has exactly as many jobs as its bucket has entries naming
    it; ``remove`` empties it and detaches it for good (its entries become
    tombstones), so an entry naming an empty lane is a tombstone.
    """

    __slots__ = ("pipe",)
    pipe: _Pipeline


class _Bucket(deque[_Lane]):
    """One priority: an entry per queued job, naming its lane, oldest first.

    A bucket is *active* while its priority is in the heap. Extracting its last
    entry makes it idle: it stays, with its (empty) lanes, for the next job of
    that priority, until idle buckets outnumber active ones.
    """

    __slots__ = ("active", "dead", "lanes", "prio")

    def __init__(self, prio: int) -> None:  # an empty deque needs no deque.__init__
        self.prio = prio
        self.active = False
        #: tombstones among the entries
        self.dead = 0
        #: pipeline name → its lane in use at this priority
        self.lanes: dict[str, _Lane] = {}


class PriorityQueue:
    """A bounded min-priority queue of jobs, FIFO within a priority.

    ``insert`` and ``extract_min`` are coroutines that wait (never busy-spin)
    when the queue is full or empty. ``remove`` takes out all jobs of one
    pipeline, ``count`` tells how many one pipeline has queued. ``len(queue)``
    is the number of queued jobs.
    """

    __slots__ = ("_buckets", "_getters", "_head", "_len", "_maxsize", "_pipes", "_prios",
                 "_putters")

    def __init__(self, maxsize: int = DEFAULT_PIPELINE_SIZE) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be >= 1")
        self._maxsize = maxsize
        #: priority → its bucket, active or idle
        self._buckets: dict[int, _Bucket] = {}
        #: the priorities of the active buckets, as a min-heap
        self._prios: list[int] = []
        #: the active bucket of the best priority (``None``: no active bucket)
        self._head: _Bucket | None = None
        #: pipeline name → its jobs and lanes
        self._pipes: dict[str, _Pipeline] = {}
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
        return iter([j for pipe in self._pipes.values() for lane in pipe.lanes.values()
                     for j in lane])

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
        bucket = self._buckets.get(job.priority)
        if not bucket:
            bucket = self._activate(job.priority, bucket)
        lane = bucket.lanes.get(job.pipeline)
        if lane is None:
            lane = self._new_lane(bucket, job.pipeline)
        lane.append(job)
        bucket.append(lane)
        lane.pipe.n += 1
        self._len += 1
        if self._getters:
            self._wake(self._getters)

    def _activate(self, prio: int, bucket: _Bucket | None) -> _Bucket:
        """The bucket of ``prio``, made if missing, in the heap."""
        if bucket is None:
            self._buckets[prio] = bucket = _Bucket(prio)
        if not bucket.active:
            bucket.active = True
            heapq.heappush(self._prios, prio)
            if self._prios[0] == prio:
                self._head = bucket
        return bucket

    def _new_lane(self, bucket: _Bucket, pipeline: str) -> _Lane:
        pipe = self._pipes.get(pipeline)
        if pipe is None:
            self._pipes[pipeline] = pipe = _Pipeline()
        lane = _Lane()
        lane.pipe = pipe
        bucket.lanes[pipeline] = pipe.lanes[bucket.prio] = lane
        return lane

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
        bucket = self._head
        while True:
            assert bucket is not None  # jobs are queued, so some bucket is active
            if bucket:
                lane = bucket.popleft()
                if lane:
                    break
                bucket.dead -= 1  # the entry of a removed job
                if bucket:
                    continue
            bucket = self._retire_head()
        job = lane.popleft()
        if not bucket:
            self._retire_head()
        lane.pipe.n -= 1
        self._len -= 1
        if self._putters:
            self._wake(self._putters)
        return job

    def _retire_head(self) -> _Bucket | None:
        """Make the best bucket, which has no entries left, idle; return the next."""
        prios, buckets = self._prios, self._buckets
        buckets[heapq.heappop(prios)].active = False
        if len(buckets) > 2 * len(prios) + 64:
            self._forget_idle()
        self._head = buckets[prios[0]] if prios else None
        return self._head

    def _forget_idle(self) -> None:
        """Drop the idle buckets and their (empty) lanes."""
        for prio in [p for p, b in self._buckets.items() if not b.active]:
            for name, lane in self._buckets.pop(prio).lanes.items():
                pipe = lane.pipe
                del pipe.lanes[prio]
                if not pipe.lanes:
                    del self._pipes[name]

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

    # -- per pipeline --------------------------------------------------------------

    def remove(self, pipeline: str) -> list[Job]:
        """Remove and return every queued job of ``pipeline``, in queue order
        (priority, then FIFO). Costs O(its jobs), amortised; other pipelines'
        jobs are not looked at."""
        pipe = self._pipes.pop(pipeline, None)
        if pipe is None:
            return []
        removed: list[Job] = []
        for prio in sorted(pipe.lanes):
            lane = pipe.lanes[prio]
            bucket = self._buckets[prio]
            del bucket.lanes[pipeline]
            if not lane:
                continue
            removed.extend(lane)
            bucket.dead += len(lane)
            lane.clear()
            if bucket.dead * 2 > len(bucket):
                # Compact: the entries kept are fewer than the tombstones dropped,
                # which the removals made, so this stays O(1) per removed job.
                kept = [entry for entry in bucket if entry]
                bucket.clear()
                bucket.extend(kept)
                bucket.dead = 0
        if not removed:
            return []
        self._len -= len(removed)
        for _ in removed:
            if not self._putters:
                break
            self._wake(self._putters)
        return removed

    def count(self, pipeline: str) -> int:
        """How many jobs of ``pipeline`` are queued. O(1)."""
        pipe = self._pipes.get(pipeline)
        return pipe.n if pipe is not None else 0
