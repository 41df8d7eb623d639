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
headers (a key repeated in the record collects every value in order), through
:func:`~rrjobs.core.headers.normalize_headers`: an ``rr_headers`` that is not a
JSON object of strings or string lists, or headers over its limits, raise (the
driver turns the record into a failed job).

:class:`RecordEncoder` writes a pipeline's records with the constant header
values encoded once; :func:`decode_fields` reads the common records without
:func:`decode`'s general path (same results). :func:`murmur2` and
:func:`key_partition` place a key on a partition as Kafka's default
partitioner does.

Pure Python, no aiokafka import: headers are ``(key, bytes)`` pairs.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rrjobs.core import headers as rr
from rrjobs.core.fields import RR_FIELDS, JobFields, job_fields
from rrjobs.core.headers import Headers, normalize_headers

#: Delay-topic headers (see :mod:`rrjobs.drivers.kafka.delays`).
RR_DUE = "rr_due"
RR_TARGET_TOPIC = "rr_target_topic"
RR_TARGET_PARTITION = "rr_target_partition"

#: Record headers that are metadata, never job headers.
META_HEADERS = RR_FIELDS | {RR_DUE, RR_TARGET_TOPIC, RR_TARGET_PARTITION}

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


def _job_headers(headers: Headers) -> RecordHeaders:
    """The record headers carrying the job headers: each header with its first value,
    then ``rr_headers`` (JSON, every value) when a header has other than one value."""
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
        out.append((rr.RR_HEADERS, json.dumps(headers, ensure_ascii=False,
                                           separators=(",", ":")).encode()))
    return out


def encode(*, id: str, name: str, payload: bytes, pipeline: str, priority: int,
           headers: Headers, auto_ack: bool = False,
           extra: Sequence[tuple[str, bytes]] = ()) -> Encoded:
    """The record of a job (``extra``: further metadata headers, e.g. a delay's)."""
    key, value, out = RecordEncoder(pipeline).record(id, name, payload, priority, headers,
                                                      auto_ack, extra)
    return Encoded(key, value, out)


#: Distinct job names and priorities a :class:`RecordEncoder` keeps encoded at most.
ENCODER_CACHE = 256


class RecordEncoder:
    """Encodes the jobs of one pipeline, exactly as :func:`encode` does.

    The header values that repeat from job to job are encoded once and shared
    (immutable ``(key, bytes)`` pairs): ``rr_pipeline``, and ``rr_job`` and
    ``rr_priority`` for up to :data:`ENCODER_CACHE` distinct names and priorities.
    Not thread-safe (the driver uses it on the event loop only).
    """

    __slots__ = ("_names", "_pipeline", "_priorities")

    def __init__(self, pipeline: str) -> None:
        self._pipeline: tuple[str, bytes] = (rr.RR_PIPELINE, pipeline.encode())
        self._names: dict[str, tuple[str, bytes]] = {}
        self._priorities: dict[int, tuple[str, bytes]] = {}

    def record(self, id: str, name: str, payload: bytes | bytearray | memoryview,
               priority: int, headers: Headers, auto_ack: bool = False,
               extra: Sequence[tuple[str, bytes]] = ()) -> tuple[bytes, bytes, RecordHeaders]:
        """``(key, value, headers)`` of a job's record (the value is ``bytes``)."""
        key = id.encode()
        job = self._names.get(name)
        if job is None:
            job = (rr.RR_JOB, name.encode())
            if len(self._names) < ENCODER_CACHE:
                self._names[name] = job
        prio = self._priorities.get(priority)
        if prio is None:
            prio = (rr.RR_PRIORITY, encode_priority(priority))
            if len(self._priorities) < ENCODER_CACHE:
                self._priorities[priority] = prio
        value = payload if type(payload) is bytes else bytes(payload)
        if not (headers or auto_ack or extra):
            return key, value, [(rr.RR_ID, key), job, self._pipeline, prio]
        out = _job_headers(headers) if headers else []
        out += ((rr.RR_ID, key), job, self._pipeline, prio)
        if auto_ack:
            out.append((rr.RR_AUTO_ACK, b"true"))
        out.extend(extra)
        return key, value, out


def decode(key: bytes | None, value: bytes | None,
           headers: Iterable[tuple[str, bytes | None]], default_priority: int) -> JobFields:
    """The job fields of a record written by rrjobs, RoadRunner or anyone else
    (:mod:`rrjobs.core.fields`; the record key is the id when there is no ``rr_id``).
    The payload is the record value."""
    meta: dict[str, bytes] = {}
    plain: Headers = {}
    for hkey, hvalue in headers:
        if hkey in META_HEADERS:
            meta[hkey] = hvalue or b""
        else:
            plain.setdefault(hkey, []).append(_text(hvalue))
    return job_fields(ident=meta.get(rr.RR_ID), name=meta.get(rr.RR_JOB),
                      priority=decode_priority(meta.get(rr.RR_PRIORITY), 0),
                      auto_ack=meta.get(rr.RR_AUTO_ACK), carried=meta.get(rr.RR_HEADERS),
                      headers=normalize_headers(plain) if plain else plain,
                      fallback_id=_text(key), default_priority=default_priority)


#: The record headers of a job without job headers: what :func:`decode_fields`
#: reads without :func:`decode`'s general path.
_PLAIN_META = frozenset({rr.RR_ID, rr.RR_JOB, rr.RR_PIPELINE, rr.RR_PRIORITY, rr.RR_AUTO_ACK})
#: ``rr_priority`` values (8 bytes) already read → the priority (0: the default).
_priorities: dict[bytes, int] = {}

DecodedFields = tuple[str, str, bytes, Headers, int, bool]


def _priority(raw: bytes | None, default: int) -> int:
    """:func:`decode_priority`, remembering up to :data:`ENCODER_CACHE` 8-byte values."""
    if not raw:
        return default
    value = _priorities.get(raw)
    if value is None:
        value = decode_priority(raw, 0)
        if len(raw) == 8 and len(_priorities) < ENCODER_CACHE:
            _priorities[raw] = value
    return value or default


def decode_fields(key: bytes | None, value: bytes | None,
                  headers: Sequence[tuple[str, bytes | None]],
                  default_priority: int) -> DecodedFields:
    """What :func:`decode` reads, as ``(id, name, payload, headers, priority,
    auto_ack)``: the same result, cheaper for the common records.

    Those are the records of jobs without job headers: rrjobs writes their
    headers as ``rr_id``, ``rr_job``, ``rr_pipeline``, ``rr_priority`` (read by
    position), and any record whose headers are each one of the metadata keys at
    most once (e.g. RoadRunner's) is read from one ``dict``. Anything else goes
    through :func:`decode`.
    """
    if len(headers) == 4:
        (k0, raw_id), (k1, raw_job), (k2, _), (k3, raw_prio) = headers
        if (raw_id and raw_job and k0 == rr.RR_ID and k1 == rr.RR_JOB and k2 == rr.RR_PIPELINE
                and k3 == rr.RR_PRIORITY):
            return (raw_id.decode("utf-8", "replace"), raw_job.decode("utf-8", "replace"),
                    value or b"", {}, _priority(raw_prio, default_priority), False)
    meta = dict(headers)
    if len(meta) != len(headers) or not meta.keys() <= _PLAIN_META:
        d = decode(key, value, headers, default_priority)
    else:
        d = job_fields(ident=meta.get(rr.RR_ID), name=meta.get(rr.RR_JOB),
                       priority=_priority(meta.get(rr.RR_PRIORITY), 0),
                       auto_ack=meta.get(rr.RR_AUTO_ACK), fallback_id=_text(key),
                       default_priority=default_priority)
    return d.id, d.name, value or b"", d.headers, d.priority, d.auto_ack


# -- the key's partition -------------------------------------------------------------------------

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS: dict[int, struct.Struct] = {}


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of a record key (unsigned 32 bits), as Java's
    ``Utils.murmur2`` and aiokafka's ``DefaultPartitioner`` compute it.

    The key's 4-byte words are read by one ``struct`` call instead of byte by byte.
    """
    length = len(data)
    h = 0x9747B28C ^ length
    words = length >> 2
    if words:
        unpack = _WORDS.get(words)
        if unpack is None:
            unpack = _WORDS[words] = struct.Struct(f"<{words}I")
        m, mask = _M, _MASK
        for k in unpack.unpack_from(data):
            k = (k * m) & mask
            # (a & mask) ^ (b & mask) == (a ^ b) & mask: one mask for both products
            h = ((h * m) ^ ((k ^ (k >> 24)) * m)) & mask
    tail = length & 3
    if tail:
        base = length - tail
        if tail == 3:
            h ^= data[base + 2] << 16
        if tail >= 2:
            h ^= data[base + 1] << 8
        h = ((h ^ data[base]) * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    return h ^ (h >> 15)


def key_partition(key: bytes, partitions: Sequence[int]) -> int:
    """The partition of ``partitions`` (as aiokafka lists a topic's partitions) that
    Kafka's default partitioner picks for ``key``: murmur2, positive, modulo their count."""
    if len(partitions) == 1:
        return partitions[0]
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
