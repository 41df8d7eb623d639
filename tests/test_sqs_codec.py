"""The SQS wire codec (no broker)."""

from __future__ import annotations

import base64
import json
import uuid

import pytest

from rrjobs.core.errors import PayloadTooLargeError
from rrjobs.core.headers import DEDUCED_BY_RR
from rrjobs.drivers.sqs import codec


def _received(enc: codec.Encoded, **system: str) -> dict[str, object]:
    return {"Body": enc.body, "MessageAttributes": enc.attributes, "Attributes": system,
            "ReceiptHandle": "r", "MessageId": "m"}


def test_text_payload_is_roadrunner_layout() -> None:
    enc = codec.encode(id="j1", name="app.Job", payload=b"hello", headers={"a": ["1", "2"]},
                       priority=3, delay=5, auto_ack=True)
    assert enc.body == "hello"
    a = enc.attributes
    assert a["rr_id"] == {"DataType": "String", "StringValue": "j1"}
    assert a["rr_job"] == {"DataType": "String", "StringValue": "app.Job"}
    assert a["rr_delay"] == {"DataType": "String", "StringValue": "5"}
    assert a["rr_auto_ack"] == {"DataType": "String", "StringValue": "true"}
    assert a["rr_priority"] == {"DataType": "Number", "StringValue": "3"}
    assert a["rr_headers"]["DataType"] == "Binary"
    assert json.loads(a["rr_headers"]["BinaryValue"]) == {"a": ["1", "2"]}
    assert codec.RR_ENCODING not in a and codec.RR_DELAY_REMAINING not in a


@pytest.mark.parametrize("payload", [b"", b"\x00nul", b"caf\xe9", bytes(range(256)),
                                     "zürich \U0001f600".encode()])
def test_payloads_round_trip(payload: bytes) -> None:
    enc = codec.encode(id="j", name="n", payload=payload, headers={}, priority=1, delay=0,
                       auto_ack=False)
    assert enc.body  # SQS refuses an empty body
    assert codec.decode(_received(enc), 10).payload == payload


def test_binary_payload_is_base64_and_flagged() -> None:
    enc = codec.encode(id="j", name="n", payload=b"\x00\xff", headers={}, priority=1, delay=0,
                       auto_ack=False)
    assert enc.attributes[codec.RR_ENCODING]["StringValue"] == "base64"
    assert base64.b64decode(enc.body) == b"\x00\xff"


def test_roadrunner_message_decodes() -> None:
    msg = {"Body": "php", "MessageAttributes": {
        "rr_id": {"DataType": "String", "StringValue": "id-1"},
        "rr_job": {"DataType": "String", "StringValue": "php.Job"},
        "rr_priority": {"DataType": "Number", "StringValue": "4"},
        "rr_delay": {"DataType": "String", "StringValue": "0"},
        "rr_auto_ack": {"DataType": "String", "StringValue": "false"},
        "rr_headers": {"DataType": "Binary", "BinaryValue": b'{"x":["1"]}'},
    }, "Attributes": {"ApproximateReceiveCount": "2"}}
    d = codec.decode(msg, 10)
    assert (d.id, d.name, d.payload, d.priority, d.auto_ack, d.foreign) == (
        "id-1", "php.Job", b"php", 4, False, False)
    assert d.headers == {"x": ["1"], "ApproximateReceiveCount": ["2"]}


def test_roadrunner_null_headers_and_missing_priority() -> None:
    msg = {"Body": "b", "MessageAttributes": {
        "rr_id": {"DataType": "String", "StringValue": "id"},
        "rr_headers": {"DataType": "Binary", "BinaryValue": b"null"}}}
    d = codec.decode(msg, 7)
    assert d.headers == {} and d.priority == 7


def test_foreign_message_attributes_become_headers() -> None:
    msg = {"Body": "{}", "MessageAttributes": {
        "kind": {"DataType": "String", "StringValue": "json"},
        "n": {"DataType": "Number", "StringValue": "5"}},
        "Attributes": {"SentTimestamp": "123"}}
    d = codec.decode(msg, 7)
    assert d.foreign and d.name == DEDUCED_BY_RR and d.priority == 7
    uuid.UUID(d.id)
    assert d.headers == {"kind": ["json"], "n": ["5"], "SentTimestamp": ["123"]}


@pytest.mark.parametrize(("text", "priority", "remaining"), [
    ("inf", 7, 0), ("-inf", 7, 0), ("1e400", 7, 0), ("nan", 7, 0), ("abc", 7, 0),
    ("1e30", 2**63 - 1, 2**63 - 1), ("-1e30", -(2**63 - 1), 0), ("3.9", 3, 3),
])
def test_malformed_numbers_do_not_raise(text: str, priority: int, remaining: int) -> None:
    """A foreign ``rr_priority: "inf"`` (a String) once raised ``OverflowError`` in decode."""
    msg = {"Body": "b", "MessageAttributes": {
        "rr_priority": {"DataType": "String", "StringValue": text},
        "rr_delay": {"DataType": "String", "StringValue": text},
        "rr_delay_remaining": {"DataType": "Number", "StringValue": text}}}
    d = codec.decode(msg, 7)
    assert (d.priority, d.remaining) == (priority, remaining)
    assert 0 <= d.delay <= 2**63 - 1  # rrjobs.core.fields: clamped, never negative


def test_system_attributes_are_not_sent_again() -> None:
    enc = codec.encode(id="j", name="n", payload=b"p",
                       headers={"ApproximateReceiveCount": ["3"], "k": ["v"]}, priority=1,
                       delay=0, auto_ack=False)
    assert json.loads(enc.attributes["rr_headers"]["BinaryValue"]) == {"k": ["v"]}


def test_remaining_delay_attribute() -> None:
    enc = codec.encode(id="j", name="n", payload=b"p", headers={}, priority=1, delay=2000,
                       auto_ack=False, remaining=1100)
    assert enc.attributes[codec.RR_DELAY_REMAINING] == {"DataType": "Number",
                                                        "StringValue": "1100"}
    assert codec.decode(_received(enc), 1).remaining == 1100


def test_max_payload_fits_and_more_is_refused() -> None:
    enc = codec.encode(id=str(uuid.uuid4()), name="n", payload=b"\xff" * codec.MAX_PAYLOAD,
                       headers={"h": ["v"]}, priority=1, delay=0, auto_ack=False)
    assert enc.size <= codec.MAX_MESSAGE_SIZE
    with pytest.raises(PayloadTooLargeError):
        codec.encode(id="j", name="n", payload=b"a" * (codec.MAX_MESSAGE_SIZE + 1), headers={},
                     priority=1, delay=0, auto_ack=False)


def test_unreadable_headers_fail_decoding() -> None:
    """Garbage ``rr_headers`` (or a nested foreign attribute) is a decode error: the
    driver turns the message into a failed, dead-lettered job."""
    for raw in (b"not json", b"[1, 2]", b'{"a": {"nested": 1}}'):
        with pytest.raises(ValueError):
            codec.decode({"Body": "x", "MessageAttributes": {
                "rr_id": {"DataType": "String", "StringValue": "j"},
                "rr_headers": {"DataType": "Binary", "BinaryValue": raw}}}, 1)


def test_delays_are_whole_seconds_rounded_up() -> None:
    """The driver declares whole seconds; the kit's rounding never delivers early."""
    from rrjobs.core.delays import delay_units
    from rrjobs.drivers.sqs.config import SQSOptions
    from rrjobs.drivers.sqs.driver import capabilities_for

    caps = capabilities_for(SQSOptions(), dead_letter=False)
    assert caps.delay_granularity == 1.0
    assert [delay_units(d, caps.delay_granularity) for d in (0, 0.2, 1.0, 1.0000001, 900.5)] == [
        0, 1, 1, 2, 901]
