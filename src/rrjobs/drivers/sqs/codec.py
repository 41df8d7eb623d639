"""RoadRunner's SQS wire format (reference §10), both ways.

What RoadRunner writes and reads:

* ``MessageBody`` = the payload as text;
* message attributes ``rr_id``, ``rr_job``, ``rr_delay``, ``rr_auto_ack``
  (String), ``rr_priority`` (Number) and ``rr_headers`` (Binary: the headers
  as JSON, ``{"key": ["v1", "v2"]}``).

rrjobs additions (RoadRunner ignores unknown attributes):

* ``rr_encoding`` = ``base64``: the body is the payload in base64, because
  the payload is not SQS text (SQS bodies are Unicode text without NUL and
  most control characters, and at least one character). An empty payload is
  sent as ``rr_encoding`` = ``empty`` and the body ``-``. A payload that is
  valid SQS text is always sent as is, readable by RoadRunner.
* ``rr_delay_remaining`` (Number): seconds of delay left after the native
  ``DelaySeconds`` (≤ 900) of this hop; see :mod:`rrjobs.drivers.sqs.driver`.

Reading: a message without ``rr_id`` is foreign (``deduced_by_rr``, a fresh
id, its message attributes become headers). SQS system attributes
(``ApproximateReceiveCount``, ``SentTimestamp``, ...) are copied into the
headers, as RoadRunner does; they are left out again when a copy is sent.

Pure functions: no I/O, safe from any task.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from rrjobs.core.errors import PayloadTooLargeError
from rrjobs.core.headers import (
    DEDUCED_BY_RR,
    RR_AUTO_ACK,
    RR_DELAY,
    RR_HEADERS,
    RR_ID,
    RR_JOB,
    RR_PRIORITY,
    Headers,
    normalize_headers,
)

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
        RR_ID: _string(id),
        RR_JOB: _string(name or DEDUCED_BY_RR),
        RR_DELAY: _string(str(delay)),
        RR_AUTO_ACK: _string("true" if auto_ack else "false"),
        RR_PRIORITY: {"DataType": "Number", "StringValue": str(priority)},
        RR_HEADERS: {"DataType": "Binary",
                     "BinaryValue": json.dumps(clean, separators=(",", ":"),
                                               ensure_ascii=False).encode()},
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
class Decoded:
    """The job fields of one received message."""

    id: str
    name: str
    payload: bytes
    headers: Headers
    priority: int
    auto_ack: bool
    delay: int
    remaining: int
    foreign: bool


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


#: Bound of the integer attributes read from a message (absurd values are clamped).
_INT_LIMIT = 2**31 - 1


def _int(attrs: Mapping[str, Mapping[str, Any]], name: str, default: int) -> int:
    attr = attrs.get(name)
    if attr is None:
        return default
    try:
        value = int(float(_attr_text(attr)))
    except (ValueError, OverflowError):  # "abc", "nan", "inf"
        return default
    return max(-_INT_LIMIT, min(_INT_LIMIT, value))


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
    encoding_attr = attrs.get(RR_ENCODING)
    encoding = _attr_text(encoding_attr) if encoding_attr is not None else None
    payload = payload_of(str(message.get("Body", "")), encoding)
    ident_attr = attrs.get(RR_ID)
    ident = _attr_text(ident_attr) if ident_attr is not None else ""
    foreign = not ident
    headers: Headers | None = None
    raw_headers = attrs.get(RR_HEADERS)
    if raw_headers is not None:
        raw = raw_headers.get("BinaryValue", raw_headers.get("StringValue"))
        headers = normalize_headers(json.loads(raw) if raw else None)
    if headers is None:
        headers = {} if not foreign else normalize_headers(
            {k: _attr_text(v) for k, v in attrs.items() if k != RR_ENCODING})
    for key, value in (message.get("Attributes") or {}).items():
        headers[key] = [str(value)]
    name_attr = attrs.get(RR_JOB)
    name = _attr_text(name_attr) if name_attr is not None else ""
    auto = attrs.get(RR_AUTO_ACK)
    priority = _int(attrs, RR_PRIORITY, 0)
    return Decoded(
        id=ident or str(uuid.uuid4()),
        name=name or DEDUCED_BY_RR,
        payload=payload,
        headers=headers,
        priority=priority if priority > 0 else default_priority,
        auto_ack=auto is not None and _attr_text(auto).lower() == "true",
        delay=_int(attrs, RR_DELAY, 0),
        remaining=max(0, _int(attrs, RR_DELAY_REMAINING, 0)),
        foreign=foreign,
    )
