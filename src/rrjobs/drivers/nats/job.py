"""The nats driver's job: one JetStream delivery of a pull consumer."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rrjobs.core.capabilities import Capabilities
from rrjobs.core.headers import Headers
from rrjobs.core.job import Job

if TYPE_CHECKING:
    from rrjobs.drivers.nats.driver import NATSDriver


class NATSJob(Job):
    """A message delivered by the pipeline's durable pull consumer.

    * ``ack()`` → ``+ACK`` (then ``DeleteMsg`` with ``delete_after_ack``).
    * ``nack()`` → published to ``dead_letter_subject`` when configured
      (returns once JetStream stored it), otherwise dropped (logged); then
      ``+TERM``: JetStream never redelivers it. If the dead-letter copy cannot
      be published the original is ``-NAK``-ed and the error raised.
    * ``nack(requeue=True)`` → ``-NAK``: redelivered at once, unchanged.
    * ``nack(requeue=True, delay)`` and ``requeue(headers, delay)`` → a copy
      (merged headers) is published to the subject, or to the delay stream
      when ``delay > 0``; once JetStream stored it the original is acked. If
      the copy cannot be published the original is ``-NAK``-ed and the error
      raised.
    * ``extend_lease()`` → ``+WPI`` (AckProgress): JetStream restarts the
      ``ack_wait`` clock.

    Acks are fire-and-forget publishes that nats-py writes together; one lost
    on the way (connection cut) makes JetStream redeliver after ``ack_wait``:
    at least once. After the pipeline stopped, settling raises
    :class:`~rrjobs.core.errors.PipelineStateError`; with the connection
    closed, :class:`~rrjobs.core.errors.AckLostError`.

    Attributes:
        msg: the nats-py message (its reply subject addresses the delivery).
        lease: ``ack_wait`` in seconds.
    """

    __slots__ = ("_driver", "lease", "msg")
    driver_name = "nats"

    def __init__(self, driver: NATSDriver, msg: Any, lease: float, pipeline: str, id: str,
                 name: str, payload: bytes, headers: Headers, priority: int,
                 auto_ack: bool) -> None:
        self._set_fields(id, name, payload, headers, pipeline, priority, auto_ack)
        self._driver = driver
        self.msg = msg
        self.lease = lease

    @property
    def capabilities(self) -> Capabilities:
        return self._driver.capabilities

    def queue_name(self) -> str:
        """The subject (``queue`` in RoadRunner's context JSON)."""
        return self._driver.options.subject

    async def _ack(self) -> None:
        await self._driver.settle_ack(self)

    async def _nack(self, requeue: bool, delay: float) -> None:
        if not requeue:
            await self._driver.settle_drop(self)
        elif delay > 0:
            await self._driver.settle_copy(self, self.headers, delay)
        else:
            await self._driver.settle_nak(self)

    async def _requeue(self, headers: Headers, delay: float) -> None:
        await self._driver.settle_copy(self, headers, delay)

    async def extend_lease(self, seconds: float) -> None:
        """``+WPI``: JetStream waits ``ack_wait`` again from now (``seconds``
        beyond ``ack_wait`` cannot be had: call again within ``lease``)."""
        await self._driver.progress(self)
