"""The conformance suite: one base class per area, and :class:`ConformanceSuite`
that inherits them all.

A driver's test module subclasses :class:`ConformanceSuite` and provides the
``driver_factory`` fixture; see :mod:`rrjobs.testing.factory`. Every driver
runs every section: a test whose behaviour depends on a capability checks the
behaviour where the driver declares it and the driver's refusal where it does
not, so nothing is skipped. A single section (or a few) can still be
subclassed on its own, e.g. to run the nack section again with a dead-letter
configuration.
"""

from __future__ import annotations

from rrjobs.testing.suite.base import SuiteBase
from rrjobs.testing.suite.concurrency import AtLeastOnceTests, ConcurrencyTests
from rrjobs.testing.suite.concurrent_lifecycle import (
    ConcurrentLifecycleTests,
    ConcurrentRuntimeLifecycleTests,
)
from rrjobs.testing.suite.construction import ConstructionTests
from rrjobs.testing.suite.dead_letter_metadata import DeadLetterMetadataTests
from rrjobs.testing.suite.delay_rounding import DelayRoundingTests
from rrjobs.testing.suite.delays import DelayTests
from rrjobs.testing.suite.delivery import DeliveryTests
from rrjobs.testing.suite.foreign import ForeignMessageTests
from rrjobs.testing.suite.lease_race import SettleDuringLeaseExtensionTests
from rrjobs.testing.suite.lifecycle import PauseResumeTests, StateTests, StopDestroyTests
from rrjobs.testing.suite.poison import (
    PoisonBodyTests,
    PoisonHeaderTests,
    assert_poison_or_foreign,
)
from rrjobs.testing.suite.priority import PriorityTests
from rrjobs.testing.suite.runtime import RuntimeTests
from rrjobs.testing.suite.settlement import AutoAckTests, LeaseTests, NackTests
from rrjobs.testing.suite.supervision import SupervisedTaskTests


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
    DeadLetterMetadataTests,
    SettleDuringLeaseExtensionTests,
    ConcurrentLifecycleTests,
    ConcurrentRuntimeLifecycleTests,
    PoisonBodyTests,
    PoisonHeaderTests,
    DelayRoundingTests,
    SupervisedTaskTests,
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
    "ConcurrentLifecycleTests",
    "ConcurrentRuntimeLifecycleTests",
    "ConformanceSuite",
    "ConstructionTests",
    "DeadLetterMetadataTests",
    "DelayRoundingTests",
    "DelayTests",
    "DeliveryTests",
    "ForeignMessageTests",
    "LeaseTests",
    "NackTests",
    "PauseResumeTests",
    "PoisonBodyTests",
    "PoisonHeaderTests",
    "PriorityTests",
    "RuntimeTests",
    "SettleDuringLeaseExtensionTests",
    "StateTests",
    "StopDestroyTests",
    "SuiteBase",
    "SupervisedTaskTests",
    "assert_poison_or_foreign",
]
