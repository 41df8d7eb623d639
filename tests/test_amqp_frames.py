"""The AMQP driver's hand-written publish frames are byte for byte pamqp's."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from aiormq import spec
from pamqp import frame as pamqp_frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader

from rrjobs.drivers.amqp import codec
from rrjobs.drivers.amqp.frames import PublishFrames, Unsupported, ack_frames, table

codec.install_typed_encoding()

NOW = datetime.datetime(2026, 12, 4, 21, 0, 5, 123456, tzinfo=datetime.UTC)


def pamqp_publish(channel: int, max_content: int, body: bytes, exchange: str,
                  routing_key: str, props: spec.Basic.Properties) -> bytes:
    frames: list[Any] = [spec.Basic.Publish(exchange=exchange, routing_key=routing_key,
                                            mandatory=True),
                         ContentHeader(properties=props, body_size=len(body))]
    frames += [ContentBody(body[i:i + max_content]) for i in range(0, len(body), max_content)]
    return b"".join(pamqp_frame.marshal(f, channel) for f in frames)


def job_props(**extra: Any) -> spec.Basic.Properties:
    headers = {"trace": ["a", "ü"], "x": []}
    table_ = codec.pack("0f" * 16, "jobs.ünicode", "pipe-1", headers, 7, -3, True)
    props = spec.Basic.Properties(content_type=codec.CONTENT_TYPE, delivery_mode=2,
                                  timestamp=NOW, headers=table_,
                                  message_id="ab" * 16)
    for key, value in extra.items():
        setattr(props, key, value)
    return props


CASES = {
    "job": (job_props(), b'{"id": 1}'),
    "priority": (job_props(priority=9), b"x" * 100),
    "priority 0": (job_props(priority=0), b"x"),
    "empty body": (job_props(), b""),
    "split body": (job_props(), bytes(range(256)) * 40),
    "body of exactly one frame": (job_props(), b"y" * 4088),
    "naive timestamp": (job_props(timestamp=datetime.datetime(2020, 1, 2, 3, 4, 5)), b"b"),
    "dead-letter strings and double": (job_props(headers={
        **job_props().headers, "rr_error": "boom", "ratio": codec.Double(0.25),
        "big": codec.Long(2**40), "flag": False}), b"d"),
    # left to pamqp (a plain int, a nested table, a long key, another property):
    "plain int": (job_props(headers={"n": 40000}), b"p"),
    "nested table": (job_props(headers={"x-death": [{"count": 1, "queue": "q"}]}), b"n"),
    "long key": (job_props(headers={"k" * 200: "v"}), b"k"),
    "other property": (job_props(correlation_id="c-1", app_id="app"), b"o"),
    "no headers": (spec.Basic.Properties(delivery_mode=1), b"z"),
    "empty headers": (spec.Basic.Properties(headers={}), b"z"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_publish_bytes_are_pamqps(case: str) -> None:
    props, body = CASES[case]
    frames = PublishFrames(3, 4088)
    for exchange, key in (("rrjobs", "q"), ("", "delayed-5..q"), ("rrjobs", "q")):
        assert frames.publish(body, exchange, key, props) == pamqp_publish(
            3, 4088, body, exchange, key, props)


def test_table_refuses_what_it_does_not_write() -> None:
    for value in ({"n": 1}, {"t": {"a": "b"}}, {"k" * 129: "v"}, {"b": b"bytes"}):
        with pytest.raises(Unsupported):
            table(value)
    assert table({}) == b"\x00\x00\x00\x00"


def test_method_frames_are_kept_per_exchange_and_key() -> None:
    frames = PublishFrames(1, 100)
    first = frames.method("ex", "a")
    assert frames.method("ex", "a") is first
    assert frames.method("ex", "b") != first


def test_ack_frames_are_pamqps() -> None:
    acks = [(7, True), (9, False), (2**40 + 3, False), (1, True)]
    want = b"".join(pamqp_frame.marshal(spec.Basic.Ack(delivery_tag=tag, multiple=multiple), 12)
                    for tag, multiple in acks)
    assert ack_frames(12, acks) == want
    assert ack_frames(1, []) == b""
