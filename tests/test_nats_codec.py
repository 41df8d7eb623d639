"""The nats driver's message layout (no server): RoadRunner's JSON body and headers."""

from __future__ import annotations

import base64
import json
from types import SimpleNamespace
from typing import Any

import pytest

from rrjobs.core.headers import DEDUCED_BY_RR, BadHeadersError
from rrjobs.core.job import Job
from rrjobs.drivers.nats import codec


def decode(data: bytes, headers: dict[str, str] | None, subject: str, priority: int) -> Job:
    msg: Any = SimpleNamespace(data=data, headers=headers, subject=subject)
    job = codec.decode(None, msg, "p", priority, 30.0)  # type: ignore[arg-type]
    assert job.handle is msg and (job.pipeline, job.lease) == ("p", 30.0)
    return job


def test_body_is_roadrunners_json() -> None:
    body = json.loads(codec.encode_body("id-1", "app.Job", b"\x00\xff", 4, "pipe", False))
    assert body == {"job": "app.Job", "id": "id-1",
                    "payload": base64.b64encode(b"\x00\xff").decode(),
                    "options": {"priority": 4, "pipeline": "pipe", "auto_ack": False,
                                "Queue": ""}}


def test_body_omits_an_empty_pipeline_and_rounds_a_delay_up() -> None:
    options = json.loads(codec.encode_body("i", "j", b"", 1, "", True, delay=1.2))["options"]
    assert options == {"priority": 1, "delay": 2, "auto_ack": True, "Queue": ""}


def test_single_valued_headers_travel_as_nats_headers_only() -> None:
    assert codec.encode_headers({"a": ["1"], "b": ["x y"]}) == {"a": "1", "b": "x y"}


def test_several_values_are_several_header_lines_as_roadrunner_writes() -> None:
    out = codec.encode_headers({"multi": ["1", "2"], "k": ["v"]}, {"rr_due": "9"})
    assert out.items() == [("multi", "1"), ("multi", "2"), ("k", "v"), ("rr_due", "9")]
    assert out == {"multi": "1", "k": "v", "rr_due": "9"}  # the first values, RR's Get
    assert "rr_headers" not in out


def test_header_lines_keep_every_line_of_a_header_block() -> None:
    lines = codec.header_lines(b"NATS/1.0\r\nA: 1\r\nA:2\r\nbad line\r\nB: x y \r\n\r\n")
    assert lines.items() == [("A", "1"), ("A", "2"), ("B", "x y")]
    d = decode(b"raw", lines, "subj", 1)
    assert d.headers == {"A": ["1", "2"], "B": ["x y"], "x-nats-subject": ["subj"]}


def test_headers_a_nats_header_cannot_carry_go_to_rr_headers() -> None:
    headers = {"multi": ["1", "2"], "empty": [], "line": ["a\nb"], "bad key": ["v"]}
    out = codec.encode_headers(headers)
    assert out["multi"] == "1" and "empty" not in out and "bad key" not in out
    assert json.loads(out["rr_headers"]) == headers


def test_subject_header_is_not_written_back() -> None:
    assert codec.encode_headers({"x-nats-subject": ["s"], "k": ["v"]}) == {"k": "v"}


def test_round_trip() -> None:
    headers = {"multi": ["1", "2"], "k": ["v"]}
    data = codec.encode_body("id-9", "n", b"payload", 3, "p", True)
    d = decode(data, codec.encode_headers(headers), "subj", 10)
    assert (d.id, d.name, d.payload, d.priority, d.auto_ack) == ("id-9", "n", b"payload", 3,
                                                                 True)
    assert d.headers == {**headers, "x-nats-subject": ["subj"]}


def test_roadrunner_message_priority_0_inherits_and_null_payload_is_empty() -> None:
    data = json.dumps({"job": "j", "id": "x", "payload": None,
                       "options": {"priority": 0, "auto_ack": False}}).encode()
    d = decode(data, {"h": "v"}, "s", 7)
    assert (d.name, d.id, d.payload, d.priority) == ("j", "x", b"", 7)
    assert d.headers == {"h": ["v"], "x-nats-subject": ["s"]}


def test_foreign_bodies_are_deduced_by_rr() -> None:
    for data in (b"plain", b"{}", b'{"job": 5, "payload": ""}', b'{"job": "a", "payload": "%"}',
                 b"{not json", b""):
        d = decode(data, None, "s", 2)
        assert (d.name, d.payload, d.priority) == (DEDUCED_BY_RR, data, 2), data
        assert d.headers == {"x-nats-subject": ["s"]}


def test_unreadable_rr_headers_fail_decoding_as_on_every_driver() -> None:
    """rrjobs.core.fields: the message becomes a failed job naming the reason."""
    for raw in ("[1]", "{bad", '{"a": {"nested": 1}}'):
        with pytest.raises(BadHeadersError):
            decode(b"x", {"rr_headers": raw, "a": "b"}, "s", 1)


def test_due_header() -> None:
    assert codec.due_ms({"rr_due": "123"}) == 123
    assert codec.due_ms({"rr_due": "x"}) is None
    assert codec.due_ms(None) is None


def test_headers_go_through_the_core_normaliser() -> None:
    with pytest.raises(BadHeadersError):
        decode(b"x", {"rr_headers": '{"k": ["' + "v" * 70_000 + '"]}'}, "s", 1)


def test_a_body_nested_too_deep_raises_for_the_decode_guard() -> None:
    with pytest.raises(RecursionError):
        decode(b'{"job": "j", "payload": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", None,
               "s", 1)
