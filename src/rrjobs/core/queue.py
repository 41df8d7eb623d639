"""The priority queue shared by every pipeline (RoadRunner's ``jobs.Queue``).

Differences from RoadRunner's binary heap, on purpose:

* **FIFO within one priority.** Equal priorities come out in the order they
  went in, across pipelines too. Inserting and extracting cost O(1) plus
  O(log k) for k distinct queued priorities (no per-job tuple, no sequence
  counter).
* **Backpressure that never drops.** ``insert`` waits while the queue holds
  ``maxsize`` jobs and resumes as soon as one slot frees (RoadRunner v1.0.6
  waits for a full drain).
* **Per-pipeline bookkeeping.** ``count(pipeline)`` costs O(the pipeline's
  distinct queued priorities) and ``remove(pipeline)`` costs in proportion
  to that pipeline's queued jobs
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

A bucket whose jobs all belong to one pipeline (the usual case: one pipeline,
or one priority per pipeline) needs no entries, since its lane's order is the
bucket's: it is *solo*, and a job costs one append and one pop of that lane.
The first job of another pipeline turns the bucket *mixed* by writing the
entries of the jobs queued so far (each job gets at most one such entry, so
this is O(1) per job, amortised); an empty bucket starts solo again.

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


class _Lane(deque["Job"]):
    """The queued jobs of one pipeline at one priority, oldest first.

    In a mixed bucket a lane in use has exactly as many jobs as its bucket has
    entries naming it; ``remove`` empties it and detaches it for good (its
    entries become tombstones), so an entry naming an empty lane is a
    tombstone. Nothing is counted per job beyond the lane itself: a
    pipeline's count is the sum of its lanes' lengths.
    """

    __slots__ = ("pipeline",)

    def __init__(self, pipeline: str) -> None:  # an empty deque needs no deque.__init__
        self.pipeline = pipeline


#: One pipeline's lanes in use, by priority.
_Pipeline = dict[int, _Lane]


class _Bucket(deque[_Lane]):
    """One priority: solo, its jobs all in one lane (:attr:`solo`) and no
    entries; or mixed, an entry per queued job naming its lane, oldest first.

    A bucket is *active* while its priority is in the heap. Extracting its last
    job makes it idle: it stays, with its (empty) lanes, for the next job of
    that priority, until idle buckets outnumber active ones.
    """

    __slots__ = ("active", "dead", "lanes", "prio", "solo")

    def __init__(self, prio: int) -> None:  # an empty deque needs no deque.__init__
        self.prio = prio
        self.active = False
        #: the lane holding every job of this priority (no entries), or None: mixed
        self.solo: _Lane | None = None
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
        return iter([j for pipe in self._pipes.values() for lane in pipe.values()
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
        if bucket is None or not bucket.active:
            bucket = self._activate(job.priority, bucket)
        solo = bucket.solo
        if solo is not None and solo.pipeline == job.pipeline:
            solo.append(job)
        else:
            self._insert_entry(bucket, job)
        self._len += 1
        if self._getters:
            self._wake(self._getters)

    def insert_from(self, jobs: deque[Job], n: int) -> None:
        """Move the first ``n`` jobs of ``jobs`` into the queue, in their order, as
        ``n`` calls of :meth:`insert_nowait` would; raise :class:`QueueFullError`
        (moving none) when they do not all fit. A run of jobs of one pipeline and
        priority whose bucket is solo costs one append per job."""
        if n <= 0:
            return
        if self._len + n > self._maxsize:
            raise QueueFullError(f"priority queue is full ({self._maxsize} jobs)")
        pop, left = jobs.popleft, n
        while left:
            job = jobs[0]
            prio, pipeline = job.priority, job.pipeline
            bucket = self._buckets.get(prio)
            if bucket is None or not bucket.active:
                bucket = self._activate(prio, bucket)
            solo = bucket.solo
            if solo is None or solo.pipeline != pipeline:
                self._insert_entry(bucket, pop())
                left -= 1
                solo = bucket.solo
                if solo is None or solo.pipeline != pipeline:
                    continue
            append = solo.append
            while left:
                job = jobs[0]
                if job.priority != prio or job.pipeline != pipeline:
                    break
                append(pop())
                left -= 1
        self._len += n
        getters = self._getters
        while getters and n:
            self._wake(getters)
            n -= 1

    def _insert_entry(self, bucket: _Bucket, job: Job) -> None:
        """Insert ``job`` into ``bucket`` other than onto its solo lane: an empty
        bucket becomes solo with the job's lane; a solo one of another pipeline
        turns mixed."""
        lane = bucket.lanes.get(job.pipeline)
        if lane is None:
            lane = self._new_lane(bucket, job.pipeline)
        solo = bucket.solo
        if solo is None and not bucket:  # no job at this priority
            bucket.solo = lane
            bucket.dead = 0
            lane.append(job)
            return
        if solo is not None:  # entries for the solo lane's jobs, in their order
            bucket.extend([solo] * len(solo))
            bucket.solo = None
        lane.append(job)
        bucket.append(lane)

    def _activate(self, prio: int, bucket: _Bucket | None) -> _Bucket:
        """The bucket of ``prio``, made if missing, in the heap."""
        if bucket is None:
            self._buckets[prio] = bucket = _Bucket(prio)
        bucket.active = True
        heapq.heappush(self._prios, prio)
        if self._prios[0] == prio:
            self._head = bucket
        return bucket

    def _new_lane(self, bucket: _Bucket, pipeline: str) -> _Lane:
        pipe = self._pipes.get(pipeline)
        if pipe is None:
            self._pipes[pipeline] = pipe = {}
        lane = _Lane(pipeline)
        bucket.lanes[pipeline] = pipe[bucket.prio] = lane
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
        bucket = self._head
        solo = bucket.solo if bucket is not None else None
        if solo is not None:  # the usual case: a solo lane has jobs (remove() detaches
            job = solo.popleft()  # an emptied one)
            if not solo:
                self._retire_head()
            self._len -= 1
            if self._putters:
                self._wake(self._putters)
            return job
        if not self._len:
            return None
        while True:
            if bucket is None:  # jobs are queued, so some bucket is active
                raise AssertionError("priority queue: no active bucket with jobs queued")
            solo = bucket.solo
            if solo is not None:  # a solo lane has jobs: remove() detaches an emptied one
                job = solo.popleft()
                if not solo:
                    self._retire_head()
                break
            if bucket:
                lane = bucket.popleft()
                if lane:
                    job = lane.popleft()
                    if not bucket:
                        self._retire_head()
                    break
                bucket.dead -= 1  # the entry of a removed job
                if bucket:
                    continue
            bucket = self._retire_head()
        self._len -= 1
        if self._putters:
            self._wake(self._putters)
        return job

    def _retire_head(self) -> _Bucket | None:
        """Make the best bucket, which has no jobs left, idle; return the next."""
        prios, buckets = self._prios, self._buckets
        bucket = buckets[heapq.heappop(prios)]
        bucket.active = False
        bucket.solo = None
        bucket.dead = 0
        bucket.clear()
        if len(buckets) > 2 * len(prios) + 64:
            self._forget_idle()
        self._head = buckets[prios[0]] if prios else None
        return self._head

    def _forget_idle(self) -> None:
        """Drop the idle buckets and their (empty) lanes."""
        for prio in [p for p, b in self._buckets.items() if not b.active]:
            for name in self._buckets.pop(prio).lanes:
                pipe = self._pipes[name]
                del pipe[prio]
                if not pipe:
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
        for prio in sorted(pipe):
            lane = pipe[prio]
            bucket = self._buckets[prio]
            del bucket.lanes[pipeline]
            if not lane:
                continue
            if bucket.solo is lane:  # the bucket's only jobs: it has no entries
                bucket.solo = None
                removed.extend(lane)
                lane.clear()
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

    def jobs_of(self, pipeline: str) -> list[Job]:
        """The queued jobs of ``pipeline`` (a snapshot, by priority, FIFO within one).
        Costs O(its jobs); other pipelines' jobs are not looked at."""
        pipe = self._pipes.get(pipeline)
        if pipe is None:
            return []
        return [job for prio in sorted(pipe) for job in pipe[prio]]

    def count(self, pipeline: str) -> int:
        """How many jobs of ``pipeline`` are queued. O(its distinct queued priorities)."""
        pipe = self._pipes.get(pipeline)
        return sum(map(len, pipe.values())) if pipe is not None else 0
