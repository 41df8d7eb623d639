"""The ``nats`` driver: RoadRunner's NATS JetStream driver on nats-py (``docs/drivers/nats.md``)."""

from rrjobs.drivers.nats.driver import NATSConstructor, NATSDriver

__all__ = ["NATSConstructor", "NATSDriver"]
