"""goridge frames: RoadRunner's wire framing, for its RPC and its workers.

One frame (goridge v3, ``pkg/frame``)::

    byte 0       version (high 4 bits, always 1) | header length in 32-bit words (low 4 bits)
    byte 1       flags (CONTROL 0x01, CODEC_RAW 0x04, CODEC_JSON 0x08, CODEC_MSGPACK 0x10,
                 CODEC_GOB 0x20, ERROR 0x40, CODEC_PROTO 0x80; OR-ed together)
    bytes 2-5    payload length, uint32 little endian
    bytes 6-9    CRC32 (IEEE) of bytes 0-5, uint32 little endian
    bytes 10-11  stream flags (0 here: rrjobs sends no streams)
    then         (header length - 3) options, uint32 little endian each (at most 10)
    then         the payload

The RPC puts ``[seq, len(method)]`` in the options and ``method + body`` in
the payload; a worker frame puts ``[len(context)]`` and ``context + body``.
:func:`encode` builds a frame, :class:`FrameReader` reads them from an
asyncio stream and raises :class:`FrameError` for a frame RoadRunner would
refuse (wrong version, header length below 3, CRC mismatch, too large).
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

VERSION_1 = 1
#: Words of the fixed header (12 bytes).
HEADER_WORDS = 3
HEADER_SIZE = 12
WORD = 4
#: The most options a frame carries (goridge's limit: 40 bytes).
MAX_OPTIONS = 10

CONTROL = 0x01
CODEC_RAW = 0x04
CODEC_JSON = 0x08
CODEC_MSGPACK = 0x10
CODEC_GOB = 0x20
ERROR = 0x40
CODEC_PROTO = 0x80

#: The largest payload read by default (goridge allows up to 4 GiB).
DEFAULT_MAX_PAYLOAD = 256 * 1024 * 1024

_HEAD = struct.Struct("<BBI")
_U32 = struct.Struct("<I")


class FrameError(ValueError):
    """A frame RoadRunner's relay refuses; the connection cannot be read further."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame."""

    flags: int
    options: tuple[int, ...]
    payload: bytes
    stream: int = 0

    def has(self, flag: int) -> bool:
        """Whether ``flag`` is set."""
        return self.flags & flag != 0


def crc(header6: bytes) -> int:
    """The header checksum: CRC32 (IEEE) of bytes 0-5."""
    return zlib.crc32(header6) & 0xFFFFFFFF


def header(flags: int, options: Sequence[int], payload_len: int, *, stream: int = 0) -> bytes:
    """The header (fixed part and options) of a frame."""
    if len(options) > MAX_OPTIONS:
        raise ValueError(f"a frame carries at most {MAX_OPTIONS} options, got {len(options)}")
    if not 0 <= flags <= 0xFF:
        raise ValueError(f"flags must fit one byte, got {flags:#x}")
    if not 0 <= payload_len <= 0xFFFFFFFF:
        raise ValueError(f"payload of {payload_len} bytes does not fit a frame (4 GiB at most)")
    first = _HEAD.pack(VERSION_1 << 4 | (HEADER_WORDS + len(options)), flags, payload_len)
    opts = b"".join(_U32.pack(o) for o in options)
    return first + _U32.pack(crc(first)) + stream.to_bytes(2, "little") + opts


def encode(flags: int, options: Sequence[int] = (), payload: bytes = b"", *,
           stream: int = 0) -> bytes:
    """A whole frame."""
    return header(flags, options, len(payload), stream=stream) + payload


def parse_header(head: bytes) -> tuple[int, int, int, int]:
    """``(option count, flags, payload length, stream flags)`` of a 12-byte
    header; :class:`FrameError` when RoadRunner would refuse it."""
    if len(head) != HEADER_SIZE:
        raise FrameError(f"a frame header has {HEADER_SIZE} bytes, got {len(head)}")
    version, hl = head[0] >> 4, head[0] & 0x0F
    if version != VERSION_1:
        raise FrameError(f"wrong version: {version}")
    if hl < HEADER_WORDS:
        raise FrameError(f"header length {hl} is below {HEADER_WORDS} words")
    if crc(head[:6]) != _U32.unpack_from(head, 6)[0]:
        raise FrameError("CRC verification failed")
    _, flags, length = _HEAD.unpack_from(head)
    return hl - HEADER_WORDS, flags, length, int.from_bytes(head[10:12], "little")


def decode(data: bytes) -> Frame:
    """Decode exactly one whole frame (tests, simulators)."""
    count, flags, length, stream = parse_header(data[:HEADER_SIZE])
    end = HEADER_SIZE + count * WORD
    if len(data) != end + length:
        raise FrameError(f"frame of {len(data)} bytes, its header announces {end + length}")
    options = struct.unpack_from(f"<{count}I", data, HEADER_SIZE)
    return Frame(flags, tuple(options), bytes(data[end:]), stream)


class FrameReader:
    """Reads frames from an asyncio stream, one at a time."""

    def __init__(self, reader: asyncio.StreamReader, *,
                 max_payload: int = DEFAULT_MAX_PAYLOAD) -> None:
        self.reader = reader
        self.max_payload = max_payload

    async def read(self) -> Frame | None:
        """The next frame; ``None`` at a clean end of stream (between frames).

        Raises :class:`FrameError` for a refused frame, :class:`asyncio.IncompleteReadError`
        when the stream ends inside one.
        """
        try:
            head = await self.reader.readexactly(HEADER_SIZE)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                return None
            raise
        count, flags, length, stream = parse_header(head)
        if length > self.max_payload:
            raise FrameError(f"payload of {length} bytes is above the limit of "
                             f"{self.max_payload}")
        options: tuple[int, ...] = ()
        if count:
            raw = await self.reader.readexactly(count * WORD)
            options = struct.unpack(f"<{count}I", raw)
        payload = await self.reader.readexactly(length) if length else b""
        return Frame(flags, options, payload, stream)
