"""The kafka record layout: RoadRunner's, plus rr_id / rr_headers / attempts (no broker)."""

from __future__ import annotations

import json
import struct
import uuid

from rrjobs.core.headers import DEDUCED_BY_RR, RR_ATTEMPTS
from rrjobs.drivers.kafka.codec import decode, decode_priority, encode, encode_priority


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
    assert (job.id, job.name, job.payload, job.priority, job.auto_ack) == (
        "id-9", "ünï.job", bytes(range(256)), 3, True)
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
    assert job.payload == b""
    assert job.priority == 6
    assert job.headers == {"x": ["1", "2"], "bin": ["\ufffd"]}
    assert decode(None, b"", [], 6).id != job.id


def test_priority_encodings() -> None:
    assert decode_priority(encode_priority(0), 10) == 10  # 0 inherits, as RoadRunner
    assert decode_priority(encode_priority(2**40), 10) == 2**40
    assert decode_priority(b"5", 10) == 5
    assert decode_priority(b"\x01\x02", 10) == 10
    assert decode_priority(None, 3) == 3
