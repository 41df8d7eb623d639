"""The AMQP driver's frame fast path reads what aiormq and pamqp read."""

from __future__ import annotations

import asyncio
import datetime
import decimal
from typing import Any

import pytest
from aiormq import spec
from aiormq.connection import FrameReceiver
from aiormq.exceptions import InvalidFrameError
from pamqp import frame as pamqp_frame
from pamqp.body import ContentBody
from pamqp.header import ContentHeader
from pamqp.heartbeat import Heartbeat

from rrjobs.drivers.amqp import codec
from rrjobs.drivers.amqp.receiver import (
    RawContentHeader,
    header_table,
    install_fast_receiver,
)

codec.install_typed_encoding()
install_fast_receiver()

NOW = datetime.datetime(2026, 12, 4, 21, 0, 5, tzinfo=datetime.UTC)

TABLES: list[dict[str, Any]] = [
    codec.pack("0f" * 16, "jobs.ünicode", "pipe-1", {"trace": ["a", "ü"]}, 7, -3, True),
    {
        "s": "text",
        "e": "",
        "b": True,
        "f": False,
        "bytes": bytearray(b"\x00\xff"),
        "l": codec.Long(-(2**40)),
        "i": codec.SignedInt(-7),
        "d": codec.Double(2.5),
        "small": 10,
        "mid": 40_000,
        "neg": -200,
        "big": 2**40,
        "v": None,
        "float": 1.25,
    },
    {"k" * 128: "long key", "ü": "ä"},
    {"when": NOW, "dec": decimal.Decimal("1.50"), "list": [1, "a"], "nested": {"a": 1}},
    {},
]


def content_header(headers: dict[str, Any] | None, **props: Any) -> bytes:
    """A content header frame as pamqp writes it."""
    properties = spec.Basic.Properties(headers=headers, **props)
    return pamqp_frame.marshal(ContentHeader(properties=properties, body_size=5), 3)


def decoded(raw: bytes) -> tuple[int, int, Any]:
    return pamqp_frame.unmarshal(raw)


@pytest.mark.parametrize("headers", TABLES)
@pytest.mark.parametrize(
    "props",
    [
        {
            "content_type": codec.CONTENT_TYPE,
            "delivery_mode": 2,
            "timestamp": NOW,
            "message_id": "ab" * 16,
            "priority": 3,
        },
        {"content_type": "a/b", "content_encoding": "gzip"},
        {},
    ],
)
def test_header_table_is_pamqps(headers: dict[str, Any], props: dict[str, Any]) -> None:
    raw = content_header(headers, **props)
    _, _, expected = decoded(raw)
    header = RawContentHeader(raw[7:-1])
    assert header.body_size == 5
    table = header_table(header)
    assert table == expected.properties.headers
    assert [type(v) for v in (table or {}).values()] == [
        type(v) for v in (expected.properties.headers or {}).values()
    ]
    # the lazy properties are pamqp's too
    assert header.properties == expected.properties


def test_header_without_headers() -> None:
    raw = content_header(None, content_type="a/b")
    assert header_table(RawContentHeader(raw[7:-1])) is None


def test_non_utf8_long_string_is_bytes_as_in_pamqp() -> None:
    raw = bytearray(content_header({"k": "xx"}))
    at = raw.index(b"Sxx"[:1] + b"\x00\x00\x00\x02xx")
    raw[at + 5 : at + 7] = b"\xff\xfe"
    _, _, expected = decoded(bytes(raw))
    assert header_table(RawContentHeader(bytes(raw[7:-1]))) == {"k": b"\xff\xfe"}
    assert expected.properties.headers == {"k": b"\xff\xfe"}


def test_plain_header_falls_back_to_its_properties() -> None:
    header = ContentHeader(properties=spec.Basic.Properties(headers={"a": "b"}))
    assert header_table(header) == {"a": "b"}


def frames() -> list[bytes]:
    body = b"x" * 300
    return [
        pamqp_frame.marshal(spec.Basic.Deliver("ctag-ü", 2**40 + 3, True, "ex", "rk.1"), 3),
        content_header(TABLES[0], content_type=codec.CONTENT_TYPE, delivery_mode=2),
        pamqp_frame.marshal(ContentBody(body), 3),
        pamqp_frame.marshal(spec.Basic.Deliver("", 1, False, "", ""), 5),
        pamqp_frame.marshal(spec.Basic.Ack(delivery_tag=9, multiple=True), 1),
        pamqp_frame.marshal(Heartbeat(), 0),
        pamqp_frame.marshal(
            spec.Channel.Close(reply_code=404, reply_text="no", class_id=50, method_id=10), 2
        ),
    ]


def same(got: tuple[int, int, Any], want: tuple[int, int, Any]) -> None:
    assert got[:2] == want[:2]
    frame, expected = got[2], want[2]
    assert type(expected).__name__ == type(frame).__name__ or isinstance(frame, type(expected))
    if isinstance(expected, ContentHeader):
        assert frame.body_size == expected.body_size
        assert frame.properties == expected.properties
    elif isinstance(expected, ContentBody):
        assert frame.value == expected.value
    elif isinstance(expected, Heartbeat):
        assert isinstance(frame, Heartbeat)
    else:
        assert dict(frame) == dict(expected)


def receiver(data: bytes, *, eof: bool = True) -> FrameReceiver:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    rec = FrameReceiver(reader)
    rec.started = True
    return rec


async def test_frames_from_the_buffer_are_pamqps() -> None:
    raw = frames()
    rec = receiver(b"".join(raw))
    got = [await rec.get_frame() for _ in raw]
    for one, want in zip(got, raw, strict=True):
        same(one, decoded(want))
    assert isinstance(got[1][2], RawContentHeader)  # cut from the buffer, not by aiormq
    with pytest.raises(StopAsyncIteration):
        await rec.get_frame()


async def test_a_frame_arriving_in_pieces_is_read_by_aiormq() -> None:
    raw = frames()
    data = b"".join(raw)
    reader = asyncio.StreamReader()
    rec = FrameReceiver(reader)
    rec.started = True

    async def feed() -> None:
        for i in range(0, len(data), 7):
            reader.feed_data(data[i : i + 7])
            await asyncio.sleep(0)
        reader.feed_eof()

    feeder = asyncio.create_task(feed())
    got = [await rec.get_frame() for _ in raw]
    await feeder
    for one, want in zip(got, raw, strict=True):
        same(one, decoded(want))


async def test_a_broken_frame_end_is_aiormqs_error() -> None:
    raw = bytearray(frames()[0])
    raw[-1] = 0
    with pytest.raises(InvalidFrameError):
        await receiver(bytes(raw)).get_frame()


async def test_deliver_decoded_here_is_a_deliver() -> None:
    _, channel, frame = await receiver(frames()[0]).get_frame()
    assert channel == 3
    assert isinstance(frame, spec.Basic.Deliver)
    assert (
        frame.consumer_tag,
        frame.delivery_tag,
        frame.redelivered,
        frame.exchange,
        frame.routing_key,
    ) == ("ctag-ü", 2**40 + 3, True, "ex", "rk.1")


def test_install_is_idempotent() -> None:
    patched = FrameReceiver.get_frame
    install_fast_receiver()
    assert FrameReceiver.get_frame is patched
