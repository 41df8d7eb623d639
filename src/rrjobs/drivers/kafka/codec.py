"""The Kafka record layout ("Record layout" in docs/drivers/kafka.md): RoadRunner's (key =
job id, each job header's first value, ``rr_job``, ``rr_pipeline``, ``rr_priority`` as
**8 bytes little-endian**: shorter makes RoadRunner panic), plus ``rr_id``, ``rr_headers``
and ``rr_auto_ack``. Pure Python, no aiokafka import: headers are ``(key, bytes)`` pairs."""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence

from rrjobs.core import headers as rr
from rrjobs.core.fields import RR_FIELDS, JobFields, as_int, as_text, job_fields
from rrjobs.core.headers import Headers, normalize_headers

#: Delay-topic headers (see :mod:`rrjobs.drivers.kafka.delays`).
RR_DUE = "rr_due"
RR_TARGET_TOPIC = "rr_target_topic"
RR_TARGET_PARTITION = "rr_target_partition"

#: Record headers that are metadata, never job headers.
META_HEADERS = RR_FIELDS | {RR_DUE, RR_TARGET_TOPIC, RR_TARGET_PARTITION}

RecordHeaders = list[tuple[str, bytes]]
#: A record to produce: topic, partition (``None``: the strategy's), key, value, headers.
Record = tuple[str, int | None, bytes, bytes, RecordHeaders]

_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")


def encode_priority(priority: int) -> bytes:
    """``rr_priority``: 8 bytes, little-endian (RoadRunner reads a uint64)."""
    return (_I64 if priority < 0 else _U64).pack(priority)


#: ``rr_priority`` values (8 bytes) already read → the priority (0: the default).
_priorities: dict[bytes, int] = {}


def decode_priority(raw: bytes | None, default: int) -> int:
    """``rr_priority``: 8 bytes LE, or decimal text; anything else (or 0) gives ``default``.
    Up to :data:`ENCODER_CACHE` distinct 8-byte values are remembered."""
    if not raw:
        return default
    value = _priorities.get(raw)
    if value is None:
        if len(raw) != 8:
            return as_int(raw) or default
        value = _I64.unpack(raw)[0]
        if len(_priorities) < ENCODER_CACHE:
            _priorities[raw] = value
    return value or default


def _job_headers(headers: Headers) -> RecordHeaders:
    """Each job header with its first value, then ``rr_headers`` (JSON) if one has not one."""
    job = [(key, values) for key, values in headers.items() if key not in META_HEADERS]
    out: RecordHeaders = [(key, values[0].encode()) for key, values in job if values]
    if any(len(values) != 1 for _, values in job):
        out.append((rr.RR_HEADERS, rr.headers_json(headers).encode()))
    return out


#: Distinct job names and priorities a :class:`RecordEncoder` keeps encoded at most.
ENCODER_CACHE = 256


class RecordEncoder:
    """Encodes a pipeline's jobs (``extra``: further metadata headers, e.g. a delay's), the
    repeated header values (up to :data:`ENCODER_CACHE` distinct ones) encoded once (loop only)."""

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
    """The job fields of any record (:mod:`rrjobs.core.fields`; the record key is the id
    when there is no ``rr_id``; the payload is the record value)."""
    meta: dict[str, bytes] = {}
    plain: Headers = {}
    for hkey, hvalue in headers:
        if hkey in META_HEADERS:
            meta[hkey] = hvalue or b""
        else:
            plain.setdefault(hkey, []).append(as_text(hvalue))
    return job_fields(ident=meta.get(rr.RR_ID), name=meta.get(rr.RR_JOB),
                      priority=decode_priority(meta.get(rr.RR_PRIORITY), 0),
                      auto_ack=meta.get(rr.RR_AUTO_ACK), carried=meta.get(rr.RR_HEADERS),
                      headers=normalize_headers(plain) if plain else plain,
                      fallback_id=as_text(key), default_priority=default_priority)


#: The record headers :func:`decode_fields` reads without :func:`decode`'s general path.
_PLAIN_META = frozenset({rr.RR_ID, rr.RR_JOB, rr.RR_PIPELINE, rr.RR_PRIORITY, rr.RR_AUTO_ACK})
DecodedFields = tuple[str, str, bytes, Headers, int, bool]


def decode_fields(key: bytes | None, value: bytes | None,
                  headers: Sequence[tuple[str, bytes | None]],
                  default_priority: int) -> DecodedFields:
    """What :func:`decode` reads, as ``(id, name, payload, headers, priority, auto_ack)``,
    cheaper for records without job headers (read by position, or from one ``dict``)."""
    if len(headers) == 4:
        (k0, raw_id), (k1, raw_job), (k2, _), (k3, raw_prio) = headers
        if (raw_id and raw_job and k0 == rr.RR_ID and k1 == rr.RR_JOB and k2 == rr.RR_PIPELINE
                and k3 == rr.RR_PRIORITY):
            return (raw_id.decode("utf-8", "replace"), raw_job.decode("utf-8", "replace"),
                    value or b"", {}, decode_priority(raw_prio, default_priority), False)
    meta = dict(headers)
    if len(meta) != len(headers) or not meta.keys() <= _PLAIN_META:
        d = decode(key, value, headers, default_priority)
    else:
        d = job_fields(ident=meta.get(rr.RR_ID), name=meta.get(rr.RR_JOB),
                       priority=decode_priority(meta.get(rr.RR_PRIORITY), 0),
                       auto_ack=meta.get(rr.RR_AUTO_ACK), fallback_id=as_text(key),
                       default_priority=default_priority)
    return d.id, d.name, value or b"", d.headers, d.priority, d.auto_ack


_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS: dict[int, struct.Struct] = {}


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash of a record key (unsigned 32 bits), as Java's ``Utils.murmur2``
    and aiokafka's ``DefaultPartitioner`` compute it (the words read by one ``struct`` call)."""
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
    """The partition of ``partitions`` (as aiokafka lists them) Kafka's default partitioner
    picks for ``key`` (murmur2, positive, modulo their count; no hash for one partition)."""
    if len(partitions) == 1:
        return partitions[0]
    return partitions[(murmur2(key) & 0x7FFFFFFF) % len(partitions)]
