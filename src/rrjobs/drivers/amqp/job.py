"""The AMQP driver's job: settling it maps to ``basic.ack``/``basic.nack`` or a
republished copy."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rrjobs.core.capabilities import Capabilities
from rrjobs.core.headers import Headers
from rrjobs.core.job import Job

if TYPE_CHECKING:
    from rrjobs.drivers.amqp.consumer import Consumer
    from rrjobs.drivers.amqp.driver import AMQPDriver


class AMQPJob(Job):
    """A job delivered from a RabbitMQ queue.

    * ``ack()`` → ``basic.ack`` (with ``multiple_ack``, batched, but never
      covering a job whose handler is still running).
    * ``nack()`` → ``basic.nack(requeue=false)``: RabbitMQ dead-letters it
      through the queue's ``x-dead-letter-exchange``, or drops it.
    * ``nack(requeue=True)`` → ``basic.nack(requeue=true)``: redelivered at once,
      unchanged.
    * ``nack(requeue=True, delay)`` and ``requeue(headers, delay)`` → a copy
      (merged headers) is published straight to the job's queue, through a
      delay queue when ``delay > 0``; once RabbitMQ confirmed the copy the
      original is acked. If the copy cannot be published the original is
      nacked with requeue and the error is raised.

    A settlement on a channel that died meanwhile is lost (logged): RabbitMQ
    redelivers the job, so it runs at least once.

    Attributes:
        delivery_tag: the delivery tag on the consume channel.
        redelivered: RabbitMQ's redelivered flag (delivered before and not acked).
        consumer_tag: the consumer the delivery was for (the ``consumer_id``).
        rr_delay: the ``rr_delay`` header (seconds) the job was published with.
    """

    __slots__ = ("_consumer", "_driver", "consumer_tag", "delivery_tag", "redelivered",
                 "rr_delay")
    driver_name = "amqp"

    def __init__(self, driver: AMQPDriver, consumer: Consumer, delivery_tag: int,
                 redelivered: bool, consumer_tag: str, rr_delay: int, *, id: str, name: str,
                 payload: bytes, headers: Headers, pipeline: str, priority: int,
                 auto_ack: bool) -> None:
        self._set_fields(id, name, payload, headers, pipeline, priority, auto_ack)
        self._driver = driver
        self._consumer = consumer
        self.delivery_tag = delivery_tag
        self.redelivered = redelivered
        self.consumer_tag = consumer_tag
        self.rr_delay = rr_delay

    @property
    def capabilities(self) -> Capabilities:
        return self._driver.capabilities

    def queue_name(self) -> str:
        return self._driver.topology.queue.name

    async def _ack(self) -> None:
        await self._consumer.ack(self)

    async def _nack(self, requeue: bool, delay: float) -> None:
        if requeue and delay > 0:
            await self._republish(self.headers, delay)
        else:
            await self._consumer.nack(self, requeue)

    async def _requeue(self, headers: Headers, delay: float) -> None:
        await self._republish(headers, delay)

    async def _republish(self, headers: Headers, delay: float) -> None:
        try:
            await self._driver.republish(self, headers, delay)
        except BaseException:
            await self._consumer.nack(self, True)
            raise
        await self._consumer.ack(self)
