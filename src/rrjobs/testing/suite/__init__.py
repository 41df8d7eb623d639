"""The conformance suite: one base class per area, and :class:`ConformanceSuite`
that inherits them all.

A driver's test module subclasses :class:`ConformanceSuite` (or only the
sections it wants, for a partial run) and provides the ``driver_factory``
fixture; see :mod:`rrjobs.testing.factory`.
"""

from __future__ import annotations

from rrjobs.testing.suite.base import SuiteBase
from rrjobs.testing.suite.concurrency import AtLeastOnceTests, ConcurrencyTests
from rrjobs.testing.suite.construction import ConstructionTests
from rrjobs.testing.suite.delays import DelayTests
from rrjobs.testing.suite.delivery import DeliveryTests
from rrjobs.testing.suite.foreign import ForeignMessageTests
from rrjobs.testing.suite.lifecycle import PauseResumeTests, StateTests, StopDestroyTests
from rrjobs.testing.suite.priority import PriorityTests
from rrjobs.testing.suite.runtime import RuntimeTests
from rrjobs.testing.suite.settlement import AutoAckTests, LeaseTests, NackTests


class ConformanceSuite(
    ConstructionTests,
    DeliveryTests,
    PriorityTests,
    DelayTests,
    NackTests,
    AutoAckTests,
    LeaseTests,
    PauseResumeTests,
    StateTests,
    StopDestroyTests,
    ConcurrencyTests,
    AtLeastOnceTests,
    ForeignMessageTests,
    RuntimeTests,
):
    """Every conformance test. Subclass it as ``Test<Driver>Conformance`` and set
    ``marker``; the module must define the ``driver_factory`` fixture."""


#: The suite's sections, in order (one mixin class per area).
SECTIONS: tuple[type[SuiteBase], ...] = ConformanceSuite.__bases__


__all__ = [
    "SECTIONS",
    "AtLeastOnceTests",
    "AutoAckTests",
    "ConcurrencyTests",
    "ConformanceSuite",
    "ConstructionTests",
    "DelayTests",
    "DeliveryTests",
    "ForeignMessageTests",
    "LeaseTests",
    "NackTests",
    "PauseResumeTests",
    "PriorityTests",
    "RuntimeTests",
    "StateTests",
    "StopDestroyTests",
    "SuiteBase",
]
