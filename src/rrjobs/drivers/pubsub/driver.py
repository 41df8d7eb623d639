"""The ``google_pub_sub`` driver: RoadRunner's Google Pub/Sub driver on the asyncio GAPIC clients.

Capabilities:

* Delays: yes, durable, any length, kept by the broker. A delayed job is
  published at once with ``rr_delay``; it is due at ``publish_time + rr_delay``.
  When the consumer pulls it early it sets the message's ack deadline to the
  time left (``ModifyAckDeadline``, at most 600 s) and forgets it: the broker
  redelivers it then (one pull per 600 s of delay at most). Only when a
  native dead-letter policy would soon count it out (delivery attempt ≥
  ``max_delivery_attempts`` - 1) is a copy with the remaining delay published
  and the original acknowledged. Nothing is held in memory; parked messages
  do not count against ``prefetch``.
* Priority: in the runtime's priority queue, within the prefetch window.
  Pub/Sub itself does not order messages (no ordering keys are used).
* Durable: yes (the broker keeps unacknowledged messages).
* Dead-letter: with ``dead_letter_topic``: ``nack()`` publishes the job there
  and acknowledges it; the subscription's native dead-letter policy
  (``max_delivery_attempts``) also catches jobs that are redelivered too often.
  Without it, ``nack()`` acknowledges and drops the job (logged).
* Lease extension: yes, ``ModifyAckDeadline`` (batched; ≤ 600 s per call).
* Redelivery after a crash: yes, when the ack deadline passes.
* Pause: yes; jobs taken back out of the priority queue stay leased (their
  deadline is extended while paused) and go out first, in order, on resume;
  ``stop`` gives them back to the broker at once (``ModifyAckDeadline(0)``).

Consumption uses unary ``Pull`` (never the threaded streaming-pull helper);
acknowledgements and deadline changes of one loop tick go out as one request.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
import warnings
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, ClassVar

from google.api_core import exceptions as gexc
from google.pubsub_v1 import (
    DeadLetterPolicy,
    PublishRequest,
    PubsubMessage,
    PullResponse,
    Subscription,
)

from rrjobs.core.base import BaseDriver
from rrjobs.core.capabilities import Capabilities
from rrjobs.core.errors import AckLostError, ConfigError, PipelineStateError, RRJobsError
from rrjobs.core.headers import RR_DELAY, RR_ID, Headers
from rrjobs.core.interfaces import Configurer, Constructor
from rrjobs.core.message import Message
from rrjobs.core.options import options_from_config, options_from_pipeline, validate
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.state import State
from rrjobs.drivers.pubsub import codec
from rrjobs.drivers.pubsub.batching import TickBatcher
from rrjobs.drivers.pubsub.client import Clients, open_clients
from rrjobs.drivers.pubsub.config import MAX_ACK_DEADLINE, PubSubOptions, PubSubSection
from rrjobs.drivers.pubsub.job import PubSubJob

log = logging.getLogger("rrjobs.drivers.google_pub_sub")

DRIVER_NAME = "google_pub_sub"
#: Pub/Sub's request size limit is 10 MB; keep room for attributes and framing.
MAX_PAYLOAD = 10_000_000 - 64 * 1024
#: Messages and ids per Publish/Acknowledge/ModifyAckDeadline request.
BATCH_LIMIT = 1000
#: Bytes of payload per Publish request at most (Pub/Sub's limit is 10 MB).
PUBLISH_BYTES = 9_000_000
#: An empty Pull is repeated after a pause growing from IDLE_MIN to IDLE_MAX.
#: Pulls return at once (``return_immediately``): a long poll that the client
#: times out can race with the server handing messages out, which then stay
#: leased to nobody until their ack deadline passes.
IDLE_MIN, IDLE_MAX = 0.01, 0.25
#: The longest ``pause`` waits for a Pull in flight before cancelling the loop.
PAUSE_WAIT = 5.0
#: Deadline of the other calls.
CALL_TIMEOUT = 30.0
#: Pull failures are retried with this backoff; failing longer than
#: RESTART_AFTER asks the runtime to rebuild the pipeline.
BACKOFF_MIN, BACKOFF_MAX, RESTART_AFTER = 0.1, 5.0, 60.0
#: Local delayed-job entries are forgotten this long after they fell due.
FORGET_AFTER = 3600.0
#: Past this many local delayed-job entries, stale ones are pruned at once
#: (otherwise by the keep-alive task and ``state()``).
PRUNE_AT = 100_000


#: The raw protobuf class under ``PubsubMessage``: built and read without the
#: proto-plus wrappers, which cost more than the rest of a job's handling.
RawMessage: Any = PubsubMessage.pb()
RawPublishRequest: Any = PublishRequest.pb()


class PubSubError(RRJobsError):
    """A Pub/Sub call failed."""


def capabilities_for(options: PubSubOptions) -> Capabilities:
    return Capabilities(
        delay=True,
        max_delay=None,
        delay_native=True,
        priority=True,
        durable=True,
        max_payload=MAX_PAYLOAD,
        lease_extension=True,
        dead_letter=bool(options.dead_letter_topic),
        redelivery_on_crash=True,
        pause=True,
        headers=True,
    )


class PubSubDriver(BaseDriver):
    """One pipeline on a Pub/Sub topic and its subscription (named after the pipeline).

    Every method runs on the event loop and never blocks it. ``push`` returns
    once Pub/Sub returned the message id. Safe to push and settle concurrently.

    ``state()`` cannot ask Pub/Sub for counts (only Cloud Monitoring has them):
    ``active`` and ``delayed`` are this process's own estimate (its pushes,
    delays and retries minus what it consumed, plus the jobs in the priority
    queue); ``reserved`` is exact (jobs held by handlers).
    """

    name: ClassVar[str] = DRIVER_NAME

    def __init__(self, pipeline: Pipeline, queue: PriorityQueue, section: PubSubSection,
                 options: PubSubOptions, clients: Clients, ack_deadline: int,
                 max_attempts: int | None = None) -> None:
        pipeline.setdefault("priority", options.priority)
        super().__init__(pipeline, queue)
        self.priority = options.priority
        self.section = section
        self.options = options
        self.clients = clients
        self.capabilities = capabilities_for(options)
        self.topic = options.topic_path()
        self.subscription = options.subscription_path(self.pipeline_name)
        self.dead_letter_topic = options.dead_letter_path() if options.dead_letter_topic else ""
        self.ack_deadline = ack_deadline
        #: The subscription's native dead-letter policy's max_delivery_attempts (0: none).
        self.max_attempts = (options.max_delivery_attempts or 0) if max_attempts is None \
            else max_attempts
        self._prune_at = PRUNE_AT
        self._outstanding: dict[str, PubSubJob] = {}
        self._room = asyncio.Event()
        self._generation = 0
        self._loop_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._backlog = 0
        self._held_back: list[PubSubJob] = []
        self._keepalive: asyncio.Task[None] | None = None
        self._delayed: dict[str, float] = {}
        self._publisher: TickBatcher[tuple[str, Any], str] = TickBatcher(
            self._publish_many, BATCH_LIMIT)
        self._acker: TickBatcher[str, None] = TickBatcher(
            self._ack_many, BATCH_LIMIT, self._lost("acknowledging"))
        self._modacker: TickBatcher[tuple[str, int], None] = TickBatcher(
            self._modack_many, BATCH_LIMIT, self._lost("changing an ack deadline"))

    # -- building ---------------------------------------------------------------------

    @classmethod
    async def open(cls, pipeline: Pipeline, queue: PriorityQueue, section: PubSubSection,
                   options: PubSubOptions, where: str) -> PubSubDriver:
        """Declare the topic(s) and the subscription, then build the driver."""
        clients = await open_clients(section)
        try:
            deadline, attempts = await _declare(clients, options, pipeline.name(), where)
        except BaseException:
            await clients.close()
            raise
        return cls(pipeline, queue, section, options, clients, deadline, attempts)

    # -- pushing -----------------------------------------------------------------------------

    def _encode(self, msg: Message) -> Any:
        attrs = codec.attributes(msg.id, msg.name, msg.headers, msg.priority,
                                 codec.delay_seconds(msg.delay), msg.auto_ack)
        return RawMessage(data=bytes(msg.payload), attributes=attrs)

    async def _send(self, msg: Message) -> None:
        # Counted before the round trip: the consumer may pull the job before
        # the publish call returns.
        self._count_pushed(msg.id, msg.delay)
        try:
            await self._publisher.submit((self.topic, self._encode(msg)))
        except BaseException:
            self._uncount_pushed(msg.id, msg.delay)
            raise

    async def _send_batch(self, msgs: Sequence[Message]) -> None:
        encoded = [self._encode(m) for m in msgs]
        for m in msgs:
            self._count_pushed(m.id, m.delay)
        # One batch already: straight to Publish requests (≤ 1000 messages each).
        results = await self._publish_many([(self.topic, e) for e in encoded])
        failed = [(m.id, r) for m, r in zip(msgs, results, strict=True)
                  if isinstance(r, BaseException)]
        for m, r in zip(msgs, results, strict=True):
            if isinstance(r, BaseException):
                self._uncount_pushed(m.id, m.delay)
        if failed:
            raise PubSubError(f"{len(failed)} of {len(msgs)} jobs were not published; first "
                              f"failure (job {failed[0][0]}): {failed[0][1]}") from failed[0][1]

    def _count_pushed(self, job_id: str, delay: float) -> None:
        if delay > 0:
            self._remember_delayed(job_id, time.time() + codec.delay_seconds(delay))
        else:
            self._backlog += 1

    def _remember_delayed(self, job_id: str, due: float) -> None:
        self._delayed[job_id] = due
        if len(self._delayed) > self._prune_at:
            self._prune_delayed(time.time())
            self._prune_at = max(PRUNE_AT, 2 * len(self._delayed))

    def _prune_delayed(self, now: float) -> None:
        """Forget local delayed-job entries that fell due more than FORGET_AFTER ago."""
        for key in [k for k, due in self._delayed.items() if due < now - FORGET_AFTER]:
            del self._delayed[key]

    def _uncount_pushed(self, job_id: str, delay: float) -> None:
        if delay > 0:
            self._delayed.pop(job_id, None)
        else:
            self._backlog = max(0, self._backlog - 1)

    async def _publish_many(self, items: Sequence[tuple[str, Any]]
                            ) -> list[str | BaseException]:
        out: list[str | BaseException] = []
        start = 0
        while start < len(items):
            topic = items[start][0]
            end, size = start, 0
            while (end < len(items) and items[end][0] == topic and end - start < BATCH_LIMIT
                   and (size == 0 or size + len(items[end][1].data) <= PUBLISH_BYTES)):
                size += len(items[end][1].data)
                end += 1
            chunk = [m for _, m in items[start:end]]
            try:
                request = PublishRequest.wrap(RawPublishRequest(topic=topic, messages=chunk))
                response = await self.clients.publisher.publish(request=request,
                                                                timeout=CALL_TIMEOUT)
                out.extend(response.message_ids)
            except gexc.GoogleAPICallError as exc:
                out.extend([PubSubError(f"publish to {topic} failed: {exc}")] * len(chunk))
            start = end
        return out

    # -- acks ---------------------------------------------------------------------------------

    async def _ack_many(self, ack_ids: Sequence[str]) -> list[BaseException | None]:
        return await self._by_ids(ack_ids, lambda ids: self.clients.subscriber.acknowledge(
            subscription=self.subscription, ack_ids=ids, timeout=CALL_TIMEOUT))

    async def _modack_many(self, items: Sequence[tuple[str, int]]) -> list[BaseException | None]:
        out: list[BaseException | None] = [None] * len(items)
        by_seconds: dict[int, list[int]] = {}
        for i, (_, seconds) in enumerate(items):
            by_seconds.setdefault(seconds, []).append(i)
        for seconds, idx in by_seconds.items():
            ids = [items[i][0] for i in idx]
            results = await self._by_ids(ids, lambda ids, s=seconds: (
                self.clients.subscriber.modify_ack_deadline(
                    subscription=self.subscription, ack_ids=ids, ack_deadline_seconds=s,
                    timeout=CALL_TIMEOUT)))
            for i, r in zip(idx, results, strict=True):
                out[i] = r
        return out

    async def _by_ids(self, ack_ids: Sequence[str], call: Any) -> list[BaseException | None]:
        """Run ``call(ids)``; an invalid ack id fails the whole request, so on
        INVALID_ARGUMENT each id is retried alone to find the bad one(s)."""
        try:
            await call(list(ack_ids))
            return [None] * len(ack_ids)
        except gexc.InvalidArgument as exc:
            if len(ack_ids) == 1:
                return [AckLostError(f"ack id no longer valid (deadline passed?): {exc}")]
        except gexc.GoogleAPICallError as exc:
            return [AckLostError(f"Pub/Sub call failed; the broker redelivers the job: {exc}")
                    ] * len(ack_ids)
        out: list[BaseException | None] = []
        for one in ack_ids:
            out.extend(await self._by_ids([one], call))
        return out

    def _lost(self, what: str) -> Callable[[BaseException], None]:
        def report(exc: BaseException) -> None:
            log.warning("pipeline %r: %s failed (the broker redelivers): %s",
                        self.pipeline_name, what, exc)
        return report

    def _fire(self, coro: Awaitable[Any], what: str) -> None:
        """Run ``coro`` in the background; failures are logged (the broker redelivers)."""
        async def run() -> None:
            try:
                await coro
            except Exception as exc:
                log.warning("pipeline %r: %s failed: %s", self.pipeline_name, what, exc)

        task = asyncio.get_running_loop().create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- consuming -------------------------------------------------------------------------------

    async def _start_consuming(self) -> None:
        if self._keepalive is None:
            self._keepalive = asyncio.get_running_loop().create_task(self._keep_alive())
        held, self._held_back = self._held_back, []
        for job in held:  # taken back at pause: they go out first, in their order
            if job.ack_id in self._outstanding:
                await self.queue.insert(job)
        self._generation += 1
        self._loop_task = asyncio.get_running_loop().create_task(
            self._pull_loop(self._generation), name=f"pubsub-pull-{self.pipeline_name}")

    async def _stop_consuming(self) -> None:
        self._generation += 1
        self._room.set()
        task, self._loop_task = self._loop_task, None
        if task is not None:
            # A Pull in flight finishes (it returns at once): cancelling it could
            # strand the messages the broker already handed out until their
            # deadline passed. Only a loop stuck on a full priority queue is cancelled.
            done, _ = await asyncio.wait([task], timeout=PAUSE_WAIT)
            if not done:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        # Jobs taken back out of the priority queue stay leased (kept alive while
        # paused) so that resume delivers them first, in order; stop releases them.
        self._held_back = [j for j in self.queue.remove(self.pipeline_name)
                           if isinstance(j, PubSubJob) and j.ack_id in self._outstanding]

    def _stop_keepalive(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None

    async def _keep_alive(self) -> None:
        """Every half ack deadline, extend the leases of the jobs no handler holds
        yet: those waiting in the priority queue and those held back by ``pause``
        (the worker pool extends the jobs handlers hold). Also prunes stale
        local delayed-job entries."""
        while True:
            await asyncio.sleep(max(0.5, self.ack_deadline / 2))
            waiting = [j for j in self.queue if j.pipeline == self.pipeline_name]
            ids = [j.ack_id for j in (*waiting, *self._held_back)
                   if isinstance(j, PubSubJob) and j.ack_id in self._outstanding]
            for i in ids:
                self._modacker.post((i, self.ack_deadline))
            self._prune_delayed(time.time())

    def _release(self, jobs: Sequence[Any]) -> None:
        """Give jobs back to the broker at once (``ModifyAckDeadline(0)``)."""
        ids = []
        for job in jobs:
            if isinstance(job, PubSubJob) and job.ack_id in self._outstanding:
                del self._outstanding[job.ack_id]
                ids.append(job.ack_id)
        if ids:
            self._backlog += len(ids)
            self._room.set()
            for i in ids:
                self._modacker.post((i, 0))

    async def _pull(self, max_messages: int) -> Any:
        """One ``Pull`` that returns at once (the raw ``PullResponse`` protobuf)."""
        with warnings.catch_warnings():
            # return_immediately is deprecated in favour of streaming pull, which
            # the asyncio GAPIC client does not offer; Pub/Sub still honours it.
            warnings.simplefilter("ignore", DeprecationWarning)
            response = await self.clients.subscriber.pull(
                subscription=self.subscription, max_messages=max_messages,
                return_immediately=True, timeout=CALL_TIMEOUT, retry=None)
        return PullResponse.pb(response)

    async def _pull_loop(self, generation: int) -> None:
        backoff, idle = BACKOFF_MIN, IDLE_MIN
        failing_since: float | None = None
        while self._generation == generation:
            room = self.options.prefetch - len(self._outstanding)
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            try:
                response = await self._pull(min(room, BATCH_LIMIT))
            except gexc.GoogleAPICallError as exc:
                now = time.monotonic()
                failing_since = failing_since or now
                log.warning("pipeline %r: pull failed: %s", self.pipeline_name, exc)
                if now - failing_since > RESTART_AFTER or isinstance(exc, gexc.NotFound):
                    self._ask_restart(exc)
                    return
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff, failing_since = BACKOFF_MIN, None
            if not response.received_messages:
                await asyncio.sleep(idle)
                idle = min(idle * 2, IDLE_MAX)
                continue
            idle = IDLE_MIN
            await self._deliver(response.received_messages, generation)

    def _ask_restart(self, exc: BaseException) -> None:
        if self.command_handler is not None:
            log.error("pipeline %r: cannot consume (%s); asking the runtime to restart it",
                      self.pipeline_name, exc)
            self.command_handler(self.pipeline_name, "restart")
        else:
            log.error("pipeline %r: cannot consume (%s) and no runtime to restart it",
                      self.pipeline_name, exc)

    async def _deliver(self, received: Sequence[Any], generation: int) -> None:
        """Queue the pulled jobs (waiting while the priority queue is full); park
        delayed ones that are not due. If cancelled, what is not queued yet goes
        back to the broker."""
        now = time.time()
        for n, rm in enumerate(received):
            if self._generation != generation:  # paused meanwhile: give the rest back
                ids = [r.ack_id for r in received[n:]]
                self._backlog += sum(1 for r in received[n:] if r.message.attributes.get(
                    RR_ID, "") not in self._delayed)
                for i in ids:
                    self._modacker.post((i, 0))
                return
            try:
                job = self._job_of(rm, now)
            except Exception:
                # A message this driver cannot read must not stop the loop: it
                # is left to its ack deadline (and a dead-letter policy, if any).
                log.exception("pipeline %r: cannot read message %s; left to its ack "
                              "deadline", self.pipeline_name, rm.message.message_id)
                continue
            if job is None:
                continue
            # auto_ack jobs too: the worker pool acknowledges them before the
            # handler runs; until then pause/stop give them back like any other.
            self._outstanding[rm.ack_id] = job
            try:
                await self.queue.insert(job)
            except asyncio.CancelledError:
                self._release([job])
                ids = [r.ack_id for r in received[n + 1:]]
                self._backlog += sum(1 for r in received[n + 1:] if r.message.attributes.get(
                    RR_ID, "") not in self._delayed)
                for i in ids:
                    self._modacker.post((i, 0))
                raise

    def _job_of(self, rm: Any, now: float) -> PubSubJob | None:
        """The job of a pulled message, or None when it is parked (not due)."""
        m = rm.message
        attrs = dict(m.attributes)
        d = codec.decode(attrs, self.priority)
        if d.delay > 0:
            stamp = m.publish_time
            due = stamp.seconds + stamp.nanos / 1e9 + d.delay
            left = due - now
            if left > 0:
                self._park(rm, attrs, d.id, due, left)
                return None
        if self._delayed.pop(d.id, None) is None:
            self._backlog = max(0, self._backlog - 1)
        return PubSubJob(self, rm.ack_id, m.message_id, rm.delivery_attempt, attrs,
                         self.ack_deadline, id=d.id, name=d.name, payload=m.data,
                         headers=d.headers, pipeline=self.pipeline_name,
                         priority=d.priority, auto_ack=d.auto_ack)

    def _park(self, rm: Any, attrs: dict[str, str], job_id: str, due: float,
              left: float) -> None:
        """A delayed message pulled early: the broker keeps it until it is due.

        Its ack deadline is set to the time left (at most 600 s), so it comes
        back at most once per 600 s. Only when a native dead-letter policy
        would soon count it out is a copy with the time left published and
        the original acknowledged (the copy starts again at attempt 1).
        """
        self._remember_delayed(job_id, due)
        near_limit = self.max_attempts > 0 and rm.delivery_attempt >= self.max_attempts - 1
        if left <= MAX_ACK_DEADLINE or not near_limit:
            self._modacker.post((rm.ack_id, min(MAX_ACK_DEADLINE, math.ceil(left))))
            return
        attrs = {**attrs, RR_DELAY: str(math.ceil(left))}
        copy = RawMessage(data=rm.message.data, attributes=attrs)

        async def hop() -> None:
            await self._publisher.submit((self.topic, copy))
            await self._acker.submit(rm.ack_id)

        self._fire(hop(), "re-publishing a long delay")

    # -- settling (called by PubSubJob) ----------------------------------------------------

    def _take(self, job: PubSubJob) -> None:
        if self.stopped:
            raise PipelineStateError(
                "failed to acknowledge the JOB, the pipeline is probably stopped")
        if self._outstanding.pop(job.ack_id, None) is None:
            raise AckLostError(f"job {job.id} was given back to the broker (pause/stop); "
                               "the broker redelivers it")
        self._room.set()

    async def settle_ack(self, job: PubSubJob) -> None:
        """Queue the ack for this tick's ``Acknowledge`` request and return.

        Pub/Sub's acks are best effort (without exactly-once delivery the
        broker may redeliver even an acknowledged message), so the handler does
        not wait for the round trip; a failed request is logged, and the broker
        redelivers those jobs. ``stop`` waits for every queued ack.
        """
        self._take(job)
        self._acker.post(job.ack_id)

    async def settle_drop(self, job: PubSubJob) -> None:
        self._take(job)
        if self.dead_letter_topic:
            attrs = codec.attributes(job.id, job.name, job.headers, job.priority, 0,
                                     job.auto_ack)
            try:
                await self._publisher.submit(
                    (self.dead_letter_topic, RawMessage(data=job.payload, attributes=attrs)))
            except BaseException:
                self._modacker.post((job.ack_id, 0))
                raise
        else:
            log.warning("pipeline %r: job %s (%s) nacked without requeue and no "
                        "dead_letter_topic: dropped", self.pipeline_name, job.id, job.name)
        await self._acker.submit(job.ack_id)

    async def settle_retry(self, job: PubSubJob, delay: float) -> None:
        """``nack(requeue=True, delay)``: the broker redelivers after ``delay``."""
        seconds = codec.delay_seconds(delay)
        if seconds > MAX_ACK_DEADLINE:
            await self.settle_copy(job, job.headers, delay)
            return
        self._take(job)
        self._count_pushed(job.id, seconds)
        try:
            await self._modacker.submit((job.ack_id, seconds))
        except BaseException:
            self._uncount_pushed(job.id, seconds)
            raise

    async def settle_copy(self, job: PubSubJob, headers: Headers, delay: float) -> None:
        """Publish a copy (``headers``, ``delay``), then acknowledge the original."""
        self._take(job)
        seconds = codec.delay_seconds(delay)
        self._count_pushed(job.id, seconds)
        try:
            attrs = codec.attributes(job.id, job.name, headers, job.priority, seconds,
                                     job.auto_ack)
            await self._publisher.submit((self.topic, RawMessage(data=job.payload,
                                                                    attributes=attrs)))
        except BaseException:
            self._uncount_pushed(job.id, seconds)
            self._modacker.post((job.ack_id, 0))
            self._backlog += 1
            raise
        await self._acker.submit(job.ack_id)

    async def extend(self, job: PubSubJob, seconds: float) -> None:  # type: ignore[override]
        if self.stopped:
            raise PipelineStateError(f"pipeline {self.pipeline_name!r} is stopped")
        if job.ack_id not in self._outstanding:
            raise AckLostError(f"job {job.id} is no longer held by this consumer")
        await self._modacker.submit((job.ack_id, min(MAX_ACK_DEADLINE, max(1, math.ceil(
            seconds)))))

    # -- state and closing ------------------------------------------------------------------

    async def state(self) -> State:
        queued = self.queue.count(self.pipeline_name)
        now = time.time()
        self._prune_delayed(now)
        delayed = sum(1 for due in self._delayed.values() if due > now)
        due_now = len(self._delayed) - delayed
        return State(
            pipeline=self.pipeline_name,
            driver=self.name,
            queue=self.topic,
            active=self._backlog + due_now + queued + len(self._held_back),
            delayed=delayed,
            reserved=max(0, len(self._outstanding) - queued - len(self._held_back)),
            ready=self.consuming,
            priority=self.priority,
        )

    async def _close(self) -> None:
        self._stop_keepalive()
        self._held_back = []
        held = list(self._outstanding.values())
        self._release(held)
        await self._acker.drain()
        await self._modacker.drain()
        await self._publisher.drain()
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        await self.clients.close()


async def _declare(clients: Clients, options: PubSubOptions, pipeline: str, where: str
                   ) -> tuple[int, int]:
    """Create the topic(s) and subscriptions that are missing; return the
    subscription's ack deadline and its dead-letter policy's max delivery
    attempts (0: none). An existing subscription is reused unchanged; an
    explicitly set ``ack_deadline``, ``dead_letter_topic`` or
    ``max_delivery_attempts`` it does not match is a ConfigError."""
    topics = [] if options.skip_topic_declaration else [options.topic_path()]
    if options.dead_letter_topic:
        topics.append(options.dead_letter_path())
    try:
        for topic in topics:
            try:
                await clients.publisher.create_topic(name=topic, timeout=CALL_TIMEOUT)
            except gexc.AlreadyExists:
                pass
        if options.dead_letter_topic:
            # Messages published to a topic without a subscription are lost: keep
            # dead letters in a subscription named after the dead-letter topic.
            try:
                await clients.subscriber.create_subscription(
                    name=options.dead_letter_subscription_path(),
                    topic=options.dead_letter_path(), timeout=CALL_TIMEOUT)
            except gexc.AlreadyExists:
                pass
        request = Subscription(name=options.subscription_path(pipeline),
                               topic=options.topic_path(),
                               ack_deadline_seconds=options.ack_deadline)
        if options.dead_letter_topic and options.max_delivery_attempts:
            request.dead_letter_policy = DeadLetterPolicy(
                dead_letter_topic=options.dead_letter_path(),
                max_delivery_attempts=options.max_delivery_attempts)
        try:
            sub = await clients.subscriber.create_subscription(request=request,
                                                               timeout=CALL_TIMEOUT)
        except gexc.AlreadyExists:
            sub = await clients.subscriber.get_subscription(
                subscription=request.name, timeout=CALL_TIMEOUT)
            if sub.topic != request.topic:
                raise ConfigError(where, f"subscription {request.name} exists on topic "
                                         f"{sub.topic}, not {request.topic}") from None
            _check_existing(sub, request, options, where)
    except gexc.NotFound as exc:
        raise ConfigError(f"{where}.topic", f"Pub/Sub: {exc.message}") from exc
    except (gexc.InvalidArgument, gexc.PermissionDenied) as exc:
        raise ConfigError(where, f"Pub/Sub refused the topic/subscription: {exc}") from exc
    policy = sub.dead_letter_policy
    attempts = int(policy.max_delivery_attempts) if policy and policy.dead_letter_topic else 0
    return int(sub.ack_deadline_seconds) or options.ack_deadline, attempts


def _check_existing(sub: Subscription, request: Subscription, options: PubSubOptions,
                    where: str) -> None:
    """Refuse options the user set that an existing subscription does not have
    (it is never modified)."""
    given = options.model_fields_set
    if "ack_deadline" in given and sub.ack_deadline_seconds != options.ack_deadline:
        raise ConfigError(f"{where}.ack_deadline",
                          f"subscription {sub.name} exists with an ack deadline of "
                          f"{sub.ack_deadline_seconds} s, not {options.ack_deadline} s "
                          "(existing subscriptions are not modified)")
    if not given & {"dead_letter_topic", "max_delivery_attempts"}:
        return
    have = sub.dead_letter_policy
    have_topic = have.dead_letter_topic if have else ""
    have_attempts = int(have.max_delivery_attempts) if have and have_topic else 0
    want = request.dead_letter_policy if "dead_letter_policy" in request else None
    want_topic = want.dead_letter_topic if want else ""
    want_attempts = int(want.max_delivery_attempts) if want and want_topic else 0
    if want_topic and have_topic and want_topic != have_topic:
        raise ConfigError(f"{where}.dead_letter_topic",
                          f"subscription {sub.name} exists with the dead-letter policy topic "
                          f"{have_topic}, not {want_topic} "
                          "(existing subscriptions are not modified)")
    if want_attempts != have_attempts:
        got = (f"max_delivery_attempts {have_attempts}" if have_topic
               else "no dead-letter policy")
        raise ConfigError(f"{where}.max_delivery_attempts",
                          f"subscription {sub.name} exists with {got}, not "
                          f"{want_attempts or 'none'} (existing subscriptions are not "
                          "modified; set max_delivery_attempts to match)")


class PubSubConstructor(Constructor):
    """Builds ``google_pub_sub`` drivers.

    Reads the global ``google_pub_sub:`` section once (required, as in RoadRunner).
    """

    name = DRIVER_NAME

    def __init__(self, configurer: Configurer) -> None:
        super().__init__(configurer)
        self._section: PubSubSection | None = None

    def section(self) -> PubSubSection:
        if self._section is None:
            if not self.configurer.has(DRIVER_NAME):
                raise ConfigError(DRIVER_NAME, "the google_pub_sub driver needs the global "
                                               "google_pub_sub section (endpoint, insecure)")
            self._section = validate(PubSubSection, self.configurer.get(DRIVER_NAME) or {},
                                     DRIVER_NAME)
        return self._section

    async def driver_from_config(self, config_key: str, queue: PriorityQueue,
                                 pipeline: Pipeline) -> PubSubDriver:
        options = options_from_config(self.configurer, config_key, PubSubOptions)
        return await PubSubDriver.open(pipeline, queue, self.section(), options, config_key)

    async def driver_from_pipeline(self, pipeline: Pipeline, queue: PriorityQueue
                                   ) -> PubSubDriver:
        options = options_from_pipeline(pipeline, PubSubOptions)
        return await PubSubDriver.open(pipeline, queue, self.section(), options,
                                       f"declare.{pipeline.name()}")


__all__ = ["PubSubConstructor", "PubSubDriver", "PubSubError", "capabilities_for"]
