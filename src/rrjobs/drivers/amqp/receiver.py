"""Frames read straight from aiormq's stream buffer; content headers decoded lazily.

aiormq's ``FrameReceiver.get_frame`` reads every frame with three
``readexactly`` calls, a ``BytesIO`` and a lock, then decodes it with pamqp
(all fourteen basic properties and the header table, through a function call
per field). :func:`install_fast_receiver` gives it a fast path, once per
process: when the reader's buffer already holds a whole frame (the usual case
under load) it is cut out of the buffer without awaiting; a ``basic.deliver``
method frame is decoded here, a content header becomes a
:class:`RawContentHeader` whose pamqp properties are decoded only when asked
for, and a body frame is a ``ContentBody``. Every other frame, and every frame
while the buffer is short, a lock is held or the handshake is not done, goes
through aiormq's own ``get_frame`` unchanged. The consumer reads a delivery's
header table with :func:`header_table`, which walks the table's bytes in one
loop and leaves any value type it does not read (decimal, timestamp, array,
nested table) to pamqp, so the table is the one pamqp would return.
"""

from __future__ import annotations

import struct
from typing import Any

import aiormq.connection
from aiormq import spec
from aiormq.exceptions import InvalidFrameError
from pamqp import frame as pamqp_frame
from pamqp.body import ContentBody
from pamqp.exceptions import PAMQPException
from pamqp.header import ContentHeader

_HEAD = struct.Struct(">BHI")  # frame type, channel, payload size
_METHOD_ID = struct.Struct(">HH")
_TAG = struct.Struct(">QB")
_CONTENT = struct.Struct(">HHQH")  # class id, weight, body size, property flags
_U32 = struct.Struct(">I")
_FRAME_END = 0xCE
_METHOD, _HEADER, _BODY = 1, 2, 3
#: flags of the properties before ``headers`` (both short strings), and of ``headers``
_CONTENT_TYPE, _CONTENT_ENCODING, _HEADERS = 0x8000, 0x4000, 0x2000


class RawContentHeader(ContentHeader):
    """A content header kept as its bytes; ``properties`` (pamqp's) is decoded on
    first use."""

    def __init__(self, payload: bytes) -> None:
        self.class_id, self.weight, self.body_size, _ = _CONTENT.unpack_from(payload)
        self.raw = payload
        self._properties: spec.Basic.Properties | None = None

    @property
    def properties(self) -> spec.Basic.Properties:
        props = self._properties
        if props is None:
            offset, flags = ContentHeader._get_flags(self.raw[12:])
            props = spec.Basic.Properties()
            props.unmarshal(flags, self.raw[12 + offset :])
            self._properties = props
        return props

    @properties.setter
    def properties(self, value: spec.Basic.Properties) -> None:
        self._properties = value


def _deliver(payload: bytes) -> spec.Basic.Deliver:
    """A ``basic.deliver`` from its method payload (class and method ids first)."""
    n = payload[4]
    end = 5 + n
    consumer_tag = payload[5:end].decode()
    tag, bits = _TAG.unpack_from(payload, end)
    end += 9
    n = payload[end]
    exchange = payload[end + 1 : end + 1 + n].decode()
    end += 1 + n
    n = payload[end]
    routing_key = payload[end + 1 : end + 1 + n].decode()
    if end + 1 + n != len(payload):
        raise ValueError("basic.deliver: trailing bytes")
    frame = spec.Basic.Deliver.__new__(spec.Basic.Deliver)
    frame.consumer_tag, frame.delivery_tag = consumer_tag, tag
    frame.redelivered, frame.exchange, frame.routing_key = bool(bits & 1), exchange, routing_key
    return frame


def _decode(kind: int, channel: int, payload: bytes, raw: bytes) -> tuple[int, int, Any]:
    if kind == _BODY:
        return len(raw), channel, ContentBody(payload)
    if kind == _HEADER and len(payload) >= 14:
        return len(raw), channel, RawContentHeader(payload)
    if kind == _METHOD and payload[:4] == b"\x00\x3c\x00\x3c":  # basic (60) deliver (60)
        try:
            return len(raw), channel, _deliver(payload)
        except (ValueError, IndexError, struct.error):
            pass  # pamqp says what is wrong with it
    try:
        return pamqp_frame.unmarshal(raw)
    except PAMQPException as exc:
        raise InvalidFrameError(str(exc)) from exc


def install_fast_receiver() -> None:
    """Give aiormq's ``FrameReceiver.get_frame`` the fast path (idempotent)."""
    receiver = aiormq.connection.FrameReceiver
    slow = receiver.get_frame
    if getattr(slow, "_rrjobs_fast", False):
        return

    async def get_frame(self: Any) -> Any:
        reader = self.__dict__.get("reader")
        if reader is not None and self.started and not self.lock.locked():
            buffer = reader._buffer
            if len(buffer) >= 8:
                kind, channel, size = _HEAD.unpack_from(buffer)
                end = 8 + size
                if size and len(buffer) >= end and buffer[end - 1] == _FRAME_END:
                    raw = bytes(buffer[:end])
                    del buffer[:end]
                    reader._maybe_resume_transport()
                    return _decode(kind, channel, raw[7:-1], raw)
        return await slow(self)

    get_frame._rrjobs_fast = True  # type: ignore[attr-defined]
    receiver.get_frame = get_frame  # type: ignore[method-assign]


class _Unsupported(Exception):
    pass


def _table(data: bytes, start: int, end: int) -> dict[str, Any]:
    """The field table in ``data[start:end]``, as pamqp decodes it, for the value
    types of AMQP 0-9-1 and RabbitMQ but decimals, timestamps, arrays and tables."""
    out: dict[str, Any] = {}
    i = start
    unpack = struct.unpack_from
    while i < end:
        n = data[i]
        key = data[i + 1 : i + 1 + n].decode()
        i += 1 + n
        kind = data[i]
        i += 1
        if kind == 0x53:  # S: long string (bytes when it is not UTF-8, as pamqp)
            (n,) = _U32.unpack_from(data, i)
            chunk = data[i + 4 : i + 4 + n]
            if len(chunk) != n:
                raise _Unsupported("truncated")
            try:
                value: Any = chunk.decode()
            except UnicodeDecodeError:
                value = chunk
            i += 4 + n
        elif kind == 0x78:  # x: byte array
            (n,) = _U32.unpack_from(data, i)
            value = bytearray(data[i + 4 : i + 4 + n])
            if len(value) != n:
                raise _Unsupported("truncated")
            i += 4 + n
        elif kind == 0x74:  # t
            value = bool(data[i])
            i += 1
        elif kind in _FIXED:
            fmt, size = _FIXED[kind]
            (value,) = unpack(fmt, data, i)
            i += size
        elif kind == 0x56:  # V: void
            value = None
        else:
            raise _Unsupported(kind)
        out[key] = value
    if i != end:
        raise _Unsupported("overrun")
    return out


#: fixed-size value types: struct format and size (pamqp reads ``L`` as signed too)
_FIXED: dict[int, tuple[str, int]] = {
    ord("b"): (">b", 1),
    ord("B"): (">B", 1),
    ord("s"): (">h", 2),
    ord("u"): (">H", 2),
    ord("I"): (">i", 4),
    ord("i"): (">I", 4),
    ord("l"): (">q", 8),
    ord("L"): (">q", 8),
    ord("f"): (">f", 4),
    ord("d"): (">d", 8),
}


def header_table(header: ContentHeader) -> dict[str, Any] | None:
    """The ``headers`` table of a content header (``None`` when it has none), as
    pamqp decodes it; read from a :class:`RawContentHeader`'s bytes when it can be."""
    if isinstance(header, RawContentHeader) and header._properties is None:
        raw = header.raw
        try:
            _, _, _, flags = _CONTENT.unpack_from(raw)
            if not flags & 1:  # one flag word
                if not flags & _HEADERS:
                    return None
                i = 14
                if flags & _CONTENT_TYPE:
                    i += 1 + raw[i]
                if flags & _CONTENT_ENCODING:
                    i += 1 + raw[i]
                (size,) = _U32.unpack_from(raw, i)
                if i + 4 + size <= len(raw):
                    return _table(raw, i + 4, i + 4 + size)
        except (_Unsupported, IndexError, struct.error, UnicodeDecodeError):
            pass  # pamqp decodes it, or says what is wrong with it
    headers: dict[str, Any] | None = header.properties.headers
    return headers


__all__ = ["RawContentHeader", "header_table", "install_fast_receiver"]
