"""The ``amqp`` driver: RoadRunner's AMQP driver on aio-pika, for RabbitMQ.

Pushes are persistent, ``mandatory`` publishes on a confirm channel that
return once RabbitMQ confirmed them; delays use RoadRunner's TTL +
dead-letter queues. Consuming is ``basic.qos(prefetch)`` + ``basic.consume``;
each delivery becomes an :class:`AMQPJob` through the kit's decode guard, and
the driver settles its jobs. Capabilities, wire format and reconnection:
``docs/drivers/amqp.md``.
"""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import aiormq
from aiormq import spec
from aiormq.abc import DeliveredMessage
from aiormq.exceptions import ChannelClosed, DeliveryError, PublishError

from rrjobs.core.base import BaseDriver
from rrjobs.core.batcher import Batcher, confirm_all
from rrjobs.core.capabilities import Capabilities
from rrjobs.core.constructor import DriverConstructor
from rrjobs.core.delays import whole_seconds
from rrjobs.core.errors import ConfigError, PipelineStateError, RRJobsError
from rrjobs.core.headers import DEAD_LETTER_KEYS, RR_ERROR, UNREADABLE, Headers
from rrjobs.core.job import Job
from rrjobs.core.message import Message, new_id
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.resilience import Backoff
from rrjobs.core.state import State
from rrjobs.drivers.amqp import codec
from rrjobs.drivers.amqp.config import AMQPOptions, AMQPSection, Topology, delay_ms
from rrjobs.drivers.amqp.connection import (
    CONNECTION_ERRORS,
    FIRST_BACKOFF,
    MAX_BACKOFF,
    Link,
    LinkDownError,
    Publish,
    Session,
    publish_all,
)
from rrjobs.drivers.amqp.consumer import Consumer
from rrjobs.drivers.amqp.deadletters import DeadLetterQueue
from rrjobs.drivers.amqp.job import AMQPJob
from rrjobs.drivers.amqp.receiver import header_table, install_fast_receiver

codec.install_typed_encoding()
install_fast_receiver()

#: Errors after which a publish or declaration is tried again (on a new channel or
#: connection), and a channel closed by RabbitMQ (a refusal while the connection lives).
RETRYABLE_OR_REFUSED: tuple[type[BaseException], ...] = (ChannelClosed, *CONNECTION_ERRORS,
                                                         LinkDownError)
#: RabbitMQ's default ``max_message_size``.
MAX_PAYLOAD = 128 * 1024 * 1024
#: ``x-expires`` (twice the delay, in ms) must fit RabbitMQ's timer (2^32 - 1 ms).
MAX_DELAY = (2**32 - 1) // 2 // 1000
#: Fractional-second delays get at least this ``x-expires`` (ms), so that the
#: delay queue cannot expire between its declaration and the publish.
MIN_DELAY_QUEUE_EXPIRES = 10_000
#: Publishes of a ``push_batch`` encoded and written at a time; RabbitMQ works on one
#: slice while the next is encoded (docs/decisions.md, AMQP hot path).
PUBLISH_SLICE = 250
#: How many delay queues ``state()`` counts (the most recently used).
STATE_DELAY_QUEUES = 64

#: ``reserved_per_consumer``: a passive declare counts the queue's ready messages only, so
#: ``reserved`` is what this consumer holds unacknowledged.
BASE_CAPABILITIES = Capabilities(max_delay=float(MAX_DELAY), max_payload=MAX_PAYLOAD,
                                 redelivery_on_crash=True, delay_granularity=0.001,
                                 shared_queue=True, reserved_per_consumer=True)


class PublishFailedError(RRJobsError):
    """RabbitMQ did not take the job: no queue was bound to receive it
    (``basic.return`` of a mandatory publish), it nacked the publish, or it
    refused the exchange (closed the channel)."""


def refusal(exc: BaseException, item: Publish) -> PublishFailedError | None:
    """The error of a publish RabbitMQ returned (no queue bound) or nacked, else ``None``."""
    _, exchange, routing_key, props = item
    ident = str((props.headers or {}).get("rr_id", "?"))
    if isinstance(exc, PublishError):
        return PublishFailedError(
            f"RabbitMQ returned the job {ident}: no queue is bound to exchange "
            f"{exchange or '(default)'!r} with routing key {routing_key!r}")
    if isinstance(exc, DeliveryError):
        return PublishFailedError(f"RabbitMQ refused the job {ident} (basic.nack): {exc}")
    return None


def capabilities_for(topology: Topology, dead_letter_queue: str = "") -> Capabilities:
    """The capabilities of a pipeline with this topology (and ``dead_letter_queue``)."""
    dead_letter = topology.dead_letter_exchange is not None
    return replace(BASE_CAPABILITIES, durable=topology.durable, dead_letter=dead_letter,
                   dead_letter_read=dead_letter and bool(dead_letter_queue))


class AMQPDriver(BaseDriver):
    """One pipeline on RabbitMQ. Event-loop only, never blocks; ``push`` and
    ``push_batch`` are safe to call concurrently."""

    name = "amqp"
    capabilities = BASE_CAPABILITIES

    def __init__(self, pipeline: Pipeline, queue: PriorityQueue, options: AMQPOptions,
                 section: AMQPSection) -> None:
        super().__init__(pipeline, queue)
        self.options = options
        self.topology = options.topology()
        self.priority = options.priority
        self.capabilities = capabilities_for(self.topology, options.dead_letter_queue)
        self._max_priority = self.topology.max_priority
        self._queue_arguments = codec.typed_arguments(self.topology.queue.arguments)
        self.link = Link(section, self)
        self.dead_letters = DeadLetterQueue(self.link, options.dead_letter_queue,
                                            self.pipeline_name, self.priority)
        #: the consumer wanted (between run/resume and pause/stop)
        self._active = False
        self._consumer: Consumer | None = None
        self._consume_lock = asyncio.Lock()
        #: set when the consume channel was lost while the connection lived
        self._lost = asyncio.Event()
        #: delay queue name -> (session number, monotonic time of its last declare)
        self._delay_queues: dict[str, tuple[int, float]] = {}
        self._declaring: dict[str, asyncio.Future[None]] = {}
        #: RoadRunner's restart command was sent (reconnecting was exhausted)
        self.restart_requested = False
        #: undelayed single pushes of one loop turn, or made while a write is in flight,
        #: go in one write; the result of each is its confirmation future
        self._pushes: Batcher[Publish, asyncio.Future[Any]] = Batcher(self._write,
                                                                      PUBLISH_SLICE)

    async def open(self, where: str) -> None:
        """Connect and declare the exchange (and the queue, when named)."""
        try:
            await self.link.open()
        except ChannelClosed as exc:  # inequivalent arguments, no access
            raise ConfigError(where, "RabbitMQ refused the exchange/queue declaration: "
                              f"{exc}") from exc

    async def _declare(self, session: Session) -> None:
        """Declare the exchange, and the queue with its binding (as configured)."""
        topo = self.topology
        channel = await session.admin()
        ex = topo.exchange
        if ex.declare:
            await channel.exchange_declare(ex.name, exchange_type=ex.type, durable=ex.durable,
                                           auto_delete=ex.auto_delete)
        q = topo.queue
        if q.name and q.declare:
            await channel.queue_declare(q.name, durable=q.durable, exclusive=q.exclusive,
                                        auto_delete=q.auto_delete,
                                        arguments=self._queue_arguments)
            await channel.queue_bind(q.name, ex.name, routing_key=q.routing_key)

    async def on_session(self, session: Session) -> None:
        await self._declare(session)
        self.connected = True
        if self._active:
            await self._subscribe(session)

    def on_down(self) -> None:
        self.connected = False
        consumer = self._consumer
        if consumer is not None:
            consumer.mark_closed()
        self.queue.remove(self.pipeline_name)  # RabbitMQ requeues them: they come again

    def on_exhausted(self, error: BaseException) -> bool:
        if self.stopped:
            return False
        if self.command_handler is None:
            self.log.error("pipeline %r: no runtime to restart it; redialling again",
                           self.pipeline_name)
            return True
        self.restart_requested = True
        self.request_restart(f"reconnecting failed for {self.topology.redial_timeout:g}s")
        return False

    async def _subscribe(self, session: Session) -> None:
        """Open a consume channel on ``session`` and consume, unless that is done."""
        async with self._consume_lock:
            consumer = self._consumer  # paused before: consume again on the same channel
            if consumer is not None and (consumer.session is not session or not consumer.usable):
                consumer = None
            if not self._active or (consumer is not None and consumer.subscribed):
                return
            topo = self.topology
            if consumer is None:
                channel, raw = await session.channel()
                await raw.basic_qos(prefetch_count=topo.prefetch)
                consumer = Consumer(self, session, channel, raw)
                channel.close_callbacks.add(partial(self._channel_closed, consumer))
                raw.on_consumer_cancel_callbacks.add(partial(self._cancelled_by_broker, consumer))
                self._consumer = consumer
            if topo.queue.declare:
                await self._declare(session)
            await consumer.subscribe(topo.queue.name)

    def _channel_closed(self, consumer: Consumer, _chan: object,
                        exc: BaseException | None) -> None:
        if consumer.closed:
            return
        consumer.mark_closed()
        if consumer is not self._consumer:
            return
        self.queue.remove(self.pipeline_name)
        if self._active and not self.stopped and consumer.session.healthy:
            self.log.warning("RabbitMQ closed the consume channel (%s); reopening it", exc)
            self._lost.set()

    def _cancelled_by_broker(self, consumer: Consumer, _frame: object = None) -> None:
        if consumer is not self._consumer or not consumer.subscribed:
            return
        self.log.warning("RabbitMQ cancelled the consumer of queue %r (deleted?); "
                         "consuming again", self.topology.queue.name)
        consumer.subscribed = False
        self.supervisor.spawn("close-channel", consumer.close())
        self._channel_closed(consumer, None, None)

    async def _keep_consuming(self) -> None:
        """The supervised ``consume`` task: consume again whenever the consume
        channel was lost while the connection lived (a new connection
        subscribes in :meth:`on_session`). It ends once consuming stopped, also
        when aiormq turned the cancellation into an error of the call it cut."""
        while self._active and not self.stopped:
            await self._lost.wait()
            self._lost.clear()
            await self._recover()

    async def _recover(self) -> None:
        deadline = time.monotonic() + self.topology.redial_timeout
        backoff = Backoff(FIRST_BACKOFF, MAX_BACKOFF)
        while self._active and not self.stopped:
            try:
                await self._subscribe(await self.link.current())
                return
            except LinkDownError:
                return  # the link gives up or restarts the pipeline itself
            except Exception as exc:
                if time.monotonic() >= deadline:
                    self.log.error("pipeline %r: could not consume again: %r",
                                   self.pipeline_name, exc)
                    if self.on_exhausted(exc):
                        deadline = time.monotonic() + self.topology.redial_timeout
                        continue
                    return
                pause = backoff.next()
                self.log.info("consuming again failed (%r); retrying in %.2fs", exc, pause)
                await asyncio.sleep(pause)

    def _job(self, raw: tuple[DeliveredMessage, Consumer, int], id: str, name: str,
             headers: Headers, priority: int, auto_ack: bool, rr_delay: int) -> AMQPJob:
        message, consumer, tag = raw
        job = AMQPJob(self, id=id, name=name, payload=message.body, headers=headers,
                      pipeline=self.pipeline_name, priority=priority, auto_ack=auto_ack)
        delivery = message.delivery
        job.consumer, job.delivery_tag = consumer, tag
        job.redelivered = bool(getattr(delivery, "redelivered", False))
        job.consumer_tag = str(getattr(delivery, "consumer_tag", "") or "")
        job.routing_key = str(getattr(delivery, "routing_key", "") or "")
        job.rr_delay = rr_delay
        return job

    def decode(self, raw: Any) -> AMQPJob:
        """The job of a delivery (``raw``: the message, its consumer and tag)."""
        d = codec.unpack(header_table(raw[0].header), self.priority)
        return self._job(raw, d.id, d.name, d.headers, d.priority, d.auto_ack, d.delay)

    def poison(self, raw: Any, reason: str) -> AMQPJob:
        job = self._job(raw, new_id(), UNREADABLE, {RR_ERROR: [reason]}, self.priority,
                        False, 0)
        job.failure = reason
        return job

    async def ack(self, job: Job) -> None:
        assert isinstance(job, AMQPJob)
        await job.consumer.settle(job)

    async def nack(self, job: Job, requeue: bool, delay: float) -> None:
        assert isinstance(job, AMQPJob)
        if requeue and delay > 0:
            await self.requeue(job, job.headers, delay)
        elif not requeue and self.capabilities.dead_letter:
            await self._dead_letter(job)
        else:
            await job.consumer.settle(job, requeue)

    async def _dead_letter(self, job: AMQPJob) -> None:
        """Publish the dead letter, with its headers, where RabbitMQ's own dead-lettering
        would route it (the queue's ``x-dead-letter-exchange`` and ``-routing-key``, else
        the job's routing key), then ack: a reject would dead-letter it without them.
        Where that publish is returned or refused, the job is rejected as it is (logged)."""
        exchange = self.topology.dead_letter_exchange or ""
        routing_key = self.topology.dead_letter_routing_key or job.routing_key
        props = self._properties(job.id, job.name, job.headers, 0, job.priority, job.auto_ack)
        # also plain string headers, for whoever looks at the queue (rr_headers has them too)
        table = props.headers
        assert table is not None
        table.update({k: v[0] for k in DEAD_LETTER_KEYS if (v := job.headers.get(k))})
        try:
            await self._publish(job.payload, exchange, routing_key, props)
        except PublishFailedError as exc:
            self.log.warning("pipeline %r: the dead letter of job %s was refused (%s); "
                             "rejected to the dead-letter exchange without its rr_* "
                             "dead-letter headers", self.pipeline_name, job.id, exc)
            await job.consumer.settle(job, False)
            return
        except BaseException:
            await job.consumer.settle(job, True)
            raise
        await job.consumer.settle(job)

    async def requeue(self, job: Job, headers: Headers, delay: float) -> None:
        assert isinstance(job, AMQPJob)
        await self.copy_or_give_back(self.republish(job, headers, delay),
                                     lambda: job.consumer.settle(job, True))
        await job.consumer.settle(job)

    def queue_name(self, job: Job) -> str:
        return self.topology.queue.name

    async def give_back(self, jobs: Sequence[Job]) -> None:
        """Requeue jobs taken back out of the priority queue, each on its channel."""
        for job in jobs:
            if isinstance(job, AMQPJob):
                await job.consumer.settle(job, True)

    async def _start_consuming(self) -> None:
        if not self.topology.queue.name:
            raise PipelineStateError(
                f"pipeline {self.pipeline_name!r} has no queue to consume (a push-only "
                "pipeline): set queue")
        self._active = True
        try:
            await self._subscribe(await self.link.current())
        except BaseException as exc:
            self._active = False
            if isinstance(exc, ChannelClosed):
                raise PipelineStateError(
                    f"pipeline {self.pipeline_name!r}: RabbitMQ refused to consume queue "
                    f"{self.topology.queue.name!r}: {exc}") from exc
            raise
        self._lost.clear()
        self.supervisor.start("consume", self._keep_consuming)

    async def _stop_consuming(self) -> None:
        self._active = False
        await self.supervisor.stop_task("consume")
        consumer = self._consumer
        async with self._consume_lock:
            if consumer is not None:
                await consumer.cancel()
        await self.give_back(self.queue.remove(self.pipeline_name))
        if consumer is not None:
            consumer.flush(everything=True)

    def _properties(self, job_id: str, name: str, headers: Headers, delay: float,
                    priority: int, auto_ack: bool,
                    now: datetime.datetime | None = None) -> spec.Basic.Properties:
        """RoadRunner's properties and header table for a job (persistent)."""
        table = codec.pack(job_id, name, self.pipeline_name, headers, whole_seconds(delay),
                           priority, auto_ack)
        props = spec.Basic.Properties(content_type=codec.CONTENT_TYPE, delivery_mode=2,
                                      timestamp=now or datetime.datetime.now(datetime.UTC),
                                      headers=table)
        if self._max_priority is not None:
            props.priority = min(max(self._max_priority - priority, 0), self._max_priority)
        return props

    async def _publish(self, body: bytes, exchange: str, routing_key: str,
                       props: spec.Basic.Properties) -> None:
        """Publish and wait for RabbitMQ's confirm; across a reconnection, publish again.

        A job whose confirm was lost with the connection is published again on
        the new one: it may then exist twice (at least once, never lost).
        Raises :class:`PublishFailedError` when RabbitMQ refuses the job, and
        :class:`LinkDownError` when the connection is gone for good.
        """
        failures = 0
        while True:
            session = await self.link.current()
            try:
                channel = await session.admin("publish")
                await channel.basic_publish(body, exchange=exchange, routing_key=routing_key,
                                            properties=props, mandatory=True)
                return
            except (PublishError, DeliveryError) as exc:
                raise refusal(exc, (body, exchange, routing_key, props)) or exc from None
            except RETRYABLE_OR_REFUSED as exc:
                failures = self._transient(session, failures, exc,
                                           f"the publish to exchange {exchange!r}")

    def _transient(self, session: Session, failures: int, exc: BaseException,
                   what: str) -> int:
        """After a channel or connection error: raise :class:`PublishFailedError` when
        RabbitMQ closed the channel of a live connection (it refused ``what``); else
        redial if the connection is gone (or a channel keeps failing), and the caller
        tries again. Returns the new count."""
        if isinstance(exc, ChannelClosed) and session.healthy:
            raise PublishFailedError(f"RabbitMQ refused {what}: {exc}") from exc
        failures += 1
        if not session.healthy or failures > 3:
            self.link.lost(session)
            return 0
        return failures

    def _item(self, msg: Message, now: datetime.datetime | None = None) -> Publish:
        """A job's body, exchange, routing key and properties."""
        headers, routing_key = codec.split_routing_key(msg.headers,
                                                       self.topology.queue.routing_key)
        return (bytes(msg.payload), self.topology.exchange.name, routing_key,
                self._properties(msg.id, msg.name, headers, msg.delay, msg.priority,
                                 msg.auto_ack, now))

    async def _send(self, msg: Message) -> None:
        """Publish one job and wait for its confirm. An undelayed job goes through
        :attr:`_pushes`, written with the single pushes made next to it; if that write
        fails, or its confirm is lost with the channel, it is published alone
        (:meth:`_publish`, with its retries); a refusal fails this job only."""
        item = self._item(msg)
        if msg.delay > 0:
            return await self._publish_after(
                msg.delay, item, partial(self.topology.delay_queue, routing_key=item[2]))
        try:
            confirm = await self._pushes.submit(item)
        except Exception:
            return await self._publish(*item)
        await asyncio.wait((confirm,))
        exc = None if confirm.cancelled() else confirm.exception()
        if exc is not None and (failure := refusal(exc, item)) is not None:
            raise failure
        if exc is not None or confirm.cancelled():
            await self._publish(*item)

    async def _write(self, items: Sequence[Publish]) -> list[asyncio.Future[Any]]:
        """Publish ``items`` in one write on the publish channel; their confirmations."""
        channel = await (await self.link.current()).admin("publish")
        return await publish_all(channel, items)

    async def _send_batch(self, msgs: Sequence[Message]) -> None:
        """Publish the undelayed jobs in writes of :data:`PUBLISH_SLICE`, each sent
        before the next is encoded (RabbitMQ confirms one while the next is built),
        and wait for all their confirms together; delayed jobs, and jobs whose publish
        the channel or connection lost, are published one by one, with retries."""
        now = datetime.datetime.now(datetime.UTC)
        plain = [m for m in msgs if m.delay <= 0]
        items: list[Publish] = []
        confirms: list[asyncio.Future[Any] | None] = []
        channel: Any = None
        failed = False  # a slice's write failed: the rest are published one by one
        for start in range(0, len(plain), PUBLISH_SLICE):
            part = [self._item(m, now) for m in plain[start:start + PUBLISH_SLICE]]
            items += part
            if not failed:
                try:
                    if channel is None:
                        channel = await (await self.link.current()).admin("publish")
                    confirms += await publish_all(channel, part)
                    continue
                except RETRYABLE_OR_REFUSED:
                    failed = True
            confirms += [None] * len(part)
        await confirm_all(items, confirms, refusal, lambda item: self._publish(*item),
                          [self._send(m) for m in msgs if m.delay > 0])

    async def republish(self, job: AMQPJob, headers: Headers, delay: float) -> None:
        """Publish a copy of ``job`` with ``headers`` straight to its queue (through
        ``delayed-<ms>..<queue>`` when ``delay > 0``); returns once confirmed."""
        self.check_not_stopped(job)
        queue = self.topology.queue.name
        props = self._properties(job.id, job.name, headers, delay, job.priority, job.auto_ack)
        await self._publish_after(delay, (job.payload, "", queue, props),
                                  lambda ms: f"delayed-{ms}..{queue}")

    async def _publish_after(self, delay: float, item: Publish,
                             delay_queue: Callable[[int], str]) -> None:
        """Publish ``item`` now, or when ``delay > 0`` into RoadRunner's TTL queue
        ``delay_queue(ms)``, which dead-letters the job to the item's exchange and
        routing key when ``ms`` have passed."""
        if delay <= 0:
            return await self._publish(*item)
        body, exchange, routing_key, props = item
        ms = delay_ms(delay)
        name = delay_queue(ms)
        for attempt in (1, 2):
            await self._ensure_delay_queue(name, ms, exchange, routing_key)
            try:
                await self._publish(body, "", name, props)
                return
            except PublishFailedError:
                # The delay queue expired between its declaration and the publish.
                self._delay_queues.pop(name, None)
                if attempt == 2:
                    raise

    async def _ensure_delay_queue(self, name: str, ms: int, exchange: str,
                                  routing_key: str) -> None:
        """Declare the delay queue unless this session did so less than ``ms / 2``
        ago (its ``x-expires`` of twice ``ms`` then cannot fire before a job
        published now has been dead-lettered)."""
        failures = 0
        while True:
            session = await self.link.current()
            known = self._delay_queues.get(name)
            if known is not None and known[0] == session.number and (
                    time.monotonic() - known[1] < ms / 2000):
                return
            pending = self._declaring.get(name)
            if pending is not None:
                await asyncio.shield(pending)
                continue
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._declaring[name] = fut
            try:
                expires = 2 * ms if ms % 1000 == 0 else max(2 * ms, MIN_DELAY_QUEUE_EXPIRES)
                channel = await session.admin()
                await channel.queue_declare(name, durable=True, arguments={
                    "x-dead-letter-exchange": exchange,
                    "x-dead-letter-routing-key": routing_key,
                    "x-message-ttl": codec.Long(ms),
                    "x-expires": codec.Long(expires),
                })
                self._delay_queues.pop(name, None)
                self._delay_queues[name] = (session.number, time.monotonic())
                while len(self._delay_queues) > STATE_DELAY_QUEUES:
                    del self._delay_queues[next(iter(self._delay_queues))]
                return
            except RETRYABLE_OR_REFUSED as exc:
                failures = self._transient(session, failures, exc,
                                           f"to declare the delay queue {name!r}")
            finally:
                del self._declaring[name]
                fut.set_result(None)

    async def _close(self) -> None:
        consumer = self._consumer
        if consumer is not None:
            consumer.flush(everything=True)
        q = self.topology.queue
        if q.delete_on_stop and q.name and self.link.up:
            try:
                async with asyncio.timeout(5.0):
                    channel = await (await self.link.current()).admin()
                    await channel.queue_delete(q.name)
            except Exception as exc:
                self.log.warning("deleting queue %r on stop failed: %r", q.name, exc)
        await self.link.close()

    async def state(self) -> State:
        """Counts from RabbitMQ's passive declares (see ``docs/drivers/amqp.md``,
        State); raises :class:`LinkDownError` while reconnecting."""
        topo = self.topology
        queued = self.queue.count(self.pipeline_name)
        consumer = self._consumer
        in_flight = consumer.in_flight if consumer is not None and consumer.usable else 0
        state = self.state_of(topo.queue.name, reserved=max(0, in_flight - queued))
        state.ready = bool(state.ready and self._active and consumer is not None
                           and consumer.subscribed and consumer.usable)
        if self.stopped:
            return state
        if not self.link.up:
            raise LinkDownError(f"pipeline {self.pipeline_name!r}: not connected to RabbitMQ "
                                "(reconnecting)")
        session = await self.link.current()
        ready = await self._message_count(session, topo.queue.name) if topo.queue.name else 0
        state.active = max(ready, 0) + queued
        if ready < 0:
            state.ready, state.error_message = False, f"queue {topo.queue.name!r} not found"
        for name in list(self._delay_queues):
            count = await self._message_count(session, name)
            if count < 0:
                self._delay_queues.pop(name, None)
            state.delayed += max(count, 0)
        return state

    async def _message_count(self, session: Session, name: str, retry: bool = True) -> int:
        """Ready messages in queue ``name`` (passive declare); -1 if it is gone."""
        channel = await session.admin("state")
        try:
            return int((await channel.queue_declare(name, passive=True)).message_count or 0)
        except ChannelClosed:
            return -1
        except aiormq.exceptions.ChannelInvalidStateError:
            # Another passive declare's 404 closed the shared channel: reopen it.
            if not retry or not session.healthy:
                raise
        return await self._message_count(session, name, retry=False)


class AMQPConstructor(DriverConstructor):
    """Builds ``amqp`` drivers (the ``amqp`` entry point); the global ``amqp:``
    section is required, as in RoadRunner."""

    driver_class = AMQPDriver
    options_model = AMQPOptions
    section_model = AMQPSection
    section_required = True


__all__ = ["AMQPConstructor", "AMQPDriver", "PublishFailedError"]
