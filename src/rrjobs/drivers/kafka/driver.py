"""The ``kafka`` driver: RoadRunner's Kafka driver on aiokafka, with job semantics that hold
(capabilities, offsets, rebalances, pause and restarts: docs/drivers/kafka.md)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import time
from collections.abc import Sequence
from typing import Any, ClassVar

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]
from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]
from aiokafka.conn import create_conn  # type: ignore[import-untyped]
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
from rrjobs.core.feed import Feed
from rrjobs.core.headers import Headers
from rrjobs.core.job import Job
from rrjobs.core.lane import Lane
from rrjobs.core.message import Message
from rrjobs.core.outage import Attempts
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.secrets import scrub
from rrjobs.core.state import State
from rrjobs.core.tls import client_ssl_context
from rrjobs.drivers.kafka import client, codec
from rrjobs.drivers.kafka.client import RETRY_BACKOFF, Commits, Listener, Producer, fatal_error
from rrjobs.drivers.kafka.config import KafkaOptions, KafkaSection, OffsetSpec
from rrjobs.drivers.kafka.deadletters import DeadLetterTopic
from rrjobs.drivers.kafka.delays import DelayForwarder, due_headers
from rrjobs.drivers.kafka.offsets import OffsetTracker

#: Payload bytes kept free under ``max_message_bytes`` for the key, headers and framing.
HEADER_RESERVE = 4096
#: Records asked for per fetch at most.
FETCH_MAX = 1000
#: Seconds without records between two metadata probes (while failing: between retries),
#: and how long one probe may take.
PROBE_INTERVAL, PROBE_FAILING, PROBE_TIMEOUT = 5.0, RETRY_BACKOFF, 2.0
#: Seconds each of a stop's four broker calls may take in an outage (two commits, two
#: leave-groups: within a ``jobs.timeout`` of 10 s).
STOP_WAIT = 1.5
#: Seconds the diagnostic connection to the first broker gets after a failed bootstrap.
FIRST_BROKER_TIMEOUT = 5.0


class KafkaUnavailableError(RRJobsError):
    """The brokers could not be reached within ``kafka.ping.timeout``."""


def capabilities_for(options: KafkaOptions, *, delay: bool) -> Capabilities:
    """What a pipeline with ``options`` can do (``delay``: its delay topic is usable).
    Consumers share the jobs only in a consumer group (without one each reads every
    partition); ``reserved`` is what this consumer holds."""
    p, dead_letter = options.producer_options, bool(options.dead_letter_topic)
    grouped = options.group_options is not None
    return Capabilities(delay=delay, delay_granularity=0.001, durable=p.required_acks != "NoAck",
                        max_payload=p.max_message_bytes - HEADER_RESERVE, dead_letter=dead_letter,
                        dead_letter_read=dead_letter, redelivery_on_crash=grouped,
                        shared_queue=grouped, reserved_per_consumer=True)


class KafkaJob(Job):
    """A record delivered from a topic partition: ``handle`` is ``(TopicPartition, offset)``."""

    __slots__ = ()

    @property
    def topic(self) -> str:
        return self.handle[0].topic  # type: ignore[no-any-return]

    @property
    def partition(self) -> int:
        return self.handle[0].partition  # type: ignore[no-any-return]

    @property
    def offset(self) -> int:
        return self.handle[1]  # type: ignore[no-any-return]

    def context(self, **extra: Any) -> bytes:
        """RoadRunner's context JSON plus ``topic``, ``partition``, ``offset`` (as RoadRunner)."""
        return super().context(topic=self.topic, partition=self.partition, offset=self.offset)


class KafkaDriver(BaseDriver):
    """One pipeline on Kafka topics. Never blocks the loop; ``push`` (concurrency-safe)
    returns once the broker acknowledged the record (``required_acks``)."""

    name: ClassVar[str] = "kafka"
    #: Partitions kept paused while ``assigned`` applies ``consumer_offset`` to them.
    _seeking: frozenset[Any] = frozenset()

    @classmethod
    def declared(cls, options: KafkaOptions) -> Capabilities:
        return capabilities_for(options, delay=bool(options.resolved_delay_topic()))

    def __init__(self, pipeline: Pipeline, queue: PriorityQueue, options: KafkaOptions,
                 section: KafkaSection) -> None:
        super().__init__(pipeline, queue)
        self.priority = options.priority
        self.options = options
        self.section = section
        self.group = group = options.group_options
        self._timings = {} if group is None else {  # the consumer group's, for each consumer
            "session_timeout_ms": int(group.session_timeout * 1000),
            "heartbeat_interval_ms": int(group.heartbeat_interval * 1000)}
        self.lane = Lane(queue, self.pipeline_name, options.prefetch)
        self.topics = options.main_topics()
        self.topic = options.default_topic()
        self.delay_topic = options.resolved_delay_topic()
        self.forwarded_from = f"delay topic {self.delay_topic!r}"
        self.dead_letter_topic = options.dead_letter_topic
        self.capabilities = capabilities_for(options, delay=bool(self.delay_topic))
        tls = client_ssl_context(section.tls) if section.tls else None  # reads files
        self._conn = client.connection_kwargs(section, options.sasl_options or section.sasl, tls)
        self.producer = Producer(options, self._conn)
        self.tracker: OffsetTracker[Any] = OffsetTracker()
        self.commits = Commits(self.tracker, self.group.commit_interval if self.group else 0.2,
                               options.error_timeout, self._fatal, self.outage)
        self._outstanding: dict[tuple[Any, int], Job] = {}
        #: fetched jobs (counted out when fetched) waiting for room in the priority queue
        self.feed = Feed(self.lane, self.supervisor, counted=True)
        self._consumer: Any = None
        self._forwarder: DelayForwarder | None = None
        self._settled = asyncio.Event()
        self._inspector: _Inspector | None = None
        self._producer_started = False
        self._probed = 0.0
        limit = options.error_timeout
        self.outage.retry = (f"retrying every {RETRY_BACKOFF:g} s, " + (
            f"the pipeline is restarted after error_timeout={limit:g}s" if limit > 0
            else "for as long as it takes (error_timeout: 0)"))
        self.dead_letters = (DeadLetterTopic(self._conn, self.dead_letter_topic,
                                             self.pipeline_name, self.priority)
                             if self.dead_letter_topic else None)

    async def open(self, where: str) -> None:
        """Reach the brokers within ``ping.timeout`` (else :class:`KafkaUnavailableError`)
        and check or create the topics (:class:`~rrjobs.core.errors.ConfigError` at ``where``)."""
        timeout = self.section.ping.timeout or None
        try:
            async with asyncio.timeout(timeout):
                self._producer_started = True  # a half-started producer is stopped too
                await self.producer.client.start()
                await self._ensure_topics(where)
        except TimeoutError:
            raise KafkaUnavailableError(
                f"kafka: brokers {self.section.brokers} did not answer within ping.timeout "
                f"({timeout}s) for pipeline {self.pipeline_name!r}") from None
        except KafkaError as exc:
            raise KafkaUnavailableError(scrub(
                f"kafka: brokers {self.section.brokers}: {type(exc).__name__}: {exc}"
                f"{await self._first_broker_failure()}")) from None

    async def _first_broker_failure(self) -> str:
        """Why one connection to the first broker fails (a certificate that does not
        verify, a refused SASL login): aiokafka's bootstrap error only says "unable to
        bootstrap" and logs the cause."""
        host, _, port = self.section.brokers[0].rpartition(":")
        conn_kwargs = {k: v for k, v in self._conn.items() if k != "bootstrap_servers"}
        try:
            async with asyncio.timeout(FIRST_BROKER_TIMEOUT):
                conn = await create_conn(host.strip("[]"), int(port), **conn_kwargs)
        except Exception as exc:
            return f" (first broker: {type(exc).__name__}: {exc})"
        conn.close()
        return ""

    async def _ensure_topics(self, where: str) -> None:
        producer = self.producer.client
        if self.options.auto_create_topics_enable:
            for topic in filter(None, [*self.topics, self.delay_topic, self.dead_letter_topic]):
                await producer.partitions_for(topic)
            return
        existing = set((await producer.client.fetch_all_metadata()).topics())
        for topic in self.topics:
            if topic not in existing:
                raise ConfigError(f"{where}.consumer_options.topics",
                                  f"topic {topic!r} does not exist (create it, or set "
                                  "auto_create_topics_enable: true)")
        for key, topic in (("dead_letter_topic", self.dead_letter_topic),
                           ("delay_topic", self.options.delay_topic)):
            if topic and topic not in existing:
                raise ConfigError(f"{where}.{key}", f"topic {topic!r} does not exist")
        if self.delay_topic and self.delay_topic not in existing:  # the derived one
            self.log.info("pipeline %r: delay topic %r does not exist; delays are unavailable "
                          "(create it, or set auto_create_topics_enable: true)", self.pipeline_name,
                          self.delay_topic)
            self.delay_topic = ""
            self.capabilities = capabilities_for(self.options, delay=False)

    @functools.cached_property
    def _encoder(self) -> codec.RecordEncoder:
        return codec.RecordEncoder(self.pipeline_name)

    def _record(self, msg: Message) -> codec.Record:
        """``msg``'s record: to ``Message.topic`` or the first topic (``Message.partition``
        with ``Manual`` partitioning), or to the delay topic with the due headers."""
        topic = msg.topic or self.topic
        if not topic:
            raise UnsupportedFeatureError(
                f"kafka pipeline {self.pipeline_name!r} has no topic: set Message.topic or "
                "consumer_options.topics")
        return self._job_record(msg, msg.headers, *self._route(
            topic, msg.partition if self.producer.manual else None, msg.delay))

    def _route(self, topic: str, partition: int | None,
               delay: float) -> tuple[str, int | None, Sequence[tuple[str, bytes]]]:
        """``topic``, or after ``delay`` the delay topic with the due headers."""
        if delay > 0:
            return self.delay_topic, None, due_headers(delay, topic, partition)
        return topic, partition, ()

    def _job_record(self, job: Job | Message, headers: Headers, topic: str,
                    partition: int | None = None,
                    extra: Sequence[tuple[str, bytes]] = ()) -> codec.Record:
        return (topic, partition, *self._encoder.record(job.id, job.name, job.payload,
                                                        job.priority, headers, job.auto_ack, extra))

    async def _send(self, msg: Message) -> None:
        await self.producer.send(self._record(msg))

    async def _send_batch(self, msgs: Sequence[Message]) -> None:
        # records made one at a time (``map``): a thousand alive at once outlive young-gen GCs
        await self.producer.send_records(map(self._record, msgs))

    async def _start_consuming(self) -> None:
        if self._consumer is None:
            await self._start_consumer()
        self.feed.open()
        # partitions that ``assigned`` is still positioning stay paused until it resumes them
        self._consumer.resume(*(set(self._consumer.assignment()) - self._seeking))

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
            enable_auto_commit=False, auto_offset_reset=reset,
            fetch_max_bytes=consumer_options.max_fetch_message_size,
            fetch_min_bytes=consumer_options.min_fetch_message_size,
            metadata_max_age_ms=max(1, round(consumer_options.metadata_max_age * 1000)),
            **self._timings, **self._conn)
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
                consumer.subscribe(pattern=self._subscription_pattern(), listener=Listener(self))
            else:
                consumer.subscribe(list(self.topics), listener=Listener(self))
            self.supervisor.start("fetch", self._fetch)
            if group is not None:
                self.commits.consumer = consumer
                self.supervisor.start("commits", self.commits.loop)
        except BaseException:
            await self._shutdown_consumer()
            raise

    async def _serve(self) -> None:  # forwarded by one member of the delay group
        if self.delay_topic:
            self._forwarder = DelayForwarder(
                topic=self.delay_topic, group_id=self._delay_group(), conn=self._conn,
                producer=self.producer, group_timings=self._timings,
                commit_interval=self.commits.interval, supervisor=self.supervisor,
                outage=self.outage, on_fatal=self._fatal, buffer=self.options.delay_buffer,
                error_timeout=self.options.error_timeout)
            await self._forwarder.start()

    def _subscription_pattern(self) -> str:
        """``consume_regexp``'s pattern, never matching a delay topic (``*.rrjobs-delayed``,
        ``delay_topic``: not due yet) or the dead-letter topic (given up on)."""
        own = [r".*\.rrjobs-delayed"]
        own += [re.escape(t) for t in {self.delay_topic, self.options.delay_topic,
                                       self.dead_letter_topic} if t]
        wanted = "|".join(f"(?:{p})" for p in self.options.consumer_options.topics)
        return "^(?!(?:" + "|".join(own) + ")$)(?:" + wanted + ")$"

    def _delay_group(self) -> str:
        return (f"{self.group.group_id}.rrjobs-delayed" if self.group is not None
                else f"rrjobs-delayed.{self.delay_topic}")

    async def _seek(self, tp: Any, spec: OffsetSpec) -> None:
        """Seek ``tp`` to ``spec`` (``At`` clamped to the partition, ``AfterMilli`` else its
        end), to an explicit offset: aiokafka's ``seek_to_end``/``seek_to_beginning`` can be
        answered by a reset in flight. Raises :class:`KafkaError` when the broker cannot tell."""
        consumer = self._consumer
        offset: int | None = None
        if spec.type == "AfterMilli":
            hit = (await consumer.offsets_for_times({tp: spec.value})).get(tp)
            offset = None if hit is None else hit.offset
        elif spec.type in ("AtStart", "At"):
            start = (await consumer.beginning_offsets([tp]))[tp]
            offset = max(spec.value, start) if spec.type == "At" else start
        if offset is None or spec.type in ("AtEnd", "At"):
            end = (await consumer.end_offsets([tp]))[tp]
            offset = end if offset is None else min(offset, end)
        consumer.seek(tp, offset)

    async def _fetch(self) -> None:
        """Fetch into the ready deque while the lane has room, else poll with the partitions
        paused (the group never sees the consumer idle); ends when a restart was asked for."""
        consumer, lane = self._consumer, self.lane
        calls = Attempts(self.outage, "fetch", self.options.error_timeout, self._fatal,
                         fatal_error, RETRY_BACKOFF)
        want = lane.prefetch - lane.prefetch // 2
        while True:
            assignment = consumer.assignment()
            room = lane.room()
            if lane.is_open and room <= 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await lane.wait_room(want)
                        continue
            if room <= 0:  # paused, or no room for a second: the group sees a live consumer
                consumer.pause(*assignment)
                what, timeout_ms, room = "poll", 100, FETCH_MAX
            else:  # partitions ``assigned`` is still positioning stay paused
                consumer.resume(*(assignment - self._seeking))
                what, timeout_ms = "fetch", 500
            work = consumer.getmany(timeout_ms=timeout_ms, max_records=min(room, FETCH_MAX))
            batch = await calls.attempt(work, what, {}, f"{what}ing")
            if batch is None:
                return  # a fatal error asked for a restart (without a runtime: fetching goes on)
            if batch:
                self._probed = time.monotonic()
                self.outage.ok(source="probe")
            elif time.monotonic() - self._probed > (PROBE_FAILING if self.outage.sources
                                                     else PROBE_INTERVAL):
                await self._probe()
            self._accept(batch)

    async def _probe(self) -> None:
        """Ask the brokers for metadata: aiokafka's fetch returns nothing, and does not
        raise, while they are away; this tells the outage (and ``ready``) that they are."""
        self._probed = time.monotonic()
        try:
            async with asyncio.timeout(PROBE_TIMEOUT):
                await self._consumer.topics()
        except (KafkaError, OSError, TimeoutError) as exc:
            self.outage.down(exc if str(exc) else TimeoutError("no answer"),
                             call="reaching the brokers", source="probe")
        else:
            self.outage.ok(source="probe")

    def _accept(self, batch: dict[Any, list[Any]]) -> None:
        """Track fetched records and hand their jobs to the ready deque (and the queue);
        empties ``batch``'s lists so that the records are freed at once."""
        if not batch:
            return
        outstanding, ready, accept = self._outstanding, self.feed.ready, self.accept
        taken = 0
        for tp, records in batch.items():
            if tp not in self.tracker and self.group is not None:
                continue  # not (or no longer) ours
            self.tracker.track_many(tp, [r.offset for r in records])  # assigns it if needed
            for r in records:
                job = accept((tp, r))
                if job is not None:
                    outstanding[job.handle] = job
                    ready.append(job)
                    taken += 1
            records.clear()
        self.lane.take(taken)
        self.feed.pump()

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

    def _fatal(self, what: str, exc: BaseException) -> bool:
        """Ask the runtime for a restart; ``False``: there is none (the caller carries on)."""
        if self.stopped:
            return True
        self.request_restart(scrub(f"{what}: {type(exc).__name__}: {exc}"))
        return self.command_handler is not None

    async def revoked(self, revoked: set[Any]) -> None:
        """Abandon revoked partitions' queued jobs, wait for held ones, commit, forget them."""
        revoked = {tp for tp in revoked if tp in self.tracker}
        if not revoked:
            return
        abandoned = await self.feed.take_back(lambda j: j.handle[0] in revoked)
        for job in abandoned:
            self._outstanding.pop(job.handle, None)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.group.revoke_timeout if self.group else 0.0):
                while any(k[0] in revoked for k in self._outstanding):
                    self._settled.clear()
                    await self._settled.wait()  # set by every settlement
        try:
            await self.commits.commit(revoked)
        except KafkaError as exc:
            self.log.log(logging.DEBUG if self.outage.quiet() else logging.WARNING,
                         "pipeline %r: commit of revoked partitions failed: %s",
                         self.pipeline_name, exc)
        held = [k for k in self._outstanding if k[0] in revoked]
        for key in held:
            del self._outstanding[key]
        self.lane.release(len(held))
        if held or abandoned:  # in an outage, a consequence of it: the outage says it
            self.log.log(logging.DEBUG if self.outage.quiet() else logging.INFO,
                         "pipeline %r: rebalance abandoned %d queued and %d held jobs of %s",
                         self.pipeline_name, len(abandoned), len(held), sorted(map(str, revoked)))
        self.tracker.revoke(revoked)
        self.feed.pump()

    async def assigned(self, assigned: set[Any]) -> None:
        """Apply ``consumer_offset`` (``At``, ``AfterMilli``; the others are the reset
        policy) to new partitions without a committed offset. When the broker cannot
        tell (three tries), the partition starts from its committed offset or start."""
        spec = self.options.consumer_options.consumer_offset
        consumer = self._consumer
        for tp in assigned:
            self.tracker.assign(tp)
        if not self.lane.is_open and assigned:
            consumer.pause(*assigned)
        if spec.type not in ("At", "AfterMilli") or not assigned:
            return
        # paused: nothing fetched from the reset position before the seek is delivered
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
                    self.log.warning("pipeline %r: %s: consumer_offset %s not applied (%s); "
                                     "consuming from the partition's committed offset or start",
                                     self.pipeline_name, tp, spec.type, exc)
                else:
                    await asyncio.sleep(RETRY_BACKOFF)

    def queue_name(self, job: Job) -> str:
        return job.handle[0].topic  # type: ignore[no-any-return]

    def _check(self, job: Job) -> None:
        self.check_not_stopped(job)  # from its uncommitted offset
        if self._outstanding.get(job.handle) is not job:
            tp = job.handle[0]
            raise AckLostError(
                f"job {job.id}: partition {tp.topic}[{tp.partition}] was revoked by a "
                "rebalance; another consumer delivers the record again")

    def _finish(self, job: Job) -> None:
        """Settle ``job`` if ``_outstanding`` still holds it under its handle."""
        key = job.handle
        if self._outstanding.get(key) is job:
            del self._outstanding[key]
            self.commits.settle(*key)
            self._settled.set()
            self.lane.release()

    def ack_now(self, job: Job) -> None:
        self._check(job)
        self._finish(job)

    async def dead_letter(self, job: Job) -> None:
        """To the dead-letter topic when configured, else dropped."""
        self._check(job)
        if self.dead_letter_topic:
            await self.producer.send(self._job_record(job, job.headers, self.dead_letter_topic))
        else:
            self.dropped(job, "dead_letter_topic")
        self._finish(job)

    async def requeue(self, job: Job, headers: Headers, delay: float) -> None:
        """Produce a copy, then settle the original; a refused copy redelivers it and raises."""
        self._check(job)
        tp = job.handle[0]
        record = self._job_record(job, headers, *self._route(tp.topic, tp.partition, delay))
        await self.copy_or_give_back(self.producer.send(record), lambda: self._redeliver(job))
        self._finish(job)

    def _redeliver(self, job: Job) -> None:
        key = job.handle
        if self.stopped or self._outstanding.get(key) is not job:
            return
        again = KafkaJob.make(self, key, job.id, job.name, job.payload, job.headers,
                              job.pipeline, job.priority, job.auto_ack)
        again.failure = job.failure
        self._outstanding[key] = again
        self.feed.ready.appendleft(again)
        self.feed.pump()

    async def _stop_consuming(self) -> None:
        if self._consumer is not None:
            self._consumer.pause(*self._consumer.assignment())
        await self.feed.close()  # the queued jobs are still held, kept for resume

    async def _shutdown_consumer(self) -> None:
        for name in ("fetch", "commits", "mover"):
            await self.supervisor.stop_task(name)
        if self._consumer is not None:
            await self.bounded(self.commits.commit(), "the final commit", STOP_WAIT)
            await self.bounded(self._consumer.stop(), "leaving the group", STOP_WAIT)
            self._consumer = self.commits.consumer = None

    async def _close(self) -> None:
        unsettled = len(self._outstanding)
        await self._shutdown_consumer()
        if self._forwarder is not None:  # its commit and leave-group bounded too
            await self._forwarder.stop(functools.partial(self.bounded, limit=STOP_WAIT))
            self._forwarder = None
        self._outstanding.clear()
        self.feed.ready.clear()
        if unsettled:
            self.log.info("pipeline %r stopped with %d unsettled jobs; they are delivered again "
                          "from their uncommitted offsets", self.pipeline_name, unsettled)
        if self._inspector is not None:
            await self._inspector.close()
            self._inspector = None
        if self._producer_started:
            self._producer_started = False
            with contextlib.suppress(Exception):
                await self.producer.client.stop()

    async def state(self) -> State:
        queued = self.queue.count(self.pipeline_name)
        reserved = max(0, len(self._outstanding) - queued - len(self.feed.ready))
        active = delayed = 0
        if not self.stopped:
            try:
                if self._inspector is None:
                    self._inspector = _Inspector(self._conn, self.producer)
                    await self._inspector.start()
                from_end = self.options.consumer_options.consumer_offset.type == "AtEnd"
                lag = await self._inspector.lag(self._main_topics(),
                                                self.group.group_id if self.group else None,
                                                self.tracker, from_end)
                active = max(0, lag - reserved)
                if self.delay_topic:
                    tracker = self._forwarder.tracker if self._forwarder else OffsetTracker()
                    delayed = await self._inspector.lag([self.delay_topic], self._delay_group(),
                                                        tracker, False)
            except (KafkaError, OSError) as exc:
                self.log.debug("pipeline %r: state: %s", self.pipeline_name, exc)
                active = queued + len(self.feed.ready)
        return self.state_of(",".join(self._main_topics()) or self.topic, active, delayed, reserved)

    def _main_topics(self) -> list[str]:
        if self.options.consumer_options.consume_regexp and self._consumer is not None:
            return sorted(self._consumer.subscription())
        return list(self.topics)


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
        for close in (self.consumer.stop, self.admin.close):
            with contextlib.suppress(Exception):
                await close()

    async def lag(self, topics: Sequence[str], group: str | None,
                  tracker: OffsetTracker[Any], from_end: bool) -> int:
        """Unsettled records: per partition, from this consumer's commit point, else the
        group's committed offset, else the reset position (less those ``tracker`` settled)."""
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
            part = tracker.get(tp)
            base = None if part is None else part.commit_point
            if base is None and tp in committed and committed[tp].offset >= 0:
                base = committed[tp].offset
            if base is None:
                if not starts:
                    starts = ends if from_end else await self.consumer.beginning_offsets(tps)
                base = starts[tp]
            total += max(0, ends[tp] - base)
        return max(0, total - tracker.settled_ahead())


class KafkaConstructor(DriverConstructor):
    """Builds ``kafka`` drivers (the ``kafka`` entry point) from the ``kafka:`` section."""

    driver_class = KafkaDriver
    options_model = KafkaOptions
    section_model = KafkaSection
