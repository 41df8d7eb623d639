"""The AMQP driver's job: a delivery on one consume channel."""

from __future__ import annotations

from typing import Any

from rrjobs.core.job import Job


class AMQPJob(Job):
    """A job delivered from a RabbitMQ queue; the driver settles it:

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
        consumer: the consume channel's consumer the delivery came on.
        delivery_tag: the delivery tag on the consume channel.
        redelivered: RabbitMQ's redelivered flag (delivered before and not acked).
        consumer_tag: the consumer the delivery was for (the ``consumer_id``).
        rr_delay: the ``rr_delay`` header (seconds) the job was published with.
    """

    __slots__ = ("consumer", "consumer_tag", "delivery_tag", "redelivered", "rr_delay")
    consumer: Any
    delivery_tag: int
    redelivered: bool
    consumer_tag: str
    rr_delay: int
