"""The SQS dead-letter reader's view of a received message (no broker): the
letter, its failure time, and a message no job can carry."""

from __future__ import annotations

from typing import Any

from rrjobs.core.headers import UNREADABLE
from rrjobs.drivers.sqs import codec
from rrjobs.drivers.sqs.deadletters import RedriveQueue


class _Client:
    def __init__(self, messages: list[dict[str, Any]]) -> None:
        self.messages = messages

    async def receive_message(self, **_: Any) -> dict[str, Any]:
        return {"Messages": self.messages}


def _good() -> dict[str, Any]:
    enc = codec.encode(id="job-1", name="order", payload=b"hi",
                       headers={"rr_attempts": ["3"]}, priority=4, delay=0, auto_ack=False)
    return {"Body": enc.body, "MessageAttributes": enc.attributes, "MessageId": "m-1",
            "ReceiptHandle": "r-1", "Attributes": {"SentTimestamp": "1700000000250"}}


def _bad() -> dict[str, Any]:
    return {"Body": "raw", "MessageId": "m-2", "ReceiptHandle": "r-2", "MessageAttributes": {
        "rr_id": {"DataType": "String", "StringValue": "j"},
        "rr_headers": {"DataType": "Binary", "BinaryValue": b"{not json"}}}


async def test_an_unreadable_message_is_an_unreadable_letter_and_the_rest_are_read() -> None:
    store = RedriveQueue(_Client([_bad(), _good()]), "url", "emails", 10)
    (h1, sent1, bad), (h2, sent2, good) = await store.receive()
    assert (h1, sent1, bad.id, bad.name, bad.payload) == ("r-2", 0, "m-2", UNREADABLE, b"raw")
    assert bad.error and bad.pipeline == "emails"
    assert (h2, sent2, good.id, good.name, good.payload, good.priority) == (
        "r-1", 1_700_000_000.25, "job-1", "order", b"hi", 4)
    assert good.attempts == 3 and good.failed_at == "2023-11-14T22:13:20.250Z"
