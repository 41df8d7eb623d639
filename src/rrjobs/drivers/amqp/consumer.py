"""One consume channel of the AMQP driver: its subscription, deliveries and acks.

A :class:`Consumer` lives as long as its channel. Its jobs settle through it
(``basic.ack``/``basic.nack`` on the same channel: delivery tags belong to a
channel); ``multiple_ack`` is described in ``docs/drivers/amqp.md``. Settling
on a closed channel is a lost settlement: logged, never raised, and the broker
redelivers the job (at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

from aio_pika.abc import AbstractChannel
from aiormq.abc import AbstractChannel as RawChannel
from aiormq.abc import DeliveredMessage

from rrjobs.drivers.amqp.connection import CONNECTION_ERRORS, Owner, Session
from rrjobs.drivers.amqp.job import AMQPJob

#: How long a ``basic.cancel`` may take before the channel is closed instead.
CANCEL_TIMEOUT = 5.0


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
        # multiple_ack bookkeeping: delivery tags in order, and the settled ones
        # (True: ack still to send, False: already settled on the broker)
        self._order: deque[int] = deque()
        self._done: dict[int, bool] = {}
        self._held = 0
        self._hold_limit = max(1, topo.prefetch // 2)
        self._lock = asyncio.Lock()

    @property
    def usable(self) -> bool:
        return not self.closed and not self.raw.is_closed

    async def subscribe(self, queue: str) -> None:
        """``basic.consume`` on the channel (manual acks)."""
        self.subscribed = True
        try:
            await self.raw.basic_consume(queue, self._deliver, consumer_tag=self.tag)
        except BaseException:
            self.subscribed = False
            raise

    async def cancel(self) -> None:
        """``basic.cancel``; the channel stays open for the jobs still in handlers."""
        if not self.subscribed:
            return
        self.subscribed = False
        if not self.usable:
            return
        try:
            async with asyncio.timeout(CANCEL_TIMEOUT):
                await self.raw.basic_cancel(self.tag)
        except Exception as exc:
            self.log.warning("basic.cancel failed (%r); closing the consume channel", exc)
            await self.close()

    async def _deliver(self, message: DeliveredMessage) -> None:
        delivery = message.delivery
        tag: int = delivery.delivery_tag  # type: ignore[union-attr,assignment]
        if not self.subscribed or self.closed:
            # Sent before our basic.cancel took effect: give it back now.
            await self._send_nack(tag, requeue=True)
            return
        job = self.driver.accept((message, self, tag))
        if job is None:  # the driver could not even build a failed job: give it back
            await self._send_nack(tag, requeue=False)
            return
        self.in_flight += 1
        if self.multiple:
            self._order.append(tag)
        queue = self.driver.queue
        if not queue.full():
            queue.insert_nowait(job)
            return
        await queue.insert(job)  # backpressure: the shared priority queue is full
        if not self.subscribed or self.closed:
            # Paused or lost while waiting for room: nothing of this pipeline may stay queued.
            await self.driver.give_back(queue.remove(self.driver.pipeline_name))

    def _lost(self, job: AMQPJob, what: str) -> None:
        self.lost += 1
        # in an outage the link has said it all: the connection is lost
        quiet = self.lost > 1 or self.driver.outage.failing
        level = logging.DEBUG if quiet else logging.WARNING
        self.log.log(level, "%s of job %s lost: the channel it was delivered on is closed; "
                     "RabbitMQ redelivers the job", what, job.id)

    async def settle(self, job: AMQPJob, requeue: bool | None = None) -> None:
        """``basic.ack`` when ``requeue`` is ``None`` (batched with ``multiple_ack``),
        else ``basic.nack`` of this job alone."""
        ack = requeue is None
        if not self.usable:
            self._lost(job, "ack" if ack else "nack")
            return
        self.in_flight -= 1
        tag, raw = job.delivery_tag, self.raw
        try:
            if not self.multiple:
                if ack:
                    await raw.basic_ack(tag, wait=False)
                else:
                    await raw.basic_nack(tag, requeue=bool(requeue), wait=False)
                return
            async with self._lock:
                self._done[tag] = ack
                if ack:
                    self._held += 1
                else:
                    await raw.basic_nack(tag, requeue=bool(requeue), wait=False)
                upto = self._advance()
                if upto is not None:
                    await raw.basic_ack(upto, multiple=True, wait=False)
                elif ack and self._held >= self._hold_limit:
                    await self._send_held()
        except CONNECTION_ERRORS:
            self._lost(job, "ack" if ack else "nack")

    def _advance(self) -> int | None:
        """Drop the settled prefix of the delivery order; the highest tag in it
        whose ack is still to be sent (a ``multiple=true`` ack covers them all)."""
        order, done = self._order, self._done
        upto = None
        while order and order[0] in done:
            tag = order.popleft()
            if done.pop(tag):
                upto = tag
                self._held -= 1
        return upto

    async def _send_held(self) -> None:
        """Send every held-back ack on its own (caller holds the lock)."""
        for tag, pending in list(self._done.items()):
            if pending:
                self._done[tag] = False
                await self.raw.basic_ack(tag, wait=False)
        self._held = 0

    async def flush(self) -> None:
        """Send held-back acks now (before a pause or stop)."""
        if not self.multiple or not self._held or not self.usable:
            return
        async with self._lock:
            try:
                await self._send_held()
            except CONNECTION_ERRORS as exc:
                self.log.warning("sending held-back acks failed (%r); RabbitMQ redelivers "
                                 "those jobs", exc)

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
