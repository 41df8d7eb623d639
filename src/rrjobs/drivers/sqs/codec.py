"""RoadRunner's SQS wire format (reference §10), both ways, plus rrjobs' own
``rr_encoding`` (a payload that is not SQS text travels in base64; an empty
one as ``empty``) and ``rr_delay_remaining`` (the delay left after this hop's
``DelaySeconds``). The layout, and how foreign messages and SQS system
attributes are read, is in ``docs/drivers/sqs.md`` ("Wire format").

Pure functions: no I/O, safe from any task.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rrjobs.core import headers as rr
from rrjobs.core.errors import PayloadTooLargeError
from rrjobs.core.fields import RR_FIELDS, JobFields, as_int, job_fields
from rrjobs.core.headers import DEDUCED_BY_RR, Headers, headers_json, normalize_headers

RR_ENCODING = "rr_encoding"
RR_DELAY_REMAINING = "rr_delay_remaining"

#: The SQS message size limit: body plus attribute names, types and values.
MAX_MESSAGE_SIZE = 256 * 1024
#: Bytes kept for the attributes (id, name, headers) under ``MAX_MESSAGE_SIZE``.
ATTRIBUTE_RESERVE = 8 * 1024
#: The largest payload the driver accepts: base64 (4/3) must still fit.
MAX_PAYLOAD = (MAX_MESSAGE_SIZE - ATTRIBUTE_RESERVE) * 3 // 4
#: Body of an empty payload (SQS refuses an empty body).
EMPTY_BODY = "-"

#: Characters SQS refuses in a message body.
_NOT_SQS_TEXT = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")

#: System attributes SQS adds on receive: headers on delivery, never re-sent.
SYSTEM_ATTRIBUTES = frozenset({
    "ApproximateReceiveCount", "ApproximateFirstReceiveTimestamp", "SentTimestamp",
    "SenderId", "MessageDeduplicationId", "MessageGroupId", "SequenceNumber",
    "AWSTraceHeader", "DeadLetterQueueSourceArn",
})


@dataclass(frozen=True, slots=True)
class Encoded:
    """One message ready for ``SendMessage``: body, attributes and its SQS size."""

    body: str
    attributes: dict[str, dict[str, Any]]
    size: int


def _string(value: str) -> dict[str, Any]:
    return {"DataType": "String", "StringValue": value}


def body_of(payload: bytes) -> tuple[str, str | None]:
    """``(body, rr_encoding)`` for ``payload``: as text when SQS can carry it."""
    if not payload:
        return EMPTY_BODY, "empty"
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is not None and not _NOT_SQS_TEXT.search(text):
        return text, None
    return base64.b64encode(payload).decode("ascii"), "base64"


def attribute_size(attributes: Mapping[str, Mapping[str, Any]]) -> int:
    """Bytes the attributes count toward the SQS message size."""
    size = 0
    for name, attr in attributes.items():
        size += len(name.encode()) + len(str(attr["DataType"]).encode())
        if "BinaryValue" in attr:
            size += len(attr["BinaryValue"])
        else:
            size += len(str(attr.get("StringValue", "")).encode())
    return size


def encode(*, id: str, name: str, payload: bytes, headers: Headers, priority: int,
           delay: int, auto_ack: bool, remaining: int = 0) -> Encoded:
    """The body and attributes RoadRunner writes for a job (plus rrjobs' own).

    ``delay`` is the whole delay (``rr_delay``), ``remaining`` the part left
    after this hop's ``DelaySeconds``. Raises :class:`PayloadTooLargeError`
    when the message would exceed 256 KiB.
    """
    body, encoding = body_of(payload)
    clean = {k: list(v) for k, v in headers.items() if k not in SYSTEM_ATTRIBUTES}
    attributes: dict[str, dict[str, Any]] = {
        rr.RR_ID: _string(id),
        rr.RR_JOB: _string(name or DEDUCED_BY_RR),
        rr.RR_DELAY: _string(str(delay)),
        rr.RR_AUTO_ACK: _string("true" if auto_ack else "false"),
        rr.RR_PRIORITY: {"DataType": "Number", "StringValue": str(priority)},
        rr.RR_HEADERS: {"DataType": "Binary", "BinaryValue": headers_json(clean).encode()},
    }
    if encoding is not None:
        attributes[RR_ENCODING] = _string(encoding)
    if remaining > 0:
        attributes[RR_DELAY_REMAINING] = {"DataType": "Number", "StringValue": str(remaining)}
    size = len(body.encode()) + attribute_size(attributes)
    if size > MAX_MESSAGE_SIZE:
        raise PayloadTooLargeError(
            f"sqs: message of {size} bytes (body and attributes) exceeds the SQS maximum "
            f"of {MAX_MESSAGE_SIZE} bytes")
    return Encoded(body, attributes, size)


# -- decoding ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Decoded(JobFields):
    """The job fields of one received message, with what SQS adds."""

    payload: bytes = b""
    #: seconds of the delay still to wait (a delay longer than SQS's 15 minutes hops)
    remaining: int = 0
    #: the message has no ``rr_id``: a foreign producer's
    foreign: bool = False


def _attr_text(attr: Mapping[str, Any]) -> str:
    if "StringValue" in attr:
        return str(attr["StringValue"])
    raw = attr.get("BinaryValue", b"")
    if isinstance(raw, str):
        return raw
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(bytes(raw)).decode("ascii")


def payload_of(body: str, encoding: str | None) -> bytes:
    """The payload of a body written with ``rr_encoding`` (or plain text)."""
    if encoding == "empty":
        return b""
    if encoding == "base64":
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return body.encode("utf-8")
    return body.encode("utf-8")


def decode(message: Mapping[str, Any], default_priority: int) -> Decoded:
    """The job in a received SQS message (RoadRunner's, rrjobs' or foreign).

    Raises ``ValueError`` (:class:`~rrjobs.core.headers.BadHeadersError` for a
    JSON value that is not headers) when ``rr_headers`` cannot be read: the
    driver dead-letters such a message."""
    attrs: Mapping[str, Mapping[str, Any]] = message.get("MessageAttributes") or {}

    def text(name: str) -> str | None:
        attr = attrs.get(name)
        return None if attr is None else _attr_text(attr)

    foreign = not text(rr.RR_ID)
    raw_headers = attrs.get(rr.RR_HEADERS)
    carried = None if raw_headers is None else raw_headers.get(
        "BinaryValue", raw_headers.get("StringValue"))
    headers = normalize_headers({k: _attr_text(v) for k, v in attrs.items()
                                 if k not in RR_FIELDS and k != RR_ENCODING}) if (
        foreign and raw_headers is None) else {}
    for key, value in (message.get("Attributes") or {}).items():
        headers[key] = [str(value)]
    f = job_fields(ident=text(rr.RR_ID), name=text(rr.RR_JOB), priority=text(rr.RR_PRIORITY),
                   auto_ack=text(rr.RR_AUTO_ACK), delay=text(rr.RR_DELAY), carried=carried,
                   headers=headers, default_priority=default_priority)
    return Decoded(f.id, f.name, f.headers, f.priority, f.auto_ack, f.delay,
                   payload=payload_of(str(message.get("Body", "")), text(RR_ENCODING)),
                   remaining=max(0, as_int(text(RR_DELAY_REMAINING)) or 0), foreign=foreign)
