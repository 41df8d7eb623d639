"""The ``nats`` driver: RoadRunner's NATS JetStream driver on nats-py.

See :mod:`rrjobs.drivers.nats.driver` for its capabilities and design.
"""

from rrjobs.drivers.nats.driver import NATSConstructor, NATSDriver

__all__ = ["NATSConstructor", "NATSDriver"]
