"""The ``kafka`` driver (Apache Kafka, on aiokafka): see :mod:`rrjobs.drivers.kafka.driver`.

``import rrjobs`` does not import aiokafka, and neither does importing this
package or its pure modules (``config``, ``codec``, ``offsets``): the driver's
names below load :mod:`rrjobs.drivers.kafka.driver` (and aiokafka) on first
use, as the ``rrjobs.drivers`` entry point does when a pipeline uses the driver.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from rrjobs.drivers.kafka.config import KafkaOptions, KafkaSection
from rrjobs.drivers.kafka.offsets import OffsetTracker

if TYPE_CHECKING:
    from rrjobs.drivers.kafka.driver import (
        KafkaConstructor,
        KafkaDriver,
        KafkaUnavailableError,
        capabilities_for,
    )
    from rrjobs.drivers.kafka.job import KafkaJob

_LAZY = {
    "KafkaConstructor": "rrjobs.drivers.kafka.driver",
    "KafkaDriver": "rrjobs.drivers.kafka.driver",
    "KafkaUnavailableError": "rrjobs.drivers.kafka.driver",
    "capabilities_for": "rrjobs.drivers.kafka.driver",
    "KafkaJob": "rrjobs.drivers.kafka.job",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "KafkaConstructor",
    "KafkaDriver",
    "KafkaJob",
    "KafkaOptions",
    "KafkaSection",
    "KafkaUnavailableError",
    "OffsetTracker",
    "capabilities_for",
]
