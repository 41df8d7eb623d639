"""One consume channel of the AMQP driver: its subscription, deliveries and acks.

A :class:`Consumer` lives as long as its channel. Its jobs settle through it
(``basic.ack``/``basic.nack`` on the same channel: delivery tags belong to a
channel); acks go out together, in runs (``docs/drivers/amqp.md``, Acks).
Settling on a closed channel is a lost settlement: logged, never raised, and
the broker redelivers the job (at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from aio_pika.abc import AbstractChannel
from aiormq import spec
from aiormq.abc import AbstractChannel as RawChannel
from aiormq.abc import ChannelFrame, DeliveredMessage
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from rrjobs.core.acks import AckRuns
from rrjobs.core.job import Job
from rrjobs.drivers.amqp.connection import CONNECTION_ERRORS, Owner, Session
from rrjobs.drivers.amqp.frames import ack_frames
from rrjobs.drivers.amqp.job import AMQPJob

#: How long a ``basic.cancel`` may take before the channel is closed instead.
CANCEL_TIMEOUT = 5.0
#: The longest an ack waits to be sent with others (seconds; 0: the next loop turn).
ACK_DELAY = 0.0


class Consumer:
    """The consumer on one consume channel. Use from the event loop only."""

    def __init__(self, driver: Owner, session: Session, channel: AbstractChannel,
                 raw: RawChannel) -> None:
        topo = driver.topology
        self.driver = driver
        self.session = session
        self.channel = channel
        self.raw = raw
        self.tag = topo.consumer_tag
        self.multiple = topo.queue.multiple_ack
        self.log = driver.log
        #: deliveries are taken into the priority queue
        self.subscribed = False
        #: the channel is gone (closed by us, by the broker or with the connection)
        self.closed = False
        #: delivered and not yet settled
        self.in_flight = 0
        #: settlements that could not be sent because the channel was gone
        self.lost = 0
        self._acks = AckRuns(self.flush, max(1, topo.prefetch // 4), ACK_DELAY)
        self._hold_limit = max(1, topo.prefetch // 2)
        #: deliveries waiting for room in the priority queue, nacks being sent
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def usable(self) -> bool:
        return not self.closed and not self.raw.is_closed

    async def subscribe(self, queue: str) -> None:
        """``basic.consume`` on the channel (manual acks)."""
        self.subscribed = True
        # aiormq's reader calls this for each basic.deliver: the delivery is taken
        # there, without the task aiormq would create for it
        self.raw._on_deliver_frame = self._on_deliver_frame  # type: ignore[attr-defined]
        try:
            await self.raw.basic_consume(queue, self._deliver, consumer_tag=self.tag)
        except BaseException:
            self.subscribed = False
            raise

    async def cancel(self) -> None:
        """``basic.cancel``; the channel stays open for the jobs still in handlers."""
        subscribed, self.subscribed = self.subscribed, False
        if not subscribed or not self.usable:
            return
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT):
                await self.raw.basic_cancel(self.tag)
        except Exception as exc:
            self.log.warning("basic.cancel failed (%r); closing the consume channel", exc)
            await self.close()

    async def _on_deliver_frame(self, frame: spec.Basic.Deliver) -> None:
        """A ``basic.deliver`` on the channel: read its header and body frames
        (as aiormq's ``_on_deliver_frame``) and take the delivery at once."""
        get_frame = self.raw._get_frame  # type: ignore[attr-defined]
        header = await get_frame()
        if not isinstance(header, ContentHeader):
            raise ValueError(f"Unexpected frame {header!r} instead of ContentHeader", header)
        size = header.body_size or 0
        parts: list[bytes] = []
        got = 0
        while got < size:
            content = await get_frame()
            if not isinstance(content, ContentBody):
                raise ValueError(f"Unexpected frame {content!r}", content)
            parts.append(content.value)
            got += len(content.value)
        body = parts[0] if len(parts) == 1 else b"".join(parts)
        try:
            self.take(DeliveredMessage(delivery=frame, header=header, body=body,
                                       channel=self.raw))
        except Exception:  # as aiormq's failed consumer task: logged, the channel lives on
            self.log.exception("taking a delivery of pipeline %r failed",
                               self.driver.pipeline_name)

    async def _deliver(self, message: DeliveredMessage) -> None:
        """aiormq's consumer callback (when its own reader delivers)."""
        self.take(message)

    def take(self, message: DeliveredMessage) -> None:
        """A delivery: its job into the shared priority queue, or, when that is
        full, into it as soon as there is room (a task of its own)."""
        tag: int = message.delivery.delivery_tag  # type: ignore[union-attr,assignment]
        if not self.subscribed or self.closed:
            # Sent before our basic.cancel took effect: give it back now.
            self._spawn(self._send_nack(tag, requeue=True))
            return
        job = self.driver.accept((message, self, tag))
        if job is None:  # the driver could not even build a failed job: give it back
            self._spawn(self._send_nack(tag, requeue=False))
            return
        self.in_flight += 1
        self._acks.delivered(tag)
        queue = self.driver.queue
        if queue.full():
            self._spawn(self._insert_when_room(job))
        else:
            queue.insert_nowait(job)

    async def _insert_when_room(self, job: Job) -> None:
        queue = self.driver.queue
        await queue.insert(job)  # backpressure: the shared priority queue is full
        if not self.subscribed or self.closed:
            # Paused or lost while waiting for room: nothing of this pipeline may stay queued.
            await self.driver.give_back(queue.remove(self.driver.pipeline_name))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            self.log.error("a delivery of pipeline %r failed", self.driver.pipeline_name,
                           exc_info=exc)

    def _lost(self, job: AMQPJob, what: str) -> None:
        self.lost += 1
        # in an outage the link has said it all: the connection is lost
        quiet = self.lost > 1 or self.driver.outage.failing
        level = logging.DEBUG if quiet else logging.WARNING
        self.log.log(level, "%s of job %s lost: the channel it was delivered on is closed; "
                     "RabbitMQ redelivers the job", what, job.id)

    async def settle(self, job: AMQPJob, requeue: bool | None = None) -> None:
        """``basic.ack`` when ``requeue`` is ``None`` (sent with others within
        :data:`ACK_DELAY`), else ``basic.nack`` of this job alone, at once."""
        ack = requeue is None
        if not self.usable:
            self._lost(job, "ack" if ack else "nack")
            return
        self.in_flight -= 1
        self._acks.settled(job.delivery_tag, ack)
        if not ack:  # sent before any multiple ack that covers it
            try:
                await self.raw.basic_nack(job.delivery_tag, requeue=bool(requeue), wait=False)
            except CONNECTION_ERRORS:
                self._lost(job, "nack")

    def flush(self, everything: bool = False) -> None:
        """Write the acks to send in one frame: the settled run as one ``multiple=true``
        ack, the others one by one unless ``multiple_ack`` holds them back (until
        they reach half the prefetch, or ``everything``: before a pause or stop)."""
        acks = self._acks
        upto, singles = acks.take(everything or not self.multiple
                                  or acks.pending >= self._hold_limit)
        sends = [(tag, False) for tag in singles]
        if upto is not None:
            sends.insert(0, (upto, True))
        if sends and self.usable:  # else lost: RabbitMQ redelivers those jobs
            self.raw.write_queue.put_nowait(  # type: ignore[attr-defined]
                ChannelFrame(ack_frames(self.raw.number, sends), False))

    async def _send_nack(self, tag: int, *, requeue: bool) -> None:
        if self.usable:
            with contextlib.suppress(*CONNECTION_ERRORS):
                await self.raw.basic_nack(tag, requeue=requeue, wait=False)

    async def close(self) -> None:
        """Close the channel; RabbitMQ requeues what is still unacked on it."""
        self.mark_closed()
        with contextlib.suppress(Exception):  # already closed, or the connection is gone
            await asyncio.wait_for(self.channel.close(), 5.0)

    def mark_closed(self) -> None:
        """The channel is gone (closed by the broker or with the connection)."""
        self.closed = True
        self.subscribed = False
