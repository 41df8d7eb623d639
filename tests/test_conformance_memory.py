"""The conformance suite (:mod:`rrjobs.testing`) against the ``memory`` driver.

Memory has no broker outside the process: nothing can publish into it but
the driver, a second driver never shares its queue, and it declares no
durability, leases or dead letters. Those tests are skipped with that reason;
the rest, including the "refuses what it cannot do" tests, run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from rrjobs import Message
from rrjobs.drivers.memory import MemoryConstructor
from rrjobs.testing import ConformanceSuite, DriverFactory, HookUnsupported, Pipe

NO_WIRE = "memory has no broker and no wire format: only its driver can put jobs in"


class MemoryFactory(DriverFactory):
    """Memory pipelines: jobs live in the driver, nothing shares them."""

    driver = "memory"
    constructor = MemoryConstructor
    shared_broker = False
    quiet_period = 0.2
    delay_unit = 0.3
    delay_tolerance = 2.0
    test_timeout = 30.0

    def prefetch_options(self, jobs: int) -> dict[str, Any]:
        return {"prefetch": jobs}

    async def publish_raw(self, pipe: Pipe, body: bytes, headers: Mapping[str, str]) -> None:
        raise HookUnsupported(NO_WIRE)

    async def publish_roadrunner(self, pipe: Pipe, msg: Message) -> None:
        raise HookUnsupported(NO_WIRE)

    async def dead_letter_options(self, name: str) -> dict[str, Any]:
        raise HookUnsupported("memory keeps no dead letters: a pipeline's retry.dead_letter "
                              "(another pipeline) is where its failed jobs go")


@pytest.fixture
def driver_factory() -> MemoryFactory:
    return MemoryFactory()


class TestMemoryConformance(ConformanceSuite):
    marker = "memory"
