"""``rrjobs dlq`` on an SQS pipeline: its dead letters are the messages of the
dead-letter queue of its ``RedrivePolicy``.

SQS has no browse: each operation receives the queue's messages (their
visibility held for :data:`HOLD` seconds, so no other consumer gets them
meanwhile) until a receive comes back empty, orders them by when they were sent,
deletes what it replays or purges, and makes every other message visible again
at once. Messages of other pipelines sharing the queue (their
``rr_original_pipeline``) are left alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from rrjobs.core.deadletters import (
    DeadLetter,
    Replay,
    failed_at_text,
    find_scanned,
    first_scanned,
    take_scanned,
)
from rrjobs.drivers.sqs import codec

#: Seconds a received dead letter stays invisible while an operation runs.
HOLD = 60
#: The most messages one receive asks for (SQS's limit).
RECEIVE_MAX = 10


async def _over(items: Sequence[tuple[str, DeadLetter]]
                ) -> AsyncIterator[tuple[str, DeadLetter]]:
    for item in items:
        yield item


class RedriveQueue:
    """The :class:`~rrjobs.core.deadletters.DeadLetterStore` of ``pipeline``: its
    letters in the queue at ``url``, through the aiobotocore SQS ``client``."""

    def __init__(self, client: Any, url: str, pipeline: str, priority: int) -> None:
        self.client = client
        self.url = url
        self.pipeline = pipeline
        self.priority = priority

    def _letter(self, message: dict[str, Any]) -> DeadLetter:
        d = codec.decode(message, self.priority)
        sent = (message.get("Attributes") or {}).get("SentTimestamp")
        return DeadLetter.of(d.id, d.name, d.payload, d.headers, self.pipeline, d.priority,
                             failed_at_text(int(sent) / 1000) if sent else "")

    @contextlib.asynccontextmanager
    async def _held(self) -> AsyncIterator[tuple[list[tuple[str, DeadLetter]], set[str]]]:
        """This pipeline's letters as ``(receipt handle, letter)``, oldest first, and
        the receipts held; those still held at the end are made visible again."""
        receipts: set[str] = set()
        letters: list[tuple[float, str, DeadLetter]] = []
        try:
            while True:
                reply = await self.client.receive_message(
                    QueueUrl=self.url, MaxNumberOfMessages=RECEIVE_MAX, VisibilityTimeout=HOLD,
                    WaitTimeSeconds=1, MessageAttributeNames=["All"],
                    MessageSystemAttributeNames=["All"])
                messages = reply.get("Messages") or []
                if not messages:
                    break
                for m in messages:
                    receipt = str(m["ReceiptHandle"])
                    receipts.add(receipt)
                    letter = self._letter(m)
                    if letter.pipeline == self.pipeline:
                        sent = float((m.get("Attributes") or {}).get("SentTimestamp") or 0)
                        letters.append((sent, receipt, letter))
            letters.sort(key=lambda item: item[0])
            yield [(receipt, letter) for _, receipt, letter in letters], receipts
        finally:
            await self._release(sorted(receipts))

    async def _release(self, receipts: Sequence[str]) -> None:
        for start in range(0, len(receipts), RECEIVE_MAX):
            entries = [{"Id": str(n), "ReceiptHandle": r, "VisibilityTimeout": 0}
                       for n, r in enumerate(receipts[start:start + RECEIVE_MAX])]
            with contextlib.suppress(Exception):  # they come back after HOLD anyway
                await self.client.change_message_visibility_batch(QueueUrl=self.url,
                                                                  Entries=entries)

    async def list_dead_letters(self, limit: int) -> list[DeadLetter]:
        async with self._held() as (letters, _):
            return await first_scanned(_over(letters), limit)

    async def peek_dead_letter(self, id: str) -> DeadLetter | None:
        async with self._held() as (letters, _):
            return await find_scanned(_over(letters), id)

    async def take_dead_letters(self, ids: Sequence[str] | None,
                                replay: Replay) -> list[str]:
        async with self._held() as (letters, receipts):

            async def remove(receipt: str) -> None:
                await self.client.delete_message(QueueUrl=self.url, ReceiptHandle=receipt)
                receipts.discard(receipt)

            return await take_scanned(_over(letters), ids, replay, remove)

    async def purge_dead_letters(self) -> int:
        async with self._held() as (letters, receipts):
            for receipt, _ in letters:
                await self.client.delete_message(QueueUrl=self.url, ReceiptHandle=receipt)
                receipts.discard(receipt)
            return len(letters)
