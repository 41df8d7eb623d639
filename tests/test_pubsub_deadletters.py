"""The Pub/Sub dead-letter reader's view of a pulled message (no emulator): the
letter, its failure time, and a message no job can carry."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from rrjobs.drivers.pubsub.codec import attributes
from rrjobs.drivers.pubsub.deadletters import DeadLetterSubscription
from rrjobs.drivers.pubsub.driver import RawMessage


def reader() -> DeadLetterSubscription:
    return DeadLetterSubscription(None, "projects/p/subscriptions/emails-dlq", "emails", 10)


def message(attrs: dict[str, str]) -> object:
    return RawMessage(data=b'{"a": 1}', attributes=attrs, message_id="m-1",
                      publish_time=Timestamp(seconds=1_700_000_000, nanos=250_000_000))


def test_a_dead_letter_reads_its_headers_and_falls_back_to_the_publish_time() -> None:
    attrs = attributes("job-1", "order", {"rr_attempts": ["3"], "x": ["y"]}, 4, 0, False)
    sent, letter = reader()._letter(message(attrs))
    assert sent == 1_700_000_000.25
    assert (letter.id, letter.name, letter.payload, letter.priority) == (
        "job-1", "order", b'{"a": 1}', 4)
    assert letter.attempts == 3 and letter.headers["x"] == ["y"]
    assert letter.pipeline == "emails" and letter.failed_at == "2023-11-14T22:13:20.250Z"


def test_a_message_no_job_can_carry_is_shown_by_its_message_id() -> None:
    _, letter = reader()._letter(message({"rr_id": "j", "rr_headers": "{not json"}))
    assert letter.id == "m-1" and letter.payload == b'{"a": 1}'
    assert letter.error and letter.pipeline == "emails"
