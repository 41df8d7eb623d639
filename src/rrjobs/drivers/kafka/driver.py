"""The ``kafka`` driver: RoadRunner's Kafka driver on aiokafka, with job semantics that hold.

Capabilities:

* Delays: yes, durable, any length: a delay topic and a forwarder (see
  :mod:`rrjobs.drivers.kafka.delays`). Available when the pipeline has a
  topic to derive the delay topic from (or ``delay_topic``) and that topic
  exists (or ``auto_create_topics_enable``).
* Priority: in the runtime's priority queue, within the prefetch window
  (Kafka itself is FIFO per partition).
* Durable: yes, unless ``required_acks: NoAck``.
* Dead-letter: with ``dead_letter_topic``; otherwise ``nack()`` drops the job
  explicitly (logged). The offset advances either way.
* Lease extension: no. Kafka has no per-record lease; a held job is only taken
  away by a rebalance (see below).
* Redelivery after a crash: with ``group_options`` (committed offsets);
  without a group, offsets live in the consumer only and a new consumer starts
  from ``consumer_offset``.
* Pause: yes, by pausing the assigned partitions; jobs already in the priority
  queue are taken back and kept, in order, for ``resume``.

Offsets: each delivered record is tracked per partition; only the
**contiguous settled prefix** is committed (every ``commit_interval``), so a
slow or failed job holds its partition's commit back and is never skipped.

Rebalance: when partitions are revoked, their jobs still in the priority queue
(or fetched and not queued) are abandoned at once; the jobs handlers hold are
waited for up to ``revoke_timeout``; then the settled prefix is committed, and
after that nothing more is committed for those partitions. A job settled after
it was abandoned raises :class:`~rrjobs.core.errors.AckLostError` (the new
owner gets the record again).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections import deque
from collections.abc import Sequence
from typing import Any, ClassVar

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from rrjobs.core.base import BaseDriver
from rrjobs.core.capabilities import Capabilities
from rrjobs.core.constructor import DriverConstructor
from rrjobs.core.errors import (
    AckLostError,
    ConfigError,
    PipelineStateError,
    RRJobsError,
    UnsupportedFeatureError,
)
from rrjobs.core.headers import RR_ORIGINAL_PIPELINE, Headers
from rrjobs.core.job import Job
from rrjobs.core.lane import Lane
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.state import State
from rrjobs.drivers.kafka import codec, failures
from rrjobs.drivers.kafka.client import (
    Commits,
    Listener,
    Producer,
    Record,
    connection_kwargs,
    ssl_context,
)
from rrjobs.drivers.kafka.config import KafkaOptions, KafkaSection, OffsetSpec
from rrjobs.drivers.kafka.delays import DelayForwarder, due_headers
from rrjobs.drivers.kafka.failures import RETRY_BACKOFF
from rrjobs.drivers.kafka.job import KafkaJob
from rrjobs.drivers.kafka.offsets import OffsetTracker

log = logging.getLogger("rrjobs.drivers.kafka")

#: Payload bytes kept free under ``max_message_bytes`` for the key, headers and
#: the record batch framing.
HEADER_RESERVE = 4096
#: Records asked for per fetch at most.
FETCH_MAX = 1000


class KafkaUnavailableError(RRJobsError):
    """The brokers could not be reached within ``kafka.ping.timeout``."""


class _Restarting(Exception):
    """Ends the fetch loop: the pipeline's restart was asked for."""


def capabilities_for(options: KafkaOptions, *, delay: bool) -> Capabilities:
    """What a pipeline with ``options`` can do (``delay``: its delay topic is usable)."""
    return Capabilities(
        delay=delay,
        max_delay=None,
        delay_native=True,
        delay_granularity=0.001,
        priority=True,
        durable=options.producer_options.required_acks != "NoAck",
        max_payload=options.producer_options.max_message_bytes - HEADER_RESERVE,
        lease_extension=False,
        dead_letter=bool(options.dead_letter_topic),
        redelivery_on_crash=options.group_options is not None,
        pause=True,
        headers=True,
    )


class KafkaDriver(BaseDriver):
    """One pipeline on Kafka topics.

    Every method runs on the event loop and never blocks it. ``push`` returns
    once the broker acknowledged the record (with ``required_acks``). Safe to
    push concurrently.
    """

    name: ClassVar[str] = "kafka"
    #: Partitions kept paused while ``assigned`` applies ``consumer_offset`` to them.
    _seeking: frozenset[Any] = frozenset()

    def __init__(self, pipeline: Pipeline, queue: PriorityQueue, options: KafkaOptions,
                 section: KafkaSection) -> None:
        super().__init__(pipeline, queue)
        self.priority = options.priority
        self.options = options
        self.section = section
        self.group = options.group_options
        self.lane = Lane(queue, self.pipeline_name, options.prefetch)
        self.topics = options.main_topics()
        self.topic = options.default_topic()
        self.delay_topic = options.resolved_delay_topic()
        self.dead_letter_topic = options.dead_letter_topic
        self.capabilities = capabilities_for(options, delay=bool(self.delay_topic))
        sasl = options.sasl_options or section.sasl
        self._conn = connection_kwargs(section, sasl, ssl_context(section))
        self.producer = Producer(options, self._conn)
        self.tracker: OffsetTracker[Any] = OffsetTracker()
        self.commits = Commits(self.tracker, f"pipeline {self.pipeline_name!r}",
                               self.group.commit_interval if self.group else 0.2,
                               options.error_timeout, self._fatal, log,
                               on_outage=self._commits_failing)
        self._outstanding: dict[tuple[Any, int], Job] = {}
        self._ready: deque[Job] = deque()
        self._mover: asyncio.Task[None] | None = None
        self._consumer: Any = None
        self._forwarder: DelayForwarder | None = None
        self._revoking = 0
        self._settled = asyncio.Event()
        self._inspector: _Inspector | None = None
        self._producer_started = False

    # -- opening ----------------------------------------------------------------------------

    async def open(self, where: str) -> None:
        """Reach the brokers within ``ping.timeout`` and check (or create) the topics.

        Raises :class:`KafkaUnavailableError` when the brokers do not answer,
        :class:`~rrjobs.core.errors.ConfigError` (at ``where``) for a missing topic.
        """
        timeout = self.section.ping.timeout or None
        try:
            async with asyncio.timeout(timeout):
                self._producer_started = True  # a half-started producer is stopped too
                await self.producer.start()
                await self._ensure_topics(where)
        except TimeoutError:
            raise KafkaUnavailableError(
                f"kafka: brokers {self.section.brokers} did not answer within ping.timeout "
                f"({timeout}s) for pipeline {self.pipeline_name!r}") from None
        except KafkaError as exc:
            raise KafkaUnavailableError(
                f"kafka: brokers {self.section.brokers}: {type(exc).__name__}: {exc}") from None

    async def _ensure_topics(self, where: str) -> None:
        client = self.producer.client
        wanted = list(self.topics)
        optional = [t for t in (self.delay_topic, self.dead_letter_topic) if t]
        if self.options.auto_create_topics_enable:
            for topic in [*wanted, *optional]:
                await client.partitions_for(topic)
            return
        metadata = await client.client.fetch_all_metadata()
        existing = set(metadata.topics())
        for topic in wanted:
            if topic not in existing:
                raise ConfigError(f"{where}.consumer_options.topics",
                                  f"topic {topic!r} does not exist (create it, or set "
                                  "auto_create_topics_enable: true)")
        if self.dead_letter_topic and self.dead_letter_topic not in existing:
            raise ConfigError(f"{where}.dead_letter_topic",
                              f"topic {self.dead_letter_topic!r} does not exist")
        if self.delay_topic and self.delay_topic not in existing:
            if self.options.delay_topic:
                raise ConfigError(f"{where}.delay_topic",
                                  f"topic {self.delay_topic!r} does not exist")
            log.info("pipeline %r: delay topic %r does not exist; delays are unavailable "
                     "(create it, or set auto_create_topics_enable: true)", self.pipeline_name,
                     self.delay_topic)
            self.delay_topic = ""
            self.capabilities = capabilities_for(self.options, delay=False)

    # -- pushing ----------------------------------------------------------------------------

    @functools.cached_property
    def _encoder(self) -> codec.RecordEncoder:
        """The pipeline's record encoder (its constant header values encoded once)."""
        return codec.RecordEncoder(self.pipeline_name)

    def _record(self, msg: Message) -> Record:
        """``msg`` as a record to produce: to ``Message.topic`` or the pipeline's
        first topic (``Message.partition`` with ``Manual`` partitioning), or to the
        delay topic with the due headers."""
        topic = msg.topic or self.topic
        if not topic:
            raise UnsupportedFeatureError(
                f"kafka pipeline {self.pipeline_name!r} has no topic: set Message.topic or "
                "consumer_options.topics")
        partition = msg.partition if self.producer.manual else None
        extra: Sequence[tuple[str, bytes]] = ()
        if msg.delay > 0:
            extra = due_headers(msg.delay, topic, partition)
            topic, partition = self.delay_topic, None
        key, value, headers = self._encoder.record(msg.id, msg.name, msg.payload, msg.priority,
                                                   msg.headers, msg.auto_ack, extra)
        return topic, partition, key, value, headers

    async def _send(self, msg: Message) -> None:
        topic, partition, key, value, headers = self._record(msg)
        await self.producer.send(topic, codec.Encoded(key, value, headers), partition)

    async def _send_batch(self, msgs: Sequence[Message]) -> None:
        """One ``push_batch``: record batches per partition (``Producer.send_records``);
        returns once the broker acknowledged every record. Nothing is sent when a
        message is refused (no topic, a record too large, an unknown partition).

        Each record is made as it is written into its batch and dropped at once
        (``map``, not a list): a thousand records alive together would outlive
        young-generation garbage collections and make full ones come sooner."""
        await self.producer.send_records(map(self._record, msgs))

    # -- consuming ----------------------------------------------------------------------------

    def _timings(self) -> dict[str, int]:
        if self.group is None:
            return {}
        return {"session_timeout_ms": int(self.group.session_timeout * 1000),
                "heartbeat_interval_ms": int(self.group.heartbeat_interval * 1000)}

    async def _start_consuming(self) -> None:
        if self._consumer is None:
            await self._start_consumer()
        self.lane.open()
        self.consuming = True
        if self._consumer is not None:
            # partitions that ``assigned`` is still positioning stay paused until it resumes them
            assignment = set(self._consumer.assignment()) - self._seeking
            if assignment:
                self._consumer.resume(*assignment)
        self._pump()

    async def _start_consumer(self) -> None:
        consumer_options = self.options.consumer_options
        if not (self.topics or consumer_options.consume_regexp):
            raise PipelineStateError(
                f"kafka pipeline {self.pipeline_name!r} has nothing to consume: set "
                "consumer_options.topics or consume_partitions")
        reset = "latest" if consumer_options.consumer_offset.type == "AtEnd" else "earliest"
        group = self.group
        consumer = AIOKafkaConsumer(
            group_id=group.group_id if group else None,
            group_instance_id=(group.instance_id or None) if group else None,
            enable_auto_commit=False,
            auto_offset_reset=reset,
            fetch_max_bytes=consumer_options.max_fetch_message_size,
            fetch_min_bytes=consumer_options.min_fetch_message_size,
            metadata_max_age_ms=max(1, round(consumer_options.metadata_max_age * 1000)),
            **self._timings(),
            **self._conn,
        )
        self._consumer = consumer
        await consumer.start()
        try:
            if consumer_options.consume_partitions:
                tps = {TopicPartition(t, p): spec
                       for t, parts in consumer_options.consume_partitions.items()
                       for p, spec in parts.items()}
                consumer.assign(list(tps))
                for tp, spec in tps.items():
                    self.tracker.assign(tp)
                    await self._seek(tp, spec)
            elif consumer_options.consume_regexp:
                consumer.subscribe(pattern=self._subscription_pattern(),
                                   listener=Listener(self))
            else:
                consumer.subscribe(list(self.topics), listener=Listener(self))
            self.supervisor.start("fetch", self._fetch)
            if group is not None:
                self.commits.consumer = consumer
                self.supervisor.start("commits", self.commits.loop)
            if self.delay_topic:
                self._forwarder = DelayForwarder(
                    topic=self.delay_topic, group_id=self._delay_group(), conn=self._conn,
                    producer=self.producer, group_timings=self._timings() or {},
                    commit_interval=self.commits.interval, supervisor=self.supervisor,
                    buffer=self.options.delay_buffer, error_timeout=self.options.error_timeout,
                    on_fatal=self._fatal)
                await self._forwarder.start()
        except BaseException:
            await self._shutdown_consumer()
            raise

    def _subscription_pattern(self) -> str:
        """``consume_regexp``'s pattern, never matching the driver's own topics: no delay
        topic (``*.rrjobs-delayed`` or ``delay_topic``: their records are not due yet) and
        not the dead-letter topic (its jobs were given up on)."""
        own = [r".*\.rrjobs-delayed"]
        own += [re.escape(t) for t in {self.delay_topic, self.options.delay_topic,
                                       self.dead_letter_topic} if t]
        wanted = topic_pattern(self.options.consumer_options.topics).pattern
        return "^(?!(?:" + "|".join(own) + ")$)" + wanted.removeprefix("^")

    def _delay_group(self) -> str:
        if self.group is not None:
            return f"{self.group.group_id}.rrjobs-delayed"
        return f"rrjobs-delayed.{self.delay_topic}"

    async def _seek(self, tp: Any, spec: OffsetSpec) -> None:
        """Move ``tp``'s position to ``spec``: its start or end, ``At`` an offset
        (clamped to the partition's current start and end), ``AfterMilli`` the first
        record with a timestamp at or after it (the end when there is none yet).

        Always an explicit ``seek`` to an offset asked for here: aiokafka's
        ``seek_to_end`` and ``seek_to_beginning`` can be answered by the reset to
        the default policy still in flight for a new partition. Network calls;
        raises :class:`KafkaError` when the broker cannot tell."""
        consumer = self._consumer
        offset: int | None = None
        if spec.type == "AfterMilli":
            hit = (await consumer.offsets_for_times({tp: spec.value})).get(tp)
            offset = None if hit is None else hit.offset
        elif spec.type == "AtStart":
            offset = (await consumer.beginning_offsets([tp]))[tp]
        elif spec.type == "At":
            start = (await consumer.beginning_offsets([tp]))[tp]
            offset = max(spec.value, start)
        if offset is None or spec.type in ("AtEnd", "At"):
            end = (await consumer.end_offsets([tp]))[tp]
            offset = end if offset is None else min(offset, end)
        consumer.seek(tp, offset)

    async def _fetch(self) -> None:
        """Fetch records into the ready deque while the lane has room.

        At the limit it waits for half the window to be free without fetching
        (aiokafka keeps what it prefetched); every second without room it polls with
        every partition paused, so that the group never sees the consumer idle
        (``max_poll_interval``). While the pipeline is paused its partitions are.

        A fatal client error ends it after asking the runtime for a restart
        (:meth:`_fetch_failed`); the other tasks run on until the driver stops.
        """
        consumer, lane = self._consumer, self.lane
        outage = failures.window(self.options.error_timeout)
        want = lane.prefetch - lane.prefetch // 2
        paused = False
        try:
            while True:
                assignment = consumer.assignment()
                if not lane.is_open:
                    if assignment:
                        consumer.pause(*assignment)
                    paused = True
                    self._accept(await self._poll_paused(consumer, outage))
                    continue
                if paused and assignment:
                    consumer.resume(*(assignment - self._seeking))
                paused = False
                room = lane.room()
                if room <= 0:
                    try:
                        async with asyncio.timeout(1.0):
                            await lane.wait_room(want)
                    except TimeoutError:
                        if assignment:
                            consumer.pause(*assignment)
                        paused = True
                        self._accept(await self._poll_paused(consumer, outage))
                    continue
                try:
                    batch = await consumer.getmany(timeout_ms=500, max_records=min(room, FETCH_MAX))
                except Exception as exc:
                    await self._fetch_failed("fetch", exc, outage)
                    continue
                if outage.failing:
                    self._recovered(outage)
                self._accept(batch)
        except _Restarting:
            return

    def _accept(self, batch: dict[Any, list[Any]]) -> None:
        """Track fetched records and hand them to the ready deque (and the queue).

        Empties ``batch``'s lists: the records (and their header tuples) are freed
        here instead of living on while the caller waits for the next fetch."""
        if not batch:
            return
        outstanding, ready, accept = self._outstanding, self._ready, self.accept
        taken = 0
        for tp, records in batch.items():
            if tp not in self.tracker:
                if self.group is not None:
                    continue  # not (or no longer) ours
                self.tracker.assign(tp)
            self.tracker.track_many(tp, [r.offset for r in records])
            for r in records:
                job = accept((tp, r))
                if job is not None:
                    outstanding[job.handle] = job
                    ready.append(job)
                    taken += 1
            records.clear()
        self.lane.take(taken)
        self._pump()

    def decode(self, raw: Any) -> Job:
        """The job of ``raw``, a ``(TopicPartition, record)`` pair."""
        tp, r = raw
        id, name, payload, headers, priority, auto_ack = codec.decode_fields(
            r.key, r.value, r.headers, self.priority)
        return KafkaJob.make(self, (tp, r.offset), id, name, payload, headers,
                             self.pipeline_name, priority, auto_ack)

    def poison(self, raw: Any, reason: str) -> Job:
        """A failed job for an unreadable record: the runtime dead-letters it."""
        tp, r = raw
        return self.poison_job((tp, r.offset), r.value or b"", reason)

    async def _poll_paused(self, consumer: Any, outage: Any) -> dict[Any, list[Any]]:
        """Poll with the partitions paused (keeps the group membership alive).

        Records can still come back (a partition resumed or newly assigned
        meanwhile): the caller accepts them like any other. Failures count as
        the fetch's (:meth:`_fetch_failed`)."""
        try:
            batch: dict[Any, list[Any]] = await consumer.getmany(timeout_ms=100,
                                                                  max_records=FETCH_MAX)
        except Exception as exc:
            await self._fetch_failed("poll", exc, outage)
            return {}
        if outage.failing:
            self._recovered(outage)
        return batch

    async def _fetch_failed(self, what: str, exc: Exception, outage: Any) -> None:
        """A fetch raised: log the outage once and wait before the next one; when it
        is fatal (:mod:`~rrjobs.drivers.kafka.failures`) ask the runtime for a restart
        and end the fetch loop with :class:`_Restarting`."""
        first = not outage.failing
        if failures.failed(outage, exc):
            if self._fatal(failures.describe(what, outage), exc):
                raise _Restarting from exc
            outage.ok()  # no runtime: keep fetching, and count again
        elif first:
            self.connected = False
            log.warning("pipeline %r: %s failed, will retry: %s: %s", self.pipeline_name, what,
                        type(exc).__name__, exc)
        await asyncio.sleep(RETRY_BACKOFF)

    def _recovered(self, outage: Any) -> None:
        outage.ok()
        if not self.connected:
            self.connected = True
            log.info("pipeline %r: fetching again", self.pipeline_name)

    def _commits_failing(self, failing: bool) -> None:
        self.connected = not failing

    def _fatal(self, what: str, exc: BaseException) -> bool:
        """A fatal client error: ask the runtime to restart the pipeline, which stops
        this driver (committing the settled prefix) and builds it again, consuming from
        the committed offsets. ``False`` when there is no runtime to ask (the caller
        carries on); returns at once."""
        if self.stopped:
            return True
        self.request_restart(f"{what}: {type(exc).__name__}: {exc}")
        return self.command_handler is not None

    def _pump(self) -> None:
        """Move ready jobs into the priority queue (a mover waits when it is full)."""
        if not self.consuming or self._mover is not None:
            return
        queue, ready = self.queue, self._ready
        insert, take = queue.insert_nowait, ready.popleft
        room = queue.maxsize - len(queue)
        for _ in range(min(room, len(ready))):
            insert(take())
        if ready:
            self._mover = self.supervisor.spawn("mover", self._move_when_room())

    async def _move_when_room(self) -> None:
        try:
            while self.consuming and self._ready:
                job = self._ready[0]
                await self.queue.insert(job)
                self._ready.popleft()
        finally:
            self._mover = None
        self._pump()

    async def _cancel_mover(self) -> None:
        mover, self._mover = self._mover, None
        if mover is not None and not mover.done():
            mover.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await mover

    # -- rebalance ------------------------------------------------------------------------------

    async def revoked(self, revoked: set[Any]) -> None:
        """Partitions are being taken away: abandon their queued jobs, wait for the
        held ones (``revoke_timeout``), commit their settled prefix, forget them."""
        revoked = {tp for tp in revoked if tp in self.tracker}
        if not revoked:
            return
        await self._cancel_mover()
        taken = self.queue.remove(self.pipeline_name)
        for job in taken:
            if job.handle[0] not in revoked:
                self.queue.insert_nowait(job)
        abandoned = [j for j in taken if j.handle[0] in revoked]
        abandoned += [j for j in self._ready if j.handle[0] in revoked]
        self._ready = deque(j for j in self._ready if j.handle[0] not in revoked)
        for job in abandoned:
            self._outstanding.pop(job.handle, None)
        self.lane.release(len(abandoned))
        loop = asyncio.get_running_loop()
        timeout = self.group.revoke_timeout if self.group else 0.0
        end = loop.time() + timeout
        self._revoking += 1
        try:
            while any(k[0] in revoked for k in self._outstanding):
                left = end - loop.time()
                if left <= 0:
                    break
                self._settled.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(left):
                        await self._settled.wait()
        finally:
            self._revoking -= 1
        try:
            await self.commits.commit(revoked)
        except KafkaError as exc:
            log.warning("pipeline %r: commit of revoked partitions failed: %s",
                        self.pipeline_name, exc)
        held = [k for k in self._outstanding if k[0] in revoked]
        for key in held:
            del self._outstanding[key]
        self.lane.release(len(held))
        if held or abandoned:
            log.info("pipeline %r: rebalance abandoned %d queued and %d held jobs of %s",
                     self.pipeline_name, len(abandoned), len(held), sorted(map(str, revoked)))
        self.tracker.revoke(revoked)
        self._pump()

    async def assigned(self, assigned: set[Any]) -> None:
        """Partitions were given to this consumer; apply ``consumer_offset`` where the
        group has no committed offset (for ``At`` and ``AfterMilli``; ``AtStart`` and
        ``AtEnd`` are the consumer's reset policy).

        When the broker cannot say (after three tries) whether an offset is committed
        or where ``consumer_offset`` is, the partition is left to the committed offset
        or, without one, to its start: jobs may come again, none is skipped."""
        spec = self.options.consumer_options.consumer_offset
        consumer = self._consumer
        for tp in assigned:
            self.tracker.assign(tp)
        if not self.lane.is_open and assigned:
            consumer.pause(*assigned)
        if spec.type not in ("At", "AfterMilli") or not assigned:
            return
        # aiokafka fetches from the reset position meanwhile: paused, nothing fetched
        # before the seek is delivered (the fetch loop does not resume them either).
        self._seeking = self._seeking | assigned
        consumer.pause(*assigned)
        try:
            for tp in assigned:
                await self._seek_uncommitted(tp, spec)
        finally:
            self._seeking = self._seeking - assigned
            if self.lane.is_open:
                consumer.resume(*(assigned & consumer.assignment()))

    async def _seek_uncommitted(self, tp: Any, spec: OffsetSpec) -> None:
        """Seek ``tp`` to ``spec`` unless the group has an offset committed for it."""
        for attempt in range(3):
            try:
                if await self._consumer.committed(tp) is None:
                    await self._seek(tp, spec)
                return
            except KafkaError as exc:
                if attempt == 2:
                    log.warning("pipeline %r: %s: consumer_offset %s not applied (%s); "
                                "consuming from the partition's committed offset or start",
                                self.pipeline_name, tp, spec.type, exc)
                else:
                    await asyncio.sleep(RETRY_BACKOFF)

    # -- settlement (the Settler of the pipeline's jobs) ------------------------------------------

    def queue_name(self, job: Job) -> str:
        return job.handle[0].topic  # type: ignore[no-any-return]

    def _check(self, job: Job) -> None:
        if self.stopped:
            raise PipelineStateError(
                f"pipeline {self.pipeline_name!r} is stopped: job {job.id} was not settled "
                "and will be delivered again from its uncommitted offset")
        if self._outstanding.get(job.handle) is not job:
            tp = job.handle[0]
            raise AckLostError(
                f"job {job.id}: partition {tp.topic}[{tp.partition}] was revoked by a "
                "rebalance; another consumer delivers the record again")

    def _finish(self, job: Job) -> None:
        if self._outstanding.get(job.handle) is job:
            self._done(job)

    def _done(self, job: Job) -> None:
        """Settle ``job``, which ``_outstanding`` holds under its handle."""
        key = job.handle
        del self._outstanding[key]
        self.commits.settle(*key)
        if self._revoking:
            self._settled.set()
        self.lane.release()

    def ack_now(self, job: Job) -> None:
        """``ack``: the record is done (committed with its partition's settled prefix)."""
        if self.stopped or self._outstanding.get(job.handle) is not job:
            self._check(job)  # raises
        self._done(job)

    async def ack(self, job: Job) -> None:
        self.ack_now(job)

    async def nack(self, job: Job, requeue: bool, delay: float) -> None:
        """``requeue=False``: to the dead-letter topic when configured, else dropped;
        then done. ``requeue=True``: a copy (:meth:`requeue`)."""
        if requeue:
            await self.requeue(job, job.headers, delay)
            return
        self._check(job)
        if self.dead_letter_topic:
            headers = dict(job.headers)
            headers[RR_ORIGINAL_PIPELINE] = [self.pipeline_name]
            rec = codec.Encoded(*self._encoder.record(job.id, job.name, job.payload,
                                                      job.priority, headers, job.auto_ack))
            await self.producer.send(self.dead_letter_topic, rec)
        else:
            log.info("pipeline %r: job %s (%s) nacked without requeue: dropped (no "
                     "dead_letter_topic)", self.pipeline_name, job.id, job.name)
        self._finish(job)

    async def requeue(self, job: Job, headers: Headers, delay: float) -> None:
        """Produce a copy (to the delay topic after ``delay``), then the original is
        done. If the broker refuses the copy the original is delivered again here and
        the error is raised."""
        self._check(job)
        tp = job.handle[0]
        extra: Sequence[tuple[str, bytes]] = ()
        topic: str = tp.topic
        partition: int | None = tp.partition
        if delay > 0:
            extra = due_headers(delay, topic, partition)
            topic, partition = self.delay_topic, None
        rec = codec.Encoded(*self._encoder.record(job.id, job.name, job.payload, job.priority,
                                                  headers, job.auto_ack, extra))
        try:
            await self.producer.send(topic, rec, partition)
        except BaseException:
            self._redeliver(job)
            raise
        self._finish(job)

    def _redeliver(self, job: Job) -> None:
        key = job.handle
        if self.stopped or self._outstanding.get(key) is not job:
            return
        again = KafkaJob.make(self, key, job.id, job.name, job.payload, job.headers,
                              job.pipeline, job.priority, job.auto_ack)
        again.failure = job.failure
        self._outstanding[key] = again
        self._ready.appendleft(again)
        self._pump()

    # -- lifecycle --------------------------------------------------------------------------------

    async def _stop_consuming(self) -> None:
        self.consuming = False
        await self._cancel_mover()
        if self._consumer is not None:
            assignment = self._consumer.assignment()
            if assignment:
                self._consumer.pause(*assignment)
        taken = self.lane.close()
        self.lane.take(len(taken))  # still held, kept for resume
        self._ready.extendleft(reversed(taken))

    async def _shutdown_consumer(self) -> None:
        for name in ("fetch", "commits"):
            await self.supervisor.stop_task(name)
        if self._forwarder is not None:
            await self._forwarder.stop()
            self._forwarder = None
        if self._consumer is not None:
            try:
                await self.commits.commit()
            except Exception as exc:
                log.warning("pipeline %r: final commit failed: %s", self.pipeline_name, exc)
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            self._consumer = self.commits.consumer = None

    async def _close_producer(self) -> None:
        if self._producer_started:
            self._producer_started = False
            with contextlib.suppress(Exception):
                await self.producer.stop()

    async def _close(self) -> None:
        await self._cancel_mover()
        unsettled = len(self._outstanding)
        await self._shutdown_consumer()
        self._outstanding.clear()
        self._ready.clear()
        if unsettled:
            log.info("pipeline %r stopped with %d unsettled jobs; they are delivered again "
                     "from their uncommitted offsets", self.pipeline_name, unsettled)
        if self._inspector is not None:
            await self._inspector.close()
            self._inspector = None
        await self._close_producer()

    # -- state ------------------------------------------------------------------------------------

    async def state(self) -> State:
        queued = self.queue.count(self.pipeline_name)
        reserved = max(0, len(self._outstanding) - queued - len(self._ready))
        active = delayed = 0
        if not self.stopped:
            try:
                if self._inspector is None:
                    self._inspector = _Inspector(self._conn, self.producer)
                    await self._inspector.start()
                lag = await self._inspector.lag(self._main_topics(), self._group_id(),
                                                self.tracker, self._from_end())
                active = max(0, lag - reserved - self.tracker.settled_ahead())
                if self.delay_topic:
                    tracker = self._forwarder.tracker if self._forwarder else None
                    delay_lag = await self._inspector.lag([self.delay_topic],
                                                          self._delay_group(), tracker, False)
                    delayed = max(0, delay_lag - (tracker.settled_ahead() if tracker else 0))
            except (KafkaError, OSError) as exc:
                log.debug("pipeline %r: state: %s", self.pipeline_name, exc)
                active = queued + len(self._ready)
        return State(
            pipeline=self.pipeline_name,
            driver=self.name,
            queue=",".join(self._main_topics()) or self.topic,
            active=active,
            delayed=delayed,
            reserved=reserved,
            ready=self.ready,
            priority=self.priority,
        )

    def _main_topics(self) -> list[str]:
        if self.options.consumer_options.consume_regexp and self._consumer is not None:
            return sorted(self._consumer.subscription())
        return list(self.topics)

    def _group_id(self) -> str | None:
        return self.group.group_id if self.group is not None else None

    def _from_end(self) -> bool:
        return self.options.consumer_options.consumer_offset.type == "AtEnd"


class _Inspector:
    """A group-less consumer (offsets) and an admin client (committed offsets) for ``state``."""

    def __init__(self, conn: dict[str, Any], producer: Producer) -> None:
        self.producer = producer
        self.consumer = AIOKafkaConsumer(enable_auto_commit=False, **conn)
        self.admin = AIOKafkaAdminClient(**conn)

    async def start(self) -> None:
        await self.consumer.start()
        await self.admin.start()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.consumer.stop()
        with contextlib.suppress(Exception):
            await self.admin.close()

    async def lag(self, topics: Sequence[str], group: str | None,
                  tracker: OffsetTracker[Any] | None, from_end: bool) -> int:
        """Records not yet settled: per partition, from this consumer's commit point
        (owned), else the group's committed offset, else the reset position."""
        if not topics:
            return 0
        cluster = await self.producer.client.client.fetch_all_metadata()
        tps = [TopicPartition(t, p) for t in topics
               for p in sorted(cluster.partitions_for_topic(t) or ())]
        if not tps:
            return 0
        ends = await self.consumer.end_offsets(tps)
        committed: dict[Any, Any] = {}
        if group is not None:
            committed = await self.admin.list_consumer_group_offsets(group, partitions=tps)
        starts: dict[Any, int] = {}
        total = 0
        for tp in tps:
            base: int | None = None
            part = tracker.get(tp) if tracker is not None else None
            if part is not None and part.commit_point is not None:
                base = part.commit_point
            elif tp in committed and committed[tp].offset >= 0:
                base = committed[tp].offset
            if base is None:
                if not starts:
                    starts = ends if from_end else await self.consumer.beginning_offsets(tps)
                base = starts[tp]
            total += max(0, ends[tp] - base)
        return total


class KafkaConstructor(DriverConstructor):
    """Builds ``kafka`` drivers. Registered as the ``kafka`` entry point.

    Reads the global ``kafka:`` section once; a bad value fails with its key path.
    """

    name: ClassVar[str] = "kafka"
    driver_class = KafkaDriver
    options_model = KafkaOptions
    section_key = "kafka"
    section_model = KafkaSection


def topic_pattern(patterns: Sequence[str]) -> re.Pattern[str]:
    """The one regular expression aiokafka subscribes with for ``consume_regexp``."""
    return re.compile("^(?:" + "|".join(f"(?:{p})" for p in patterns) + ")$")
