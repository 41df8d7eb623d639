"""The ``kafka`` driver (on aiokafka). Importing this package, ``config``, ``codec`` or
``offsets`` does not import aiokafka: the driver's names load ``driver`` on first use."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

_LAZY = frozenset({"KafkaConstructor", "KafkaDriver", "KafkaJob", "KafkaUnavailableError",
                   "capabilities_for"})


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module("rrjobs.drivers.kafka.driver"), name)


__all__ = ["KafkaConstructor", "KafkaDriver", "KafkaJob", "KafkaOptions", "KafkaSection",
           "KafkaUnavailableError", "OffsetTracker", "capabilities_for"]
