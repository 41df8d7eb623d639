"""``rrjobs dlq`` on an SQS pipeline: its dead letters are the messages of the
dead-letter queue of its ``RedrivePolicy``. SQS has no browse: a
:class:`~rrjobs.core.deadletters.HeldStore`, whose receives hold each message's
visibility, whose deletes remove it, and whose releases make it visible again.
"""

from __future__ import annotations

from typing import Any

from rrjobs.core.deadletters import HOLD, DeadLetter, HeldStore, failed_at_text
from rrjobs.drivers.sqs import codec

#: The most messages one receive asks for (SQS's limit).
RECEIVE_MAX = 10


class RedriveQueue(HeldStore[str]):
    """The :class:`~rrjobs.core.deadletters.DeadLetterStore` of ``pipeline``: its
    letters in the queue at ``url``, through the aiobotocore SQS ``client``;
    a message's handle is its receipt handle."""

    release_max = RECEIVE_MAX

    def __init__(self, client: Any, url: str, pipeline: str, priority: int) -> None:
        super().__init__(pipeline, priority)
        self.client = client
        self.url = url

    async def receive(self) -> list[tuple[str, float, DeadLetter]]:
        reply = await self.client.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=RECEIVE_MAX, VisibilityTimeout=HOLD,
            WaitTimeSeconds=1, MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"])
        return [(str(m["ReceiptHandle"]), *self.letter(m)) for m in reply.get("Messages") or []]

    def letter(self, m: Any) -> tuple[float, DeadLetter]:
        """When message ``m`` was sent, and its letter (an unreadable one: its raw
        body, named by its message id)."""
        sent = int((m.get("Attributes") or {}).get("SentTimestamp") or 0) / 1000

        def read() -> DeadLetter:
            d = codec.decode(m, self.priority)
            return DeadLetter.of(d.id, d.name, d.payload, d.headers, self.pipeline, d.priority,
                                 failed_at_text(sent) if sent else "")
        return sent, DeadLetter.read(read, str(m.get("MessageId", "")),
                                     str(m.get("Body", "")).encode(), self.pipeline)

    async def delete(self, handle: str) -> None:
        await self.client.delete_message(QueueUrl=self.url, ReceiptHandle=handle)

    async def release(self, handles: list[str]) -> None:
        entries = [{"Id": str(n), "ReceiptHandle": r, "VisibilityTimeout": 0}
                   for n, r in enumerate(handles)]
        await self.client.change_message_visibility_batch(QueueUrl=self.url, Entries=entries)
