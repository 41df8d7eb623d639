"""The ``google_pub_sub`` driver: RoadRunner's Google Pub/Sub driver on the asyncio GAPIC clients.

Capabilities, delays (parked with ``ModifyAckDeadline`` until due), settling,
pause and failure handling are described for users in ``docs/drivers/pubsub.md``.
Consumption uses unary ``Pull`` (never the threaded streaming-pull helper) in
the kit's :class:`~rrjobs.core.leases.LeasingDriver` loop; acknowledgements,
deadline changes and publishes of one loop tick go out as one request each
(:class:`~rrjobs.core.batcher.Batcher`).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar, cast

from google.api_core import exceptions as gexc
from google.pubsub_v1 import (
    DeadLetterPolicy,
    PublishRequest,
    PubsubMessage,
    Subscription,
)

from rrjobs.core.batcher import Batcher, chunks
from rrjobs.core.capabilities import Capabilities
from rrjobs.core.constructor import DriverConstructor
from rrjobs.core.deadletters import DeadLetterStore
from rrjobs.core.delays import SECOND, whole_seconds
from rrjobs.core.errors import AckLostError, ConfigError, PipelineStateError, RRJobsError
from rrjobs.core.headers import RR_DELAY, RR_ID, Headers
from rrjobs.core.job import Job
from rrjobs.core.leases import LeasingDriver
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.state import State
from rrjobs.drivers.pubsub import codec
from rrjobs.drivers.pubsub.client import Clients, open_clients
from rrjobs.drivers.pubsub.config import MAX_ACK_DEADLINE, PubSubOptions, PubSubSection
from rrjobs.drivers.pubsub.deadletters import DeadLetterSubscription, pull_now

DRIVER_NAME = "google_pub_sub"
#: Pub/Sub's request size limit is 10 MB; keep room for attributes and framing.
MAX_PAYLOAD = 10_000_000 - 64 * 1024
#: Messages and ids per Publish/Acknowledge/ModifyAckDeadline request.
BATCH_LIMIT = 1000
#: Requests of one kind (publish, acknowledge, deadline change) in flight at once.
BATCH_CONCURRENCY = 4
#: Bytes of payload per Publish request at most (Pub/Sub's limit is 10 MB).
PUBLISH_BYTES = 9_000_000
#: An empty Pull is repeated after a pause growing from IDLE_MIN to IDLE_MAX. Pulls return
#: at once: a long poll the client times out can race with the server handing messages out.
IDLE_MIN, IDLE_MAX = 0.01, 0.25
#: Deadline of the other calls.
CALL_TIMEOUT = 30.0
#: Local delayed-job entries are forgotten this long after they fell due.
FORGET_AFTER = 3600.0
#: Past this many local delayed-job entries, stale ones are pruned at once.
PRUNE_AT = 100_000


#: Raw protobuf classes: the proto-plus wrappers cost more than the rest of a job's handling.
RawMessage: Any = PubsubMessage.pb()
RawPublishRequest: Any = PublishRequest.pb()


class PubSubError(RRJobsError):
    """A Pub/Sub call failed."""


class PubSubJob(Job):
    """A pulled message; ``handle`` is its ack id, ``delivery_attempt`` Pub/Sub's
    delivery attempt (0 unless the subscription has a dead-letter policy)."""

    __slots__ = ("delivery_attempt",)
    delivery_attempt: int


#: Every pipeline's; ``reserved_per_consumer``: Pub/Sub has no counts, ``reserved`` is this
#: consumer's leases.
BASE_CAPABILITIES = Capabilities(durable=True, max_payload=MAX_PAYLOAD, lease_extension=True,
                                 redelivery_on_crash=True, delay_granularity=SECOND,
                                 shared_queue=True, reserved_per_consumer=True)


def capabilities_for(options: PubSubOptions) -> Capabilities:
    dead_letter = bool(options.dead_letter_topic)
    return replace(BASE_CAPABILITIES, dead_letter=dead_letter, dead_letter_read=dead_letter)


class PubSubDriver(LeasingDriver):
    """One pipeline on a Pub/Sub topic and its subscription (named after the pipeline).

    Every method runs on the event loop and never blocks it. ``push`` returns
    once Pub/Sub returned the message id. Safe to push and settle concurrently.
    A job's ``handle`` is its ack id.
    """

    name: ClassVar[str] = DRIVER_NAME
    capabilities = BASE_CAPABILITIES
    max_lease = MAX_ACK_DEADLINE
    lease_lost = ("its ack deadline passed, or it was given back to the broker (pause or "
                  "stop), which delivers it again")
    pause_wait = 5.0  # for a Pull in flight: cancelling it strands what the broker handed out

    def __init__(self, pipeline: Pipeline, queue: PriorityQueue, options: PubSubOptions,
                 section: PubSubSection) -> None:
        super().__init__(pipeline, queue, options.prefetch)
        self.section = section
        self.options = options
        self.clients: Clients | None = None
        self.capabilities = capabilities_for(options)
        self.topic = options.topic_path()
        self.subscription = options.subscription_path(self.pipeline_name)
        self.dead_letter_topic = options.dead_letter_path() if options.dead_letter_topic else ""
        self.ack_deadline = options.ack_deadline
        #: The subscription's native dead-letter policy's max_delivery_attempts (0: none).
        self.max_attempts = options.max_delivery_attempts or 0
        self._idle = IDLE_MIN
        self._pulled_at = 0.0
        #: the ``loop.time()`` the ack deadline of the latest pull ends
        self._lease_ends = 0.0
        self._prune_at = PRUNE_AT
        self._backlog = 0
        self._delayed: dict[str, float] = {}
        self._publisher: Batcher[tuple[str, Any], str] = Batcher(
            self._publish_many, BATCH_LIMIT, BATCH_CONCURRENCY)
        self._acker = self.settlement_batcher(self._ack_many, "acknowledging", BATCH_LIMIT,
                                              BATCH_CONCURRENCY)
        self._modacker = self.settlement_batcher(self._modack_many, "changing an ack deadline",
                                                 BATCH_LIMIT, BATCH_CONCURRENCY)

    # -- opening -------------------------------------------------------------------------

    async def open(self, where: str) -> None:
        """Connect, declare the topic(s) and the subscription, read its settings."""
        self.clients = await open_clients(self.section)
        self.ack_deadline, self.max_attempts = await _declare(
            self.clients, self.options, self.pipeline_name, where)

    @property
    def _clients(self) -> Clients:
        if self.clients is None:
            raise PipelineStateError(f"pipeline {self.pipeline_name!r} is stopped")
        return self.clients

    # -- pushing -----------------------------------------------------------------------------

    def _encode(self, msg: Message) -> Any:
        attrs = codec.attributes(msg.id, msg.name, msg.headers, msg.priority,
                                 whole_seconds(msg.delay), msg.auto_ack)
        return RawMessage(data=bytes(msg.payload), attributes=attrs)

    async def _send(self, msg: Message) -> None:
        # Counted first: the consumer may pull the job before the publish returns.
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
        failed = [(m, r) for m, r in zip(msgs, results, strict=True)
                  if isinstance(r, BaseException)]
        for m, _ in failed:
            self._uncount_pushed(m.id, m.delay)
        if failed:
            raise PubSubError(f"{len(failed)} of {len(msgs)} jobs were not published; first "
                              f"failure (job {failed[0][0].id}): {failed[0][1]}") from failed[0][1]

    def _count_pushed(self, job_id: str, delay: float) -> None:
        if delay > 0:
            self._remember_delayed(job_id, time.time() + whole_seconds(delay))
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
        publisher = self._clients.publisher
        out: list[str | BaseException] = []
        for chunk in chunks(items, BATCH_LIMIT, PUBLISH_BYTES, lambda item: len(item[1].data),
                            key=lambda item: item[0]):
            topic = chunk[0][0]
            try:
                request = PublishRequest.wrap(RawPublishRequest(
                    topic=topic, messages=[m for _, m in chunk]))
                response = await publisher.publish(request=request, timeout=CALL_TIMEOUT)
                out.extend(response.message_ids)
            except gexc.GoogleAPICallError as exc:
                out.extend([PubSubError(f"publish to {topic} failed: {exc}")] * len(chunk))
        return out

    # -- acks ---------------------------------------------------------------------------------

    async def _ack_many(self, ack_ids: Sequence[str]) -> list[BaseException | None]:
        subscriber = self._clients.subscriber
        return await self._by_ids(ack_ids, lambda ids: subscriber.acknowledge(
            subscription=self.subscription, ack_ids=ids, timeout=CALL_TIMEOUT))

    async def _modack_many(self, items: Sequence[tuple[str, int]]) -> list[BaseException | None]:
        subscriber = self._clients.subscriber
        out: list[BaseException | None] = [None] * len(items)
        for seconds in {s for _, s in items}:  # one request per deadline
            idx = [i for i, (_, s) in enumerate(items) if s == seconds]
            results = await self._by_ids([items[i][0] for i in idx], lambda ids, s=seconds: (
                subscriber.modify_ack_deadline(
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

    # -- consuming (the PullDriver template) --------------------------------------------------

    def queued_lease(self) -> float:
        """The ack deadline: the kit extends it for the jobs no handler has taken yet
        every third of it (:meth:`extend`, one ``ModifyAckDeadline`` per batch)."""
        return float(self.ack_deadline)

    async def _pull(self, max_messages: int) -> Any:
        """One ``Pull`` that returns at once (the raw ``PullResponse`` protobuf)."""
        return await pull_now(self._clients.subscriber, self.subscription, max_messages,
                              timeout=CALL_TIMEOUT)

    def fetch_want(self) -> int:
        """Pull as soon as one slot is free (a Pull returns at once)."""
        return 1

    async def fetch(self, max_messages: int) -> Sequence[Any]:
        with self.in_flight:
            response = await self._pull(min(max_messages, BATCH_LIMIT))
        received = response.received_messages
        if not self.lane.is_open:  # pulled while pausing: back at once
            for rm in received:
                if rm.message.attributes.get(RR_ID, "") not in self._delayed:
                    self._backlog += 1
                self._modacker.post((rm.ack_id, 0))
            return []
        if not received:
            await asyncio.sleep(self._idle)
            self._idle = min(self._idle * 2, IDLE_MAX)
            return []
        self._idle = IDLE_MIN
        self._pulled_at = time.time()
        self._lease_ends = asyncio.get_running_loop().time() + self.ack_deadline
        return cast(Sequence[Any], received)

    async def fetch_failed(self, exc: Exception) -> bool:
        """A subscription that is gone asks for a restart at once."""
        return not isinstance(exc, gexc.NotFound)

    def decode(self, raw: Any) -> Job | None:
        """The job of a pulled message, or None when it is parked (not due)."""
        m = raw.message
        attrs = dict(m.attributes)
        d = codec.decode(attrs, self.priority)
        if d.delay > 0:
            stamp = m.publish_time
            due = stamp.seconds + stamp.nanos / 1e9 + d.delay
            left = due - self._pulled_at
            if left > 0:
                self._park(raw, attrs, d.id, due, left)
                return None
        if self._delayed.pop(d.id, None) is None:
            self._backlog = max(0, self._backlog - 1)
        # auto_ack jobs too: until the worker pool acks them, pause/stop give them back.
        job = cast(PubSubJob, PubSubJob.make(
            self, raw.ack_id, d.id, d.name, m.data, d.headers, self.pipeline_name,
            d.priority, d.auto_ack, float(self.ack_deadline)))
        job.delivery_attempt = raw.delivery_attempt
        self.leases.hold(raw.ack_id, self._lease_ends)
        return job

    def poison(self, raw: Any, reason: str) -> Job | None:
        self._backlog = max(0, self._backlog - 1)
        job = self.poison_job(raw.ack_id, raw.message.data, reason,
                              lease=float(self.ack_deadline))
        self.leases.hold(raw.ack_id, self._lease_ends)
        return job

    def _park(self, rm: Any, attrs: dict[str, str], job_id: str, due: float,
              left: float) -> None:
        """A delayed message pulled early: its ack deadline is the time left (≤ 600 s);
        near a native dead-letter policy's limit, a copy is published instead."""
        self._remember_delayed(job_id, due)
        near_limit = self.max_attempts > 0 and rm.delivery_attempt >= self.max_attempts - 1
        if left <= MAX_ACK_DEADLINE or not near_limit:
            self._modacker.post((rm.ack_id, min(MAX_ACK_DEADLINE, math.ceil(left))))
            return
        copy = RawMessage(data=rm.message.data,
                          attributes={**attrs, RR_DELAY: str(math.ceil(left))})
        # a failed hop: the original comes back after its deadline
        self.spawn_hop(lambda: self._publisher.submit((self.topic, copy)),
                       lambda: self._acker.submit(rm.ack_id))

    # -- settling (the Settler protocol) --------------------------------------------------

    def queue_name(self, job: Job) -> str:
        return self.options.topic

    def _take(self, job: Job) -> None:
        """Forget the job (it is settled now) and free its slot."""
        self.check_held(job)
        self.leases.let_go(job.handle)
        self.settled(job)

    def ack_now(self, job: Job) -> None:
        """Queue the ack for this tick's ``Acknowledge`` request and return (Pub/Sub's
        acks are best effort); a failed request is logged and the broker redelivers
        those jobs. ``stop`` waits for every queued ack."""
        self._take(job)
        self._acker.post(job.handle)

    async def nack(self, job: Job, requeue: bool, delay: float) -> None:
        """Without requeue: to the ``dead_letter_topic`` (or dropped, logged), then
        acknowledged. With requeue: ``ModifyAckDeadline(delay)``, the broker
        redelivers then; a delay past 600 s publishes a delayed copy."""
        seconds = whole_seconds(delay)
        if not requeue or seconds > MAX_ACK_DEADLINE:
            await super().nack(job, requeue, delay)  # dead_letter, or requeue a copy
            return
        self._take(job)
        self._count_pushed(job.id, seconds)
        try:
            await self._modacker.submit((job.handle, seconds))
        except BaseException:
            self._uncount_pushed(job.id, seconds)
            raise

    async def dead_letter(self, job: Job) -> None:
        self._take(job)
        if self.dead_letter_topic:
            await self._publish_copy(job, self.dead_letter_topic, job.headers, 0)
        else:
            self.dropped(job, "dead_letter_topic")
        await self._acker.submit(job.handle)

    def dead_letter_store(self) -> DeadLetterStore | None:
        """The reader of the dead-letter topic's subscription (``rrjobs dlq``)."""
        if not self.dead_letter_topic or self.clients is None:
            return None
        return DeadLetterSubscription(self.clients.subscriber,
                                      self.options.dead_letter_subscription_path(),
                                      self.pipeline_name, self.priority)

    async def requeue(self, job: Job, headers: Headers, delay: float) -> None:
        """Publish a copy (``headers``, ``delay``), then acknowledge the original."""
        self._take(job)
        seconds = whole_seconds(delay)
        self._count_pushed(job.id, seconds)
        try:
            await self._publish_copy(job, self.topic, headers, seconds)
        except BaseException:
            self._uncount_pushed(job.id, seconds)
            self._backlog += 1
            raise
        await self._acker.submit(job.handle)

    async def _publish_copy(self, job: Job, topic: str, headers: Headers, seconds: int) -> None:
        """Publish a copy of ``job``; if that fails, the original goes back to the broker."""
        async def publish() -> None:
            attrs = codec.attributes(job.id, job.name, headers, job.priority, seconds,
                                     job.auto_ack)
            await self._publisher.submit((topic, RawMessage(data=job.payload, attributes=attrs)))
        await self.copy_or_give_back(publish(), lambda: self._modacker.post((job.handle, 0)))

    async def change_lease(self, job: Job, seconds: int) -> None:
        await self._modacker.submit((job.handle, seconds))

    # -- state and closing ------------------------------------------------------------------

    async def state(self) -> State:
        """Pub/Sub has no counts (only Cloud Monitoring has): ``active`` and
        ``delayed`` are this process's estimate; ``reserved`` is exact."""
        queued = self.queue.count(self.pipeline_name)
        now = time.time()
        self._prune_delayed(now)
        delayed = sum(1 for due in self._delayed.values() if due > now)
        due_now = len(self._delayed) - delayed
        return self.state_of(self.topic, self._backlog + due_now + queued + len(self.held),
                             delayed, max(0, len(self.leases) - queued - len(self.held)))

    async def _close(self) -> None:
        """Give every job still held back to the broker (``ModifyAckDeadline(0)``),
        send what is queued, close the clients."""
        self.held = []
        for handle in [h for h in self.leases if self.leases.holds(h)]:
            self._backlog += 1
            self._modacker.post((handle, 0))
        self.leases.clear()
        if self.clients is None:
            return
        try:
            await self._acker.drain()
            await self._modacker.drain()
            await self._publisher.drain()
        finally:
            clients, self.clients = self.clients, None
            await clients.close()


async def _declare(clients: Clients, options: PubSubOptions, pipeline: str, where: str
                   ) -> tuple[int, int]:
    """Create the missing topic(s) and subscriptions; return the subscription's ack
    deadline and max delivery attempts (0: none). An existing subscription is reused
    unchanged (options set explicitly that it does not match are a ConfigError)."""
    topics = [] if options.skip_topic_declaration else [options.topic_path()]
    if options.dead_letter_topic:
        topics.append(options.dead_letter_path())
    try:
        for topic in topics:
            with contextlib.suppress(gexc.AlreadyExists):
                await clients.publisher.create_topic(name=topic, timeout=CALL_TIMEOUT)
        if options.dead_letter_topic:
            # Messages published to a topic without a subscription are lost: keep
            # dead letters in a subscription named after the dead-letter topic.
            with contextlib.suppress(gexc.AlreadyExists):
                await clients.subscriber.create_subscription(
                    name=options.dead_letter_subscription_path(),
                    topic=options.dead_letter_path(), timeout=CALL_TIMEOUT)
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
    return int(sub.ack_deadline_seconds) or options.ack_deadline, _policy(sub)[1]


def _policy(sub: Subscription) -> tuple[str, int]:
    """The dead-letter topic and max delivery attempts of ``sub`` (``("", 0)``: none)."""
    policy = sub.dead_letter_policy if "dead_letter_policy" in sub else None
    topic = policy.dead_letter_topic if policy else ""
    return topic, int(policy.max_delivery_attempts) if policy and topic else 0


def _check_existing(sub: Subscription, request: Subscription, options: PubSubOptions,
                    where: str) -> None:
    """Refuse options set that an existing subscription does not have (never modified)."""
    given = options.model_fields_set
    if "ack_deadline" in given and sub.ack_deadline_seconds != options.ack_deadline:
        raise ConfigError(f"{where}.ack_deadline",
                          f"subscription {sub.name} exists with an ack deadline of "
                          f"{sub.ack_deadline_seconds} s, not {options.ack_deadline} s "
                          "(existing subscriptions are not modified)")
    if not given & {"dead_letter_topic", "max_delivery_attempts"}:
        return
    have_topic, have_attempts = _policy(sub)
    want_topic, want_attempts = _policy(request)
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


class PubSubConstructor(DriverConstructor):
    """Builds ``google_pub_sub`` drivers; as in RoadRunner, a pipeline needs the global
    ``google_pub_sub:`` section (without it, building one fails with a ConfigError)."""

    driver_class = PubSubDriver
    options_model = PubSubOptions
    section_model = PubSubSection
    section_required = True


__all__ = ["PubSubConstructor", "PubSubDriver", "PubSubError", "PubSubJob", "capabilities_for"]
