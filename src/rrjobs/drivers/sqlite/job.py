"""The sqlite driver's job: a reserved row of the database file."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rrjobs.core.capabilities import Capabilities
from rrjobs.core.headers import Headers
from rrjobs.core.job import Job

if TYPE_CHECKING:
    from rrjobs.drivers.sqlite.driver import SQLiteDriver


class SQLiteJob(Job):
    """A job reserved from the database; each settlement is one committed write.

    * ``ack``: the row is deleted.
    * ``nack(requeue=False)``: deleted, or moved to the dead-letter table when
      the pipeline has ``dead_letter: true``.
    * ``nack(requeue=True, delay)`` and ``requeue(headers, delay)``: the row
      goes back to the end of its pipeline (new FIFO position), with the
      (merged) headers, ready after ``delay`` (millisecond precision).
    * ``extend_lease(s)``: the reservation lasts at least ``s`` more seconds.

    ``nack``, ``requeue`` and ``extend_lease`` return once their write has
    committed; ``ack`` once its delete is queued (it commits with the next
    group: should the process die first, the job is delivered again). After
    the pipeline has stopped they raise
    :class:`~rrjobs.core.errors.PipelineStateError` (the job was returned to
    the queue and will be delivered again); on a job whose lease ran out (it
    was delivered again) :class:`~rrjobs.core.errors.AckLostError`.

    Attributes:
        seq: the row's sequence number (FIFO order, unique in the file).
        delivery: how many times the row has been reserved, this time included.
        lease: the reservation lease in seconds (the worker pool extends it
            while a handler runs).
    """

    __slots__ = ("_driver", "delivery", "lease", "seq")
    driver_name = "sqlite"

    def __init__(self, driver: SQLiteDriver, seq: int, delivery: int, lease: float, id: str,
                 name: str, payload: bytes, headers: Headers, pipeline: str, priority: int,
                 auto_ack: bool) -> None:
        self._set_fields(id, name, payload, headers, pipeline, priority, auto_ack)
        self._driver = driver
        self.seq = seq
        self.delivery = delivery
        self.lease = lease

    @property
    def capabilities(self) -> Capabilities:
        return self._driver.capabilities

    def queue_name(self) -> str:
        return self.pipeline

    async def ack(self) -> None:
        """:meth:`Job.ack`, with the delete queued inline (no coroutine for
        ``_ack`` on the hot path)."""
        if self.settled is None:
            self.settled = "ack"
            self._driver.settle_ack(self)
            return
        await super().ack()  # an auto_ack job's no-op, or JobAlreadySettledError

    async def _ack(self) -> None:
        self._driver.settle_ack(self)

    async def _nack(self, requeue: bool, delay: float) -> None:
        if requeue:
            await self._driver.settle_requeue(self, self.headers, delay)
        else:
            await self._driver.settle_drop(self)

    async def _requeue(self, headers: Headers, delay: float) -> None:
        await self._driver.settle_requeue(self, headers, delay)

    async def extend_lease(self, seconds: float) -> None:
        """Keep the reservation at least ``seconds`` more. Raises
        :class:`~rrjobs.core.errors.AckLostError` if it was lost."""
        await self._driver.extend(self, seconds)


class BoltDBJob(SQLiteJob):
    """A job of a pipeline configured with the ``boltdb`` alias."""

    __slots__ = ()
    driver_name = "boltdb"
