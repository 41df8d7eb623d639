"""The conformance suite (:mod:`rrjobs.testing`) against the ``memory`` driver.

Memory has no broker outside the process: nothing can publish into it but
the driver (``wire = False``: the foreign and poison tests push the same
bodies and headers and check they arrive as pushed), a second driver never
shares its queue (``shared_broker = False``: the tests check that it gets
nothing), and it declares no durability, leases or dead letters (the tests
check the refusals and that nothing outlives a stop or a dead consumer).
"""

from __future__ import annotations

from typing import Any

import pytest

from rrjobs.drivers.memory import MemoryConstructor
from rrjobs.testing import ConformanceSuite, DriverFactory


class MemoryFactory(DriverFactory):
    """Memory pipelines: jobs live in the driver, nothing shares them."""

    driver = "memory"
    constructor = MemoryConstructor
    shared_broker = False
    wire = False
    roadrunner_layout = False
    quiet_period = 0.2
    delay_unit = 0.3
    delay_tolerance = 2.0
    test_timeout = 30.0

    def prefetch_options(self, jobs: int) -> dict[str, Any]:
        return {"prefetch": jobs}

    async def dead_letter_options(self, name: str) -> dict[str, Any]:
        # Kept by the driver itself; the suite reads them back as `rrjobs dlq list` does.
        return {"dead_letter_size": 100}


@pytest.fixture
def driver_factory() -> MemoryFactory:
    return MemoryFactory()


class TestMemoryConformance(ConformanceSuite):
    marker = "memory"
