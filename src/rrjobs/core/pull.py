"""``PullDriver``: the template for brokers a consumer fetches from.

SQS ``ReceiveMessage``, Pub/Sub ``Pull``, a JetStream pull consumer's
``fetch`` and a sqlite ``SELECT``: the driver implements

* ``fetch(n)``: up to ``n`` raw messages (it may long-poll; it may raise);
* ``decode(raw)`` and ``poison(raw, reason)`` (see :class:`~rrjobs.core.base.BaseDriver`);
* the :class:`~rrjobs.core.job.Settler` methods, each ending with
  ``self.lane.release()`` (or calling :meth:`settled`);
* optionally ``give_back(jobs)``: what pausing does with the jobs it took
  back out of the priority queue (default: nack them with requeue, so the
  broker delivers them again); or ``hold_at_pause = True``: they stay leased
  to this consumer in :attr:`PullDriver.held` and resume delivers them first,
  those for which ``still_held(job)`` is true (the driver's ``_close`` gives
  back what is held at stop);
* optionally ``pause_wait``: seconds pausing lets a fetch in flight (one run
  inside ``with self.in_flight:``, see :mod:`rrjobs.core.inflight`) finish
  instead of cancelling it; what it returns arrives with the gate closed;
* optionally ``fetch_failed(exc)``: repair after a failed fetch (re-declare a
  deleted queue, reconnect); return ``False`` to ask for a restart at once;
* on a broker that leases each delivered message to its consumer for a while
  (a visibility timeout, an ack wait, a TTR), ``queued_lease()``: its length in
  seconds. While consuming, the supervised task ``"renew"`` then renews, every
  third of it, the lease of every job this consumer holds that no handler has
  started yet (waiting in the priority queue, where a full prefetch window keeps
  a job for as long as the handlers take to reach it): through
  ``renew_queued(jobs, seconds)``, by default ``extend`` of each job at once (a
  driver whose ``extend`` goes through a :class:`~rrjobs.core.batcher.Batcher`
  batches them), overridden where one broker call renews many. A handler's job
  is the worker pool's to extend. Pausing and stopping end the task before the
  queued jobs are taken back (a renewal in flight finishes first).

The template runs the fetch loop as the supervised task ``"fetch"``: it waits
for room in the pipeline's :class:`~rrjobs.core.lane.Lane` (prefetch and the
pause gate), fetches, decodes each message through the guard, and delivers.
A failing fetch is retried with :class:`~rrjobs.core.resilience.Backoff`
(one WARNING when the outage starts, one INFO when it ends, ``ready`` false
meanwhile); after ``restart_after`` seconds of failures the runtime is asked
to rebuild the pipeline.

Concurrency: one fetch at a time per pipeline; settlements run concurrently
with it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import abstractmethod
from collections import deque
from collections.abc import Sequence
from itertools import chain
from typing import Any, ClassVar

from rrjobs.core.base import BaseDriver, describe_error
from rrjobs.core.errors import AckLostError
from rrjobs.core.inflight import InFlight
from rrjobs.core.job import Job
from rrjobs.core.lane import Lane
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.resilience import DEFAULT_RESTART_AFTER, Backoff, FailureWindow

#: The shortest wait between two renewals of the queued jobs' leases (seconds).
MIN_RENEW_EVERY = 0.01


class PullDriver(BaseDriver):
    """A driver whose consumer fetches batches of messages."""

    #: Seconds of failing fetches after which the runtime is asked to restart.
    restart_after: ClassVar[float] = DEFAULT_RESTART_AFTER
    #: Seconds to wait after a fetch that returned nothing (0: fetch long-polls).
    idle_wait: ClassVar[float] = 0.0
    #: Seconds pausing waits for the fetch in :attr:`in_flight` (0: it is cancelled).
    pause_wait: float = 0.0
    #: Keep the jobs taken back at pause in :attr:`held` instead of :meth:`give_back`.
    hold_at_pause: ClassVar[bool] = False
    #: The most jobs one :meth:`renew_queued` call is given.
    renew_batch: ClassVar[int] = 1000

    def __init__(self, pipeline: Pipeline, queue: PriorityQueue, prefetch: int) -> None:
        super().__init__(pipeline, queue)
        self.lane = Lane(queue, self.pipeline_name, prefetch)
        # failing fetches are the broker's outage (core/outage.py), with this restart limit
        self.outage.window = FailureWindow(self.restart_after)
        #: jobs decoded but not yet delivered when the fetch loop was cancelled
        self._undelivered: list[Job] = []
        #: the fetch in flight, which pausing lets finish (``pause_wait``)
        self.in_flight = InFlight()
        #: jobs taken back at pause, in order, for resume (``hold_at_pause``)
        self.held: list[Job] = []
        #: the renewal of the queued jobs' leases in flight (see :meth:`renew_waiting`)
        self._renewal: asyncio.Future[int] | None = None
        #: the fetch being delivered, and how many of its jobs are in the queue
        self._delivering: list[Job] = []
        self._delivered = 0

    # -- what the driver provides ------------------------------------------------------

    @abstractmethod
    async def fetch(self, max_messages: int) -> Sequence[Any]:
        """Up to ``max_messages`` raw messages (an empty sequence when none came)."""

    async def fetch_failed(self, exc: Exception) -> bool:
        """Called after each failed fetch; ``False`` asks for a restart now."""
        return True

    def fetch_want(self) -> int:
        """Free slots worth a fetch (default: half the window, at least one)."""
        return max(1, self.lane.prefetch // 2)

    async def give_back(self, jobs: Sequence[Job]) -> None:
        """Return jobs taken back at pause or stop to the broker.

        Their lane slots are free already (:meth:`Lane.close`); an override
        that settles them through the job (whose settlement frees a slot)
        counts them out again first, as this one does."""
        pending = [job for job in jobs if job.settled is None]
        self.lane.take(len(pending))
        for job in pending:
            if job.settled is None:
                try:
                    await job.nack(requeue=True)
                except Exception as exc:  # redelivered after its lease anyway
                    self.log.warning("pipeline %r: giving job %s back failed: %s",
                                     self.pipeline_name, job.id, describe_error(exc))

    def queued_lease(self) -> float:
        """Seconds the broker leases a delivered job to this consumer, renewed while the
        job waits for a handler (0, the default: the broker leases nothing, or the driver
        needs no renewal)."""
        return 0.0

    async def renew_queued(self, jobs: Sequence[Job], seconds: float
                           ) -> Sequence[BaseException | None]:
        """Renew the leases of ``jobs`` (unsettled, delivered, no handler yet; at most
        :attr:`renew_batch`) for ``seconds`` from now: one result per job, an exception
        for a job whose lease was not renewed. Default: :meth:`extend` each, all at once."""
        return await asyncio.gather(*(self.extend(job, seconds) for job in jobs),
                                    return_exceptions=True)

    def still_held(self, job: Job) -> bool:
        """Whether a job held since pause is still leased to this consumer
        (``hold_at_pause``): resume delivers those, and forgets the others."""
        return job.settled is None

    def settled(self, job: Job) -> None:
        """A job of this pipeline was settled: free its slot."""
        self.lane.release()

    def undelivered(self) -> Sequence[Job]:
        """The jobs of the fetch being delivered that are not in the priority queue
        yet (waiting for room in it): their leases are renewed with the queued ones."""
        return self._delivering[self._delivered:]

    # -- the template ------------------------------------------------------------------

    async def _start_consuming(self) -> None:
        held, self.held = self.held, []
        for job in held:  # taken back at pause: they go out first, in their order
            if self.still_held(job):
                await self.lane.deliver(job)
        self._restart_asked = False
        self.lane.open()
        self.supervisor.start("fetch", self._fetch_loop)
        if self.queued_lease() > 0:
            self.supervisor.start("renew", self._renew_loop)

    async def _stop_consuming(self) -> None:
        await self.supervisor.stop_task("renew")
        renewal, self._renewal = self._renewal, None
        if renewal is not None and not renewal.done():  # it finishes before a give-back
            await self.bounded(renewal, "renewing the leases of queued jobs")
        if self.pause_wait:
            await self.in_flight.settle(self.lane, self.pause_wait)
        taken = self.lane.close()
        await self.supervisor.stop_task("fetch")
        taken.extend(self._undelivered)
        self._undelivered = []
        if self.hold_at_pause:
            self.held.extend(job for job in taken if job.settled is None)
        elif taken:
            await self.give_back(taken)

    async def _renew_loop(self) -> None:
        """The supervised task ``"renew"``: :meth:`renew_waiting` every third of
        :meth:`queued_lease`. A round is not cancelled halfway (pausing waits for it)."""
        while True:
            await asyncio.sleep(max(MIN_RENEW_EVERY, self.queued_lease() / 3))
            self._renewal = renewal = asyncio.ensure_future(self.renew_waiting())
            await asyncio.shield(renewal)
            self._renewal = None

    async def renew_waiting(self) -> int:
        """Renew, for :meth:`queued_lease` seconds, the lease of every job of this
        pipeline waiting in the priority queue (:meth:`renew_queued`, by
        :attr:`renew_batch`, the batches at once); how many were renewed. A job settled,
        or taken by a handler whose lease extension is in flight, is left out; a job's
        settlement waits for the renewal of its batch (:meth:`Job.extend_together`)."""
        seconds = self.queued_lease()
        jobs = [job for job in chain(self.queue.jobs_of(self.pipeline_name), self.undelivered())
                if job.settler is self]
        if seconds <= 0 or not jobs:
            return 0
        n = self.renew_batch

        async def renew(batch: list[Job]) -> Sequence[BaseException | None]:
            return await self.renew_queued(batch, seconds)

        rounds = await asyncio.gather(*(Job.extend_together(jobs[i:i + n], renew)
                                        for i in range(0, len(jobs), n)))
        failed = [r for _, results in rounds for r in results if r is not None]
        renewed = sum(len(taken) for taken, _ in rounds) - len(failed)
        if failed:
            lost = all(isinstance(exc, AckLostError) for exc in failed)
            self.log.log(logging.DEBUG if lost or self.outage.quiet() else logging.WARNING,
                         "pipeline %r: renewing the leases of %d queued jobs failed (the "
                         "broker delivers them again after their lease): %s",
                         self.pipeline_name, len(failed), describe_error(failed[0]))
        return renewed

    async def _fetch_loop(self) -> None:
        lane = self.lane
        while True:
            room = await lane.wait_room(self.fetch_want())
            started = time.monotonic()
            try:
                raws = await self.fetch(room)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not await self._fetch_error(exc):
                    return
                continue
            if self.outage.failing:
                self._fetch_recovered(started)
            if not raws:
                if self.idle_wait:
                    await asyncio.sleep(self.idle_wait)
                continue
            await self._deliver_all(raws)

    async def _deliver_all(self, raws: Sequence[Any]) -> None:
        jobs = [job for job in map(self.accept, raws) if job is not None]
        lane, queue = self.lane, self.queue
        self._delivering = jobs
        try:
            # those the priority queue has room for go in at once, without a coroutine
            # per job; the others one by one as room frees
            fit = min(len(jobs), queue.maxsize - len(queue))
            if fit > 0:
                lane.take(fit)
                queue.insert_from(deque(jobs[:fit]), fit)
            for n in range(max(fit, 0), len(jobs)):
                self._delivered = n
                try:
                    await lane.deliver(jobs[n])
                except BaseException:
                    self._undelivered.extend(jobs[n:])
                    raise
        finally:
            self._delivering = []

    @property
    def fetch_backoff(self) -> Backoff:
        """The waits between failing fetches (:attr:`outage`'s)."""
        return self.outage.backoff

    @fetch_backoff.setter
    def fetch_backoff(self, backoff: Backoff) -> None:
        self.outage.backoff = backoff

    @property
    def fetch_failures(self) -> FailureWindow:
        """How long the broker has been failing (:attr:`outage`'s window)."""
        return self.outage.window

    @fetch_failures.setter
    def fetch_failures(self, window: FailureWindow) -> None:
        self.outage.window = window

    async def _fetch_error(self, exc: Exception) -> bool:
        outage = self.outage
        outage.down(exc, call="fetching")  # not ready until it ends
        reason = outage.reason(exc, "fetching")
        if not await self.fetch_failed(exc) or reason is not None:
            self.request_restart(reason or f"fetching has failed for "
                                 f"{outage.window.elapsed():.0f}s ({describe_error(exc)})")
            return False
        await outage.backoff.sleep()
        return True

    def _fetch_recovered(self, started: float) -> None:
        """A fetch that ``started`` after the latest failure worked: the outage is over,
        unless the driver knows its connection is still down (a client that delivers
        what it had buffered)."""
        if self.connected:
            self.outage.ok(started)
