"""The memory driver's job: settling it updates the driver's counters."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rrjobs.core.capabilities import Capabilities
from rrjobs.core.headers import Headers
from rrjobs.core.job import Job

if TYPE_CHECKING:
    from rrjobs.drivers.memory.driver import MemoryDriver

_new = object.__new__


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

    def __init__(self, driver: MemoryDriver, *, id: str, name: str, payload: bytes,
                 headers: Headers, pipeline: str, priority: int, auto_ack: bool = False) -> None:
        self._set_fields(id, name, payload, headers, pipeline, priority, auto_ack)
        self._driver = driver

    @classmethod
    def _make(cls, driver: MemoryDriver, id: str, name: str, payload: bytes, headers: Headers,
              pipeline: str, priority: int, auto_ack: bool) -> MemoryJob:
        """The same as the constructor, positionally: the driver makes one job
        per push, and calling a class with keywords packs a dict every time."""
        job = _new(cls)
        job._set_fields(id, name, payload, headers, pipeline, priority, auto_ack)
        job._driver = driver
        return job

    @property
    def capabilities(self) -> Capabilities:
        return self._driver.capabilities

    def queue_name(self) -> str:
        return self.pipeline

    async def ack(self) -> None:
        """:meth:`Job.ack`, with the memory driver's ``_ack`` done inline (it is
        a counter update: no coroutine for it on the hot path)."""
        if self.settled is None:
            self.settled = "ack"
            self._driver.release(self)
            return
        await super().ack()  # an auto_ack job's no-op, or JobAlreadySettledError

    async def _ack(self) -> None:
        self._driver.release(self)

    async def _nack(self, requeue: bool, delay: float) -> None:
        self._driver.release(self)
        if requeue:
            self._driver.redeliver(self, self.headers, delay)

    async def _requeue(self, headers: Headers, delay: float) -> None:
        self._driver.release(self)
        self._driver.redeliver(self, headers, delay)
