"""The SQS driver's job: one received message and its receipt handle."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rrjobs.core.capabilities import Capabilities
from rrjobs.core.headers import Headers
from rrjobs.core.job import Job

if TYPE_CHECKING:
    from rrjobs.drivers.sqs.driver import SQSDriver


class SQSJob(Job):
    """A message received from an SQS queue, reserved until ``deadline``.

    * ``ack()`` → ``DeleteMessageBatch``, sent in the background: returns once
      the delete is queued; a refused delete means a redelivery (logged).
    * ``nack()`` → sent to the dead-letter queue of the queue's redrive policy
      (when it has one) and deleted; otherwise deleted (logged). Never retried.
    * ``nack(requeue=True)`` → with ``retain_failed_jobs`` and no delay,
      ``ChangeMessageVisibility(error_visibility_timeout)``; otherwise a copy
      is sent (with the delay) and the original deleted.
    * ``requeue(headers, delay)`` → a copy with the merged headers, then the
      original deleted. If the copy cannot be sent, the original is made
      visible again and the error raised.
    * ``extend_lease(s)`` → ``ChangeMessageVisibility(s)`` (batched).

    After the visibility deadline passed (and was not extended), the receipt
    handle is treated as lost: settling raises
    :class:`~rrjobs.core.errors.AckLostError` and nothing is sent (SQS delivers
    the message again). After the pipeline stopped, settling raises
    :class:`~rrjobs.core.errors.PipelineStateError`.

    Attributes:
        receipt: the receipt handle of this delivery.
        message_id: the SQS message id.
        deadline: ``loop.time()`` at which the reservation ends.
        abandoned: the driver gave the message back (pause expired, stop).
    """

    __slots__ = ("_driver", "abandoned", "deadline", "lease", "message_id", "receipt")
    driver_name = "sqs"

    def __init__(self, driver: SQSDriver, receipt: str, message_id: str, deadline: float,
                 lease: float, *, id: str, name: str, payload: bytes, headers: Headers,
                 pipeline: str, priority: int, auto_ack: bool) -> None:
        self._set_fields(id, name, payload, headers, pipeline, priority, auto_ack)
        self._driver = driver
        self.receipt = receipt
        self.message_id = message_id
        self.deadline = deadline
        self.lease = lease
        self.abandoned = False

    @property
    def capabilities(self) -> Capabilities:
        return self._driver.capabilities

    def queue_name(self) -> str:
        return self._driver.options.queue

    async def _ack(self) -> None:
        await self._driver.settle_delete(self)

    async def _nack(self, requeue: bool, delay: float) -> None:
        if requeue:
            await self._driver.settle_retry(self, delay)
        else:
            await self._driver.settle_dead(self)

    async def _requeue(self, headers: Headers, delay: float) -> None:
        await self._driver.settle_copy(self, headers, delay)

    async def extend_lease(self, seconds: float) -> None:
        """Keep the message invisible for ``seconds`` more (``ChangeMessageVisibility``).

        Raises :class:`~rrjobs.core.errors.AckLostError` when the reservation
        already ended.
        """
        await self._driver.extend(self, seconds)
