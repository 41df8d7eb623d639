"""RoadRunner's AMQP wire layout: the ``rr_*`` header table, with explicit field types.

The table and why its types matter are in ``docs/drivers/amqp.md`` (Wire
format). pamqp, the encoder under aio-pika, picks the *smallest* integer type
for a Python ``int`` (``b`` for 10, ``u`` for 40000), which RoadRunner misreads
or refuses; so the integers this driver writes are wrapped in :class:`Long`,
:class:`SignedInt` or :class:`Double`, which :func:`install_typed_encoding`
teaches pamqp to write with exactly their type. Reading is lenient
(:mod:`rrjobs.core.fields`).
"""

from __future__ import annotations

import datetime
import decimal
import logging
from collections.abc import Mapping
from typing import Any

from rrjobs.core import headers as rr
from rrjobs.core.fields import RR_FIELDS, JobFields, as_text, job_fields
from rrjobs.core.headers import Headers

log = logging.getLogger("rrjobs.drivers.amqp")

#: Per-message routing key (PHP's ``Header::ROUTING_KEY``): removed from the job
#: headers and used instead of the pipeline's ``routing_key``.
X_ROUTING_KEY = "x-routing-key"
#: RabbitMQ's dead-letter history (an array of tables): not flattened into job headers.
X_DEATH = "x-death"
CONTENT_TYPE = "application/octet-stream"

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


class Long(int):
    """An integer written as a 64-bit signed field (``l``)."""

    __slots__ = ()


class SignedInt(int):
    """An integer written as a 32-bit signed field (``I``)."""

    __slots__ = ()


class Double(float):
    """A float written as a 64-bit double field (``d``)."""

    __slots__ = ()


def install_typed_encoding() -> None:
    """Make pamqp encode :class:`Long`, :class:`SignedInt` and :class:`Double`
    with their own field type, by wrapping ``pamqp.encode.encode_table_value``
    once per process. Idempotent; other values are encoded unchanged."""
    from pamqp import encode

    current = encode.encode_table_value
    if getattr(current, "_rrjobs_typed", False):
        return

    typed = {Long: (b"l", encode.long_long_int), SignedInt: (b"I", encode.long_int),
             Double: (b"d", encode.double)}

    def encode_table_value(value: Any) -> bytes:
        kind = typed.get(type(value))
        return current(value) if kind is None else kind[0] + kind[1](value)

    encode_table_value._rrjobs_typed = True  # type: ignore[attr-defined]
    encode.encode_table_value = encode_table_value


def typed_argument(value: Any) -> Any:
    """A queue argument as RoadRunner (Go) writes it: ints as ``I`` (``l`` when
    they do not fit in 32 bits), floats as ``d``; other values unchanged."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return SignedInt(value) if INT32_MIN <= value <= INT32_MAX else Long(value)
    if isinstance(value, float):
        return Double(value)
    return value


def typed_arguments(args: Mapping[str, Any]) -> dict[str, Any]:
    return {k: typed_argument(v) for k, v in args.items()}


def pack(job_id: str, name: str, pipeline: str, headers: Headers, delay_s: int, priority: int,
         auto_ack: bool) -> dict[str, Any]:
    """The AMQP header table of a job, RoadRunner's layout with RoadRunner's types."""
    encoded = rr.headers_json(headers).encode()
    return {
        rr.RR_ID: job_id,
        rr.RR_JOB: name,
        rr.RR_PIPELINE: pipeline,
        rr.RR_HEADERS: bytearray(encoded),
        rr.RR_DELAY: SignedInt(min(max(delay_s, 0), INT32_MAX)),
        rr.RR_PRIORITY: Long(priority),
        rr.RR_AUTO_ACK: bool(auto_ack),
    }


def split_routing_key(headers: Headers, default: str) -> tuple[Headers, str]:
    """Remove ``x-routing-key`` from ``headers``; the routing key to publish with
    (as RoadRunner: the header's when it holds exactly one non-empty value)."""
    values = headers.get(X_ROUTING_KEY)
    if values is None:
        return headers, default
    rest = {k: v for k, v in headers.items() if k != X_ROUTING_KEY}
    return rest, values[0] if len(values) == 1 and values[0] else default


def _convert(out: Headers, key: str, value: Any) -> None:
    """One AMQP header value as job header strings (RoadRunner's ``convHeaders``)."""
    if isinstance(value, bool):
        out[key] = ["true" if value else "false"]
    elif isinstance(value, int | decimal.Decimal):
        out.setdefault(key, []).append(str(value))
    elif isinstance(value, float):
        out.setdefault(key, []).append(f"{value:.5f}")
    elif isinstance(value, str | bytes | bytearray):
        out.setdefault(key, []).append(as_text(value))
    elif isinstance(value, datetime.datetime):
        stamp = value if value.tzinfo else value.replace(tzinfo=datetime.UTC)
        out.setdefault(key, []).append(stamp.isoformat(timespec="seconds").replace("+00:00", "Z"))
    elif isinstance(value, list):
        for item in value:
            _convert(out, key, item)
    elif isinstance(value, dict):
        for inner, item in value.items():
            _convert(out, str(inner), item)
    elif value is not None:
        log.warning("AMQP header %r has a value of unknown type %s; ignored",
                    key, type(value).__name__)


def unpack(table: Mapping[str, Any] | None, default_priority: int) -> JobFields:
    """The job fields of a delivery's AMQP header table (:mod:`rrjobs.core.fields`).

    Job headers are every AMQP header that is not an ``rr_*`` field (converted
    to strings as RoadRunner does, except RabbitMQ's ``x-death`` table), with
    the ``rr_headers`` JSON merged on top.
    """
    table = table or {}
    headers: Headers = {}
    for key, value in table.items():
        if key not in RR_FIELDS and key != X_DEATH:
            _convert(headers, key, value)
    get = table.get
    return job_fields(ident=get(rr.RR_ID), name=get(rr.RR_JOB), priority=get(rr.RR_PRIORITY),
                      auto_ack=get(rr.RR_AUTO_ACK), delay=get(rr.RR_DELAY),
                      carried=get(rr.RR_HEADERS), headers=headers,
                      default_priority=default_priority)
