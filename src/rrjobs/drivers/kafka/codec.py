"""The Kafka record layout: RoadRunner's, plus what RoadRunner lacks.

RoadRunner's Kafka driver (reference §5.3, §10) writes:

* record key = the job id, value = the payload;
* one header per job header with its **first** value only;
* ``rr_job`` and ``rr_pipeline`` (UTF-8), and ``rr_priority`` as an **8-byte
  little-endian** integer (a shorter value makes RoadRunner panic: always 8).

rrjobs writes exactly that, so RoadRunner consumes rrjobs' records, and adds:

* ``rr_id``: the job id (also the key; a key may be repartitioned or absent);
* ``rr_headers``: every header with all its values, as JSON (only when a
  header has other than one value, or its first value cannot be a header);
* ``rr_auto_ack``: ``"true"`` for an ``auto_ack`` job;
* the attempt count travels as the ``rr_attempts`` job header, so RoadRunner
  sees it too.

Reading accepts rrjobs' records, RoadRunner's, and foreign records: no
``rr_job`` makes the job ``deduced_by_rr``; the id comes from ``rr_id``, else
the key, else a fresh uuid; headers from ``rr_headers``, else from the record
headers (a key repeated in the record collects every value in order).

Pure functions, no aiokafka import: headers are ``(key, bytes)`` pairs.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rrjobs.core.headers import (
    DEDUCED_BY_RR,
    RR_AUTO_ACK,
    RR_DELAY,
    RR_HEADERS,
    RR_ID,
    RR_JOB,
    RR_PIPELINE,
    RR_PRIORITY,
    Headers,
)
from rrjobs.core.message import new_id

#: Delay-topic headers (see :mod:`rrjobs.drivers.kafka.delays`).
RR_DUE = "rr_due"
RR_TARGET_TOPIC = "rr_target_topic"
RR_TARGET_PARTITION = "rr_target_partition"

#: Record headers that are metadata, never job headers.
META_HEADERS = frozenset({RR_ID, RR_JOB, RR_PIPELINE, RR_PRIORITY, RR_HEADERS, RR_AUTO_ACK,
                          RR_DELAY, RR_DUE, RR_TARGET_TOPIC, RR_TARGET_PARTITION})

RecordHeaders = list[tuple[str, bytes]]

_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")


def encode_priority(priority: int) -> bytes:
    """``rr_priority``: 8 bytes, little-endian (RoadRunner reads a uint64)."""
    if priority < 0:
        return _I64.pack(priority)
    return _U64.pack(priority)


def decode_priority(raw: bytes | None, default: int) -> int:
    """A priority from ``rr_priority``: 8 bytes LE; tolerates decimal text;
    anything else (or 0) gives ``default``."""
    if not raw:
        return default
    value: int | None = None
    if len(raw) == 8:
        value = _I64.unpack(raw)[0]
    else:
        try:
            value = int(raw.decode("ascii").strip())
        except (UnicodeDecodeError, ValueError):
            value = None
    return value if value else default


def _text(raw: bytes | None) -> str:
    return "" if raw is None else raw.decode("utf-8", "replace")


@dataclass(slots=True)
class Encoded:
    """A job as a Kafka record."""

    key: bytes
    value: bytes
    headers: RecordHeaders


def encode(*, id: str, name: str, payload: bytes, pipeline: str, priority: int,
           headers: Headers, auto_ack: bool = False,
           extra: Sequence[tuple[str, bytes]] = ()) -> Encoded:
    """The record of a job (``extra``: further metadata headers, e.g. a delay's)."""
    out: RecordHeaders = []
    multi = False
    for key, values in headers.items():
        if key in META_HEADERS:
            continue
        if len(values) != 1:
            multi = True
        if values:
            out.append((key, values[0].encode()))
    if multi:
        out.append((RR_HEADERS, json.dumps(headers, ensure_ascii=False,
                                           separators=(",", ":")).encode()))
    out.append((RR_ID, id.encode()))
    out.append((RR_JOB, name.encode()))
    out.append((RR_PIPELINE, pipeline.encode()))
    out.append((RR_PRIORITY, encode_priority(priority)))
    if auto_ack:
        out.append((RR_AUTO_ACK, b"true"))
    out.extend(extra)
    return Encoded(id.encode(), bytes(payload), out)


@dataclass(slots=True)
class Decoded:
    """A record as a job."""

    id: str
    name: str
    payload: bytes
    headers: Headers
    priority: int
    auto_ack: bool
    meta: dict[str, bytes]


def decode(key: bytes | None, value: bytes | None,
           headers: Iterable[tuple[str, bytes | None]], default_priority: int) -> Decoded:
    """The job in a record written by rrjobs, RoadRunner or anyone else."""
    meta: dict[str, bytes] = {}
    plain: Headers = {}
    for hkey, hvalue in headers:
        if hkey in META_HEADERS:
            meta[hkey] = hvalue or b""
        else:
            plain.setdefault(hkey, []).append(_text(hvalue))
    job_headers = plain
    raw_json = meta.get(RR_HEADERS)
    if raw_json:
        try:
            decoded = json.loads(raw_json.decode("utf-8", "replace"))
        except ValueError:
            decoded = None
        if isinstance(decoded, dict):
            job_headers = {str(k): [str(x) for x in v] if isinstance(v, list) else [str(v)]
                           for k, v in decoded.items()}
            for hkey, vals in plain.items():
                job_headers.setdefault(hkey, vals)
    ident = _text(meta.get(RR_ID)) or _text(key) or new_id()
    name = _text(meta.get(RR_JOB)) or DEDUCED_BY_RR
    priority = decode_priority(meta.get(RR_PRIORITY), default_priority)
    auto_ack = _text(meta.get(RR_AUTO_ACK)).lower() == "true"
    return Decoded(ident, name, value or b"", job_headers, priority, auto_ack, meta)
