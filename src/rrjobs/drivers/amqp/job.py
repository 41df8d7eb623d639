"""The AMQP driver's job: a delivery on one consume channel."""

from __future__ import annotations

from typing import Any

from rrjobs.core.job import Job


class AMQPJob(Job):
    """A job delivered from a RabbitMQ queue, settled by the driver on the
    channel it came on (see ``docs/drivers/amqp.md``, Job operations).

    Attributes:
        consumer: the consume channel's consumer the delivery came on.
        delivery_tag: the delivery tag on the consume channel.
        redelivered: RabbitMQ's redelivered flag (delivered before and not acked).
        consumer_tag: the consumer the delivery was for (the ``consumer_id``).
        rr_delay: the ``rr_delay`` header (seconds) the job was published with.
        routing_key: the routing key the job was published with (a dead letter
            keeps it unless the queue names an ``x-dead-letter-routing-key``).
    """

    __slots__ = ("consumer", "consumer_tag", "delivery_tag", "redelivered", "routing_key",
                 "rr_delay")
    consumer: Any
    delivery_tag: int
    redelivered: bool
    consumer_tag: str
    routing_key: str
    rr_delay: int
