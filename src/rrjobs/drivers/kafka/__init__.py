"""The ``kafka`` driver (on aiokafka). Importing this package, ``config``, ``codec`` or
``offsets`` does not import aiokafka: the driver's names load ``driver`` on first use."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rrjobs.core.lazy import lazy_exports
from rrjobs.drivers.kafka.config import KafkaOptions, KafkaSection
from rrjobs.drivers.kafka.offsets import OffsetTracker

if TYPE_CHECKING:
    from rrjobs.drivers.kafka.driver import (
        KafkaConstructor,
        KafkaDriver,
        KafkaJob,
        KafkaUnavailableError,
        capabilities_for,
    )

__getattr__, __dir__ = lazy_exports(__name__, {"rrjobs.drivers.kafka.driver": [
    "KafkaConstructor", "KafkaDriver", "KafkaJob", "KafkaUnavailableError", "capabilities_for"]})

__all__ = ["KafkaConstructor", "KafkaDriver", "KafkaJob", "KafkaOptions", "KafkaSection",
           "KafkaUnavailableError", "OffsetTracker", "capabilities_for"]
