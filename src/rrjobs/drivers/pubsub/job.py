"""The ``google_pub_sub`` driver's job: one pulled message of the pipeline's subscription."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rrjobs.core.capabilities import Capabilities
from rrjobs.core.headers import Headers
from rrjobs.core.job import Job

if TYPE_CHECKING:
    from rrjobs.drivers.pubsub.driver import PubSubDriver


class PubSubJob(Job):
    """A message pulled from the pipeline's subscription.

    * ``ack()`` → ``Acknowledge`` (batched per loop tick; returns once queued,
      a failed request is logged and the broker redelivers).
    * ``nack()`` → published to the ``dead_letter_topic`` and acknowledged, or,
      without one, acknowledged and dropped (logged). Never redelivered.
    * ``nack(requeue=True)`` → ``ModifyAckDeadline(0)``: redelivered at once.
    * ``nack(requeue=True, delay)`` → ``ModifyAckDeadline(delay)`` (≤ 600 s): the
      broker redelivers it when the deadline passes; longer delays publish a
      delayed copy and acknowledge the original.
    * ``requeue(headers, delay)`` → a copy with the merged headers is published
      to the topic (``rr_delay`` = delay), then the original is acknowledged.
    * ``extend_lease(s)`` → ``ModifyAckDeadline(min(s, 600))`` (batched).

    Settling after ``stop`` raises
    :class:`~rrjobs.core.errors.PipelineStateError`; settling a job that the
    driver gave back to the broker (pause/stop took it out of the priority
    queue) or whose ack id expired raises
    :class:`~rrjobs.core.errors.AckLostError` (the broker redelivers it).

    Attributes:
        ack_id: the ack id of this delivery.
        message_id: the broker's message id.
        delivery_attempt: Pub/Sub's delivery attempt (0 unless the subscription
            has a dead-letter policy).
        attributes: the message attributes as received.
        lease: the subscription's ack deadline in seconds.
    """

    __slots__ = ("_driver", "ack_id", "attributes", "delivery_attempt", "lease", "message_id")
    driver_name = "google_pub_sub"

    def __init__(self, driver: PubSubDriver, ack_id: str, message_id: str,
                 delivery_attempt: int, attributes: dict[str, str], lease: float, *,
                 id: str, name: str, payload: bytes, headers: Headers, pipeline: str,
                 priority: int, auto_ack: bool) -> None:
        self._set_fields(id, name, payload, headers, pipeline, priority, auto_ack)
        self._driver = driver
        self.ack_id = ack_id
        self.message_id = message_id
        self.delivery_attempt = delivery_attempt
        self.attributes = attributes
        self.lease: float | None = lease

    @property
    def capabilities(self) -> Capabilities:
        return self._driver.capabilities

    def queue_name(self) -> str:
        return self._driver.options.topic

    async def _ack(self) -> None:
        await self._driver.settle_ack(self)

    async def _nack(self, requeue: bool, delay: float) -> None:
        if requeue:
            await self._driver.settle_retry(self, delay)
        else:
            await self._driver.settle_drop(self)

    async def _requeue(self, headers: Headers, delay: float) -> None:
        await self._driver.settle_copy(self, headers, delay)

    async def extend_lease(self, seconds: float) -> None:
        """Keep the message for ``seconds`` more (at most 600 s per call, Pub/Sub's limit)."""
        await self._driver.extend(self, seconds)
