"""The ``google_pub_sub`` driver's job: the core job plus Pub/Sub's delivery attempt."""

from __future__ import annotations

from rrjobs.core.job import Job


class PubSubJob(Job):
    """A message pulled from the pipeline's subscription; ``handle`` is its ack id.

    Attributes:
        delivery_attempt: Pub/Sub's delivery attempt (0 unless the subscription
            has a dead-letter policy).
    """

    __slots__ = ("delivery_attempt",)
    delivery_attempt: int
