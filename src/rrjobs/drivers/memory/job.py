"""The memory driver's job: settling it updates the driver's counters."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rrjobs.core.capabilities import Capabilities
from rrjobs.core.headers import Headers
from rrjobs.core.job import Job

if TYPE_CHECKING:
    from rrjobs.drivers.memory.driver import MemoryDriver


class MemoryJob(Job):
    """A job held in process memory.

    * ``ack``: done; frees a prefetch slot.
    * ``nack(requeue=False)``: dropped (memory has no dead-letter store; the
      runtime's retry policy dead-letters to a pipeline first when configured).
    * ``nack(requeue=True, delay)`` and ``requeue(headers, delay)``: back to the
      end of the pipeline, after the delay.
    """

    __slots__ = ("_driver",)
    driver_name = "memory"

    def __init__(self, driver: MemoryDriver, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self._driver = driver

    @property
    def capabilities(self) -> Capabilities:
        return self._driver.capabilities

    def queue_name(self) -> str:
        return self.pipeline

    async def _ack(self) -> None:
        self._driver.release(self)

    async def _nack(self, requeue: bool, delay: float) -> None:
        self._driver.release(self)
        if requeue:
            self._driver.redeliver(self, self.headers, delay)

    async def _requeue(self, headers: Headers, delay: float) -> None:
        self._driver.release(self)
        self._driver.redeliver(self, headers, delay)
