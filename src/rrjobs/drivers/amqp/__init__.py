"""The ``amqp`` driver (RabbitMQ, on aio-pika). Importing it imports aio-pika;
``import rrjobs`` does not (the driver loads through its entry point)."""

from rrjobs.drivers.amqp.config import AMQPOptions, AMQPSection, Topology
from rrjobs.drivers.amqp.connection import LinkDownError
from rrjobs.drivers.amqp.driver import (
    BASE_CAPABILITIES,
    AMQPConstructor,
    AMQPDriver,
    PublishFailedError,
    capabilities_for,
)
from rrjobs.drivers.amqp.job import AMQPJob

__all__ = [
    "BASE_CAPABILITIES", "AMQPConstructor", "AMQPDriver", "AMQPJob", "AMQPOptions",
    "AMQPSection", "LinkDownError", "PublishFailedError", "Topology", "capabilities_for",
]
