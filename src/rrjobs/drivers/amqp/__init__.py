"""The ``amqp`` driver (RabbitMQ, on aio-pika): see :mod:`rrjobs.drivers.amqp.driver`.

Importing this package imports aio-pika; ``import rrjobs`` does not (the
driver loads through its ``rrjobs.drivers`` entry point when a pipeline uses it).
"""

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
