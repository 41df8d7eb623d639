"""The kafka record layout: RoadRunner's, plus rr_id / rr_headers / attempts (no broker)."""

from __future__ import annotations

import json
import random
import struct
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from rrjobs.core.headers import DEDUCED_BY_RR, RR_ATTEMPTS
from rrjobs.drivers.kafka.codec import (
    ENCODER_CACHE,
    RecordEncoder,
    decode,
    decode_fields,
    decode_priority,
    encode_priority,
    key_partition,
    murmur2,
)


def encode(*, id: str, name: str, payload: bytes, pipeline: str, priority: int,
           headers: Any, auto_ack: bool = False, extra: Any = ()) -> SimpleNamespace:
    """A job's record, by an encoder of its own (nothing cached yet)."""
    key, value, out = RecordEncoder(pipeline).record(id, name, payload, priority, headers,
                                                      auto_ack, extra)
    return SimpleNamespace(key=key, value=value, headers=out)


def test_roadrunner_layout_is_written() -> None:
    rec = encode(id="job-1", name="app.Job", payload=b"\x00body", pipeline="p1", priority=7,
                 headers={"single": ["v"], RR_ATTEMPTS: ["2"]})
    assert rec.key == b"job-1"
    assert rec.value == b"\x00body"
    got = dict(rec.headers)
    assert got["rr_job"] == b"app.Job"
    assert got["rr_pipeline"] == b"p1"
    assert got["rr_priority"] == struct.pack("<Q", 7)
    assert len(got["rr_priority"]) == 8  # shorter makes RoadRunner panic
    assert got["single"] == b"v"
    assert got[RR_ATTEMPTS] == b"2"  # the attempt count travels as a header RoadRunner sees
    assert got["rr_id"] == b"job-1"
    assert "rr_headers" not in got  # one value per header: RoadRunner's layout says it all


def test_several_values_per_header_travel_in_rr_headers() -> None:
    headers = {"multi": ["a", "b"], "empty": [], "one": ["x"]}
    rec = encode(id="i", name="n", payload=b"", pipeline="p", priority=1, headers=headers)
    got = dict(rec.headers)
    assert got["multi"] == b"a"  # RoadRunner's first-value header is still there
    assert json.loads(got["rr_headers"]) == headers
    back = decode(rec.key, rec.value, rec.headers, 10)
    assert back.headers == headers


def test_round_trip() -> None:
    rec = encode(id="id-9", name="ünï.job", payload=bytes(range(256)), pipeline="p",
                 priority=3, headers={"k": ["v1", "v2"], "z": ["zürich"]}, auto_ack=True)
    job = decode(rec.key, rec.value, rec.headers, 10)
    assert (job.id, job.name, job.priority, job.auto_ack) == ("id-9", "ünï.job", 3, True)
    assert decode_fields(rec.key, rec.value, rec.headers, 10)[2] == bytes(range(256))
    assert job.headers == {"k": ["v1", "v2"], "z": ["zürich"]}


def test_roadrunner_record_is_read() -> None:
    headers = [("attempts", b"1"), ("rr_job", b"php.Job"), ("rr_pipeline", b"other"),
               ("rr_priority", struct.pack("<Q", 4))]
    job = decode(b"rr-id", b"payload", headers, 10)
    assert (job.id, job.name, job.priority, job.auto_ack) == ("rr-id", "php.Job", 4, False)
    assert job.headers == {"attempts": ["1"]}


def test_foreign_record_is_deduced_by_rr() -> None:
    job = decode(None, None, [("x", b"1"), ("x", b"2"), ("bin", b"\xff")], 6)
    assert job.name == DEDUCED_BY_RR
    uuid.UUID(job.id)
    assert decode_fields(None, None, [("x", b"1")], 6)[2] == b""
    assert job.priority == 6
    assert job.headers == {"x": ["1", "2"], "bin": ["\ufffd"]}
    assert decode(None, b"", [], 6).id != job.id


def test_priority_encodings() -> None:
    assert decode_priority(encode_priority(0), 10) == 10  # 0 inherits, as RoadRunner
    assert decode_priority(encode_priority(2**40), 10) == 2**40
    assert decode_priority(b"5", 10) == 5
    assert decode_priority(b"\x01\x02", 10) == 10
    assert decode_priority(None, 3) == 3


def test_the_encoder_writes_the_same_records_as_encode() -> None:
    encoder = RecordEncoder("p1")
    cases: list[dict[str, Any]] = [
        {"headers": {}},
        {"headers": {}, "priority": -3},
        {"headers": {"single": ["v"], RR_ATTEMPTS: ["2"]}, "auto_ack": True},
        {"headers": {"multi": ["a", "b"], "empty": []}},
        {"headers": {}, "extra": [("rr_due", b"123"), ("rr_target_topic", b"t")]},
    ]
    for case in cases * 2:  # the second round reads the cached header values
        want = encode(id="job-1", name="app.Job", payload=b"body", pipeline="p1",
                      priority=case.get("priority", 7), headers=case["headers"],
                      auto_ack=case.get("auto_ack", False), extra=case.get("extra", ()))
        key, value, headers = encoder.record("job-1", "app.Job", b"body",
                                             case.get("priority", 7), case["headers"],
                                             case.get("auto_ack", False), case.get("extra", ()))
        assert (key, value, headers) == (want.key, want.value, want.headers)
    # a plain job: exactly RoadRunner's headers plus rr_id, in this order
    assert encoder.record("i", "n", bytearray(b"x"), 10, {}) == (
        b"i", b"x", [("rr_id", b"i"), ("rr_job", b"n"), ("rr_pipeline", b"p1"),
                     ("rr_priority", struct.pack("<Q", 10))])


def test_the_encoder_cache_is_bounded_and_never_changes_a_record() -> None:
    encoder = RecordEncoder("p")
    for i in range(ENCODER_CACHE + 50):
        key, _, headers = encoder.record(f"id{i}", f"job{i}", b"", i, {})
        assert key == f"id{i}".encode()
        assert dict(headers)["rr_job"] == f"job{i}".encode()
        assert dict(headers)["rr_priority"] == struct.pack("<Q", i)
    assert len(encoder._names) == len(encoder._priorities) == ENCODER_CACHE


_RECORDS: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]] = [
    # rrjobs' plain record, with and without auto_ack, priority 0 and a bad one
    (b"k", b"v", [("rr_id", b"id-1"), ("rr_job", b"j"), ("rr_pipeline", b"p"),
                  ("rr_priority", struct.pack("<Q", 4))]),
    (b"k", b"v", [("rr_id", b"id-1"), ("rr_job", b"j"), ("rr_pipeline", b"p"),
                  ("rr_priority", struct.pack("<Q", 0))]),
    (b"k", b"v", [("rr_id", b"id-1"), ("rr_job", b"j"), ("rr_pipeline", b"p"),
                  ("rr_priority", b"\x01\x02")]),
    (b"k", b"v", [("rr_id", b"id-1"), ("rr_job", b"j"), ("rr_pipeline", b"p"),
                  ("rr_priority", struct.pack("<q", -2)), ("rr_auto_ack", b"TRUE")]),
    (b"k", None, [("rr_id", b"id-1"), ("rr_job", b"\xffj"), ("rr_pipeline", b"p"),
                  ("rr_priority", b"12")]),
    # the same four keys, in another order or with empty values
    (b"k", b"v", [("rr_job", b"j"), ("rr_id", b"id-1"), ("rr_pipeline", b"p"),
                  ("rr_priority", b"")]),
    (b"key", b"v", [("rr_id", b""), ("rr_job", None), ("rr_pipeline", b"p"),
                    ("rr_priority", None)]),
    (None, b"v", [("rr_id", None), ("rr_job", b"j"), ("rr_pipeline", b"p"),
                  ("rr_priority", b"")]),
    # RoadRunner's records, with and without job headers
    (b"rr", b"v", [("rr_job", b"php.Job"), ("rr_pipeline", b"o"),
                   ("rr_priority", struct.pack("<Q", 3))]),
    (b"rr", b"v", [("attempts", b"1"), ("rr_job", b"php.Job"), ("rr_pipeline", b"o"),
                   ("rr_priority", struct.pack("<Q", 3))]),
    # job headers, rr_headers, repeated keys, foreign records
    (b"k", b"v", [("a", b"1"), ("rr_headers", b'{"a":["1","2"]}'), ("rr_id", b"i"),
                  ("rr_job", b"j"), ("rr_pipeline", b"p"), ("rr_priority", b"")]),
    (b"k", b"v", [("rr_id", b"i"), ("rr_id", b"i2"), ("rr_job", b"j"),
                  ("rr_pipeline", b"p")]),
    (b"k", b"v", [("x", b"1"), ("x", b"2"), ("bin", b"\xff"), ("y", None)]),
    (b"k", b"v", [("rr_auto_ack", b"true")]),
]


def test_decode_fields_reads_what_decode_reads() -> None:
    for key, value, headers in _RECORDS:
        for default in (10, 1):
            want = decode(key, value, headers, default)
            got = decode_fields(key, value, tuple(headers), default)
            if key is None and not dict(headers).get("rr_id"):
                assert uuid.UUID(got[0]) and got[0] != want.id  # a fresh id each time
                got = (want.id, *got[1:])
            assert got == (want.id, want.name, value or b"", want.headers, want.priority,
                           want.auto_ack), (key, value, headers)


def test_decoded_headers_are_a_new_dict_per_job() -> None:
    headers = (("rr_id", b"i"), ("rr_job", b"j"), ("rr_pipeline", b"p"),
               ("rr_priority", b""))
    first, second = decode_fields(b"k", b"", headers, 1), decode_fields(b"k", b"", headers, 1)
    first[3]["h"] = ["mutated"]
    assert second[3] == {}


def test_murmur2_is_kafkas() -> None:
    """Java's ``Utils.murmur2`` test vectors (signed there)."""
    vectors = {b"21": -973932308, b"foobar": -790332482,
               b"a-little-bit-long-string": -985981536,
               b"a-little-bit-longer-string": -1486304829,
               b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
               b"abc": 479470107}
    for data, want in vectors.items():
        assert murmur2(data) == want & 0xFFFFFFFF


def test_key_partition_matches_aiokafkas_default_partitioner() -> None:
    partitioner = pytest.importorskip("aiokafka.partitioner")
    rng = random.Random(3)
    for count in (1, 2, 3, 7, 16):
        partitions = list(range(count))
        for n in range(0, 60):
            key = rng.randbytes(n)
            assert murmur2(key) == partitioner.murmur2(key)
            assert key_partition(key, partitions) == partitioner.DefaultPartitioner()(
                key, partitions, partitions)
    assert key_partition(b"anything", [5]) == 5
