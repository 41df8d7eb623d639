"""``rrjobs dlq`` on a Pub/Sub pipeline: its dead letters are the messages of the
subscription the driver keeps on ``dead_letter_topic`` (same id as the topic).
Pub/Sub has no browse: a :class:`~rrjobs.core.deadletters.HeldStore`, whose
receives pull and hold (``ModifyAckDeadline``), whose deletes acknowledge, and
whose releases give back (deadline 0).
"""

from __future__ import annotations

import warnings
from typing import Any

from google.pubsub_v1 import PullResponse

from rrjobs.core.deadletters import HOLD, DeadLetter, HeldStore, failed_at_text
from rrjobs.drivers.pubsub import codec

#: Messages per Pull and ack ids per request (Pub/Sub's limit).
PULL_MAX = 1000


async def pull_now(subscriber: Any, subscription: str, max_messages: int,
                   **options: Any) -> Any:
    """One ``Pull`` that returns at once (the raw ``PullResponse`` protobuf); ``options``:
    further call options (the driver's ``timeout``)."""
    with warnings.catch_warnings():
        # return_immediately is deprecated in favour of streaming pull, which
        # the asyncio GAPIC client does not offer; Pub/Sub still honours it.
        warnings.simplefilter("ignore", DeprecationWarning)
        response = await subscriber.pull(subscription=subscription, max_messages=max_messages,
                                         return_immediately=True, retry=None, **options)
    return PullResponse.pb(response)


class DeadLetterSubscription(HeldStore[str]):
    """The :class:`~rrjobs.core.deadletters.DeadLetterStore` of ``pipeline``: its
    letters in ``subscription``, through the driver's GAPIC ``subscriber``; a
    message's handle is its ack id."""

    release_max = PULL_MAX

    def __init__(self, subscriber: Any, subscription: str, pipeline: str,
                 priority: int) -> None:
        super().__init__(pipeline, priority)
        self.subscriber = subscriber
        self.subscription = subscription

    async def receive(self) -> list[tuple[str, float, DeadLetter]]:
        received = (await pull_now(self.subscriber, self.subscription, PULL_MAX)
                    ).received_messages
        if received:
            await self._deadline([rm.ack_id for rm in received], HOLD)
        return [(rm.ack_id, *self._letter(rm.message)) for rm in received]

    def _letter(self, m: Any) -> tuple[float, DeadLetter]:
        sent = m.publish_time.seconds + m.publish_time.nanos / 1e9
        def read() -> DeadLetter:
            d = codec.decode(dict(m.attributes), self.priority)
            return DeadLetter.of(d.id, d.name, m.data, d.headers, self.pipeline, d.priority,
                                 failed_at_text(sent))
        return sent, DeadLetter.read(read, m.message_id, m.data, self.pipeline)

    async def _deadline(self, ack_ids: list[str], seconds: int) -> None:
        await self.subscriber.modify_ack_deadline(
            subscription=self.subscription, ack_ids=ack_ids, ack_deadline_seconds=seconds)

    async def delete(self, handle: str) -> None:
        await self.subscriber.acknowledge(subscription=self.subscription, ack_ids=[handle])

    async def release(self, handles: list[str]) -> None:
        await self._deadline(handles, 0)
