"""Go's ``encoding/gob``, as much of it as RoadRunner's beanstalk job body needs.

RoadRunner's beanstalk driver puts ``gob(Item)``, one gob stream per body: the
definitions of the types the value needs (one message each, ``-id`` then a
``wireType``), then one message holding the value. Its types (RoadRunner's
``beanstalkjobs/item.go``, v6; exported fields only)::

    type Item struct {
        Job     string
        Ident   string
        Payload []byte               // a string before RoadRunner v4.5
        Hdrs    map[string][]string  // Headers before v4.3; unexported in v4.3-v6.0.0-beta.1
        Options *Options
    }
    type Options struct {Priority int64; Pipeline string; Delay int; AutoAck bool; Queue string}

:func:`decode` reads any gob stream's first value (structs, maps, slices, arrays,
integers, floats, strings, bytes, bools; not interface values) into Python values,
bounded: every length must fit in what is left of the body and values nest at most
:data:`MAX_DEPTH` deep, so malformed, truncated or hostile input raises
:class:`GobError` in time linear in its size. :func:`read_item` accepts the value
only when it is RoadRunner's Item, by Go's rule (fields matched by name, a matched
field's type must be compatible, at least one field matched). :func:`encode_item`
writes an Item as a Go program's encoder does. Pure; no I/O.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

#: Deepest nesting of values (and of the type definitions) accepted.
MAX_DEPTH = 8
#: Most type definitions one body may carry.
MAX_TYPES = 64

# Go's predefined type ids (encoding/gob/type.go).
BOOL, INT, UINT, FLOAT, BYTES, STRING, COMPLEX, INTERFACE = 1, 2, 3, 4, 5, 6, 7, 8
_BUILTIN = frozenset({BOOL, INT, UINT, FLOAT, BYTES, STRING, COMPLEX, INTERFACE})
#: Ids below this one are Go's own (wireType and its parts among them).
FIRST_USER_ID = 64


class GobError(ValueError):
    """A body that is not a gob stream gob can read, or not RoadRunner's Item."""


@dataclass(frozen=True, slots=True)
class _Struct:
    name: str
    fields: tuple[tuple[str, int], ...]


@dataclass(frozen=True, slots=True)
class _Slice:
    elem: int


@dataclass(frozen=True, slots=True)
class _Array:
    elem: int
    length: int


@dataclass(frozen=True, slots=True)
class _Map:
    key: int
    elem: int


@dataclass(frozen=True, slots=True)
class _Opaque:
    """A GobEncoder, BinaryMarshaler or TextMarshaler value: its bytes."""


_Type = _Struct | _Slice | _Array | _Map | _Opaque


class _Reader:
    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes | memoryview, pos: int, end: int) -> None:
        self.data, self.pos, self.end = data, pos, end

    def left(self) -> int:
        return self.end - self.pos

    def byte(self) -> int:
        if self.pos >= self.end:
            raise GobError("gob: truncated")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def uint(self) -> int:
        b = self.byte()
        if b < 0x80:
            return b
        n = 256 - b
        if n > 8:
            raise GobError(f"gob: an unsigned integer of {n} bytes")
        if self.pos + n > self.end:
            raise GobError("gob: truncated")
        value = int.from_bytes(self.data[self.pos : self.pos + n], "big")
        self.pos += n
        return value

    def signed(self) -> int:
        u = self.uint()
        return ~(u >> 1) if u & 1 else u >> 1

    def raw(self) -> bytes:
        n = self.uint()
        if n > self.left():
            raise GobError(f"gob: a length of {n} with {self.left()} bytes left")
        out = bytes(self.data[self.pos : self.pos + n])
        self.pos += n
        return out

    def count(self) -> int:
        """The element count of a slice or map: each element takes a byte at least."""
        n = self.uint()
        if n > self.left():
            raise GobError(f"gob: {n} elements with {self.left()} bytes left")
        return n

    def text(self) -> str:
        return self.raw().decode("utf-8", "surrogateescape")


def _struct_fields(r: _Reader, count: int) -> Iterator[int]:
    """Yield the field numbers of one struct value in order (deltas; 0 ends it)."""
    number = -1
    while True:
        delta = r.uint()
        if delta == 0:
            return
        number += delta
        if number >= count:
            raise GobError(f"gob: field {number} of a struct of {count} fields")
        yield number


def _common(r: _Reader) -> tuple[str, int]:
    """A ``CommonType{Name string; Id typeId}`` (or a ``fieldType``, the same shape)."""
    name, ident = "", 0
    for number in _struct_fields(r, 2):
        if number == 0:
            name = r.text()
        else:
            ident = r.signed()
    return name, ident


def _ids(r: _Reader, count: int) -> list[int]:
    """A struct ``{CommonType; n int fields}`` of ``count`` fields: its integers (0 when
    not sent)."""
    out = [0] * (count - 1)
    for number in _struct_fields(r, count):
        if number == 0:
            _common(r)
        else:
            out[number - 1] = r.signed()
    return out


def _wire_type(r: _Reader) -> _Type:
    """One ``wireType``: ``{ArrayT, SliceT, StructT, MapT, GobEncoderT,
    BinaryMarshalerT, TextMarshalerT}``, each a pointer to a struct whose first field
    is the embedded ``CommonType{Name, Id}``."""
    found: _Type | None = None
    for kind in _struct_fields(r, 7):
        if found is not None:
            raise GobError("gob: a wireType of two kinds")
        if kind == 0:  # arrayType{CommonType, Elem, Len}
            elem, length = _ids(r, 3)
            if length < 0:
                raise GobError("gob: an array of negative length")
            found = _Array(elem, length)
        elif kind == 1:  # sliceType{CommonType, Elem}
            found = _Slice(*_ids(r, 2))
        elif kind == 2:  # structType{CommonType, Field []fieldType{Name, Id}}
            name, fields = "", list[tuple[str, int]]()
            for number in _struct_fields(r, 2):
                if number == 0:
                    name = _common(r)[0]
                else:
                    # each a fieldType{Name, Id}: CommonType's shape
                    fields = [_common(r) for _ in range(r.count())]
            found = _Struct(name, tuple(fields))
        elif kind == 3:  # mapType{CommonType, Key, Elem}
            found = _Map(*_ids(r, 3))
        else:  # gobEncoderType{CommonType}
            _ids(r, 1)
            found = _Opaque()
    if found is None:
        raise GobError("gob: an empty wireType")
    return found


@dataclass(slots=True)
class _Stream:
    types: dict[int, _Type] = field(default_factory=dict)

    def type_of(self, ident: int) -> _Type:
        t = self.types.get(ident)
        if t is None:
            raise GobError(f"gob: undefined type id {ident}")
        return t

    def value(self, r: _Reader, ident: int, depth: int) -> Any:
        if ident == INT:
            return r.signed()
        if ident == UINT:
            return r.uint()
        if ident == STRING:
            return r.text()
        if ident == BYTES:
            return r.raw()
        if ident == BOOL:
            return r.uint() != 0
        if ident == FLOAT:
            return _float(r.uint())
        if ident == COMPLEX:
            return complex(_float(r.uint()), _float(r.uint()))
        if ident == INTERFACE:
            raise GobError("gob: interface values are not read")
        if depth >= MAX_DEPTH:
            raise GobError(f"gob: values nested more than {MAX_DEPTH} deep")
        t = self.type_of(ident)
        depth += 1
        if isinstance(t, _Struct):
            out: dict[Any, Any] = {}
            for number in _struct_fields(r, len(t.fields)):
                name, fid = t.fields[number]
                out[name] = self.value(r, fid, depth)
            return out
        if isinstance(t, _Slice):
            return [self.value(r, t.elem, depth) for _ in range(r.count())]
        if isinstance(t, _Array):
            n = r.count()
            if n != t.length:
                raise GobError(f"gob: an array of {n} elements, its type says {t.length}")
            return [self.value(r, t.elem, depth) for _ in range(n)]
        if isinstance(t, _Map):
            pairs = {}
            for _ in range(r.count()):
                key = self.value(r, t.key, depth)
                if isinstance(key, dict | list):
                    raise GobError("gob: a map key that is not a scalar")
                pairs[key] = self.value(r, t.elem, depth)
            return pairs
        return r.raw()


def _float(bits: int) -> float:
    """Go sends a float64's bits byte-reversed, as an unsigned integer."""
    value: float = struct.unpack("<d", bits.to_bytes(8, "big"))[0]
    return value


@dataclass(frozen=True, slots=True)
class Value:
    """The first value of a gob stream, with the types it was sent with."""

    type_id: int
    value: Any
    types: dict[int, _Type]


#: The types of :data:`TYPES`, read once.
_KNOWN: dict[int, _Type] = {}


def decode(body: bytes | memoryview) -> Value:
    """The first value of the gob stream ``body`` (what a Go ``Decoder.Decode`` reads;
    bytes after it are ignored, as Go does). Raises :class:`GobError`."""
    stream = _Stream()
    r = _Reader(body, 0, len(body))
    if _KNOWN and body[: len(TYPES)] == TYPES:  # RoadRunner's and rrjobs' definitions
        stream.types.update(_KNOWN)
        r.pos = len(TYPES)
    while True:
        length = r.uint()
        if length == 0 or length > r.left():
            raise GobError(f"gob: a message of {length} bytes with {r.left()} left")
        msg = _Reader(body, r.pos, r.pos + length)
        r.pos += length
        ident = msg.signed()
        if ident < 0:
            ident = -ident
            if ident < FIRST_USER_ID or ident in stream.types:
                raise GobError(f"gob: type id {ident} defined again")
            if len(stream.types) >= MAX_TYPES:
                raise GobError(f"gob: more than {MAX_TYPES} types")
            stream.types[ident] = _wire_type(msg)
            continue
        # a value that is not a struct is sent as the field 0 of one
        singleton = ident in _BUILTIN or not isinstance(stream.type_of(ident), _Struct)
        if singleton and msg.uint() != 0:
            raise GobError("gob: a singleton value without its zero delta")
        value = stream.value(msg, ident, 0)
        if msg.left():
            raise GobError(f"gob: {msg.left()} bytes left in the value's message")
        return Value(ident, value, stream.types)


@dataclass(frozen=True, slots=True)
class Item:
    """RoadRunner's beanstalk Item (its fields as they were sent; Go's zero values
    for the fields that were not)."""

    job: str = ""
    ident: str = ""
    payload: bytes = b""
    headers: dict[str, list[str]] = field(default_factory=dict)
    priority: int = 0
    pipeline: str = ""
    delay: int = 0
    auto_ack: bool = False
    queue: str = ""


_HEADERS = ("Hdrs", "Headers")
_OPTIONS = {"Priority": INT, "Pipeline": STRING, "Delay": INT, "AutoAck": BOOL, "Queue": STRING}


def _is_headers(stream: Value, ident: int) -> bool:
    t = stream.types.get(ident)
    if not isinstance(t, _Map) or t.key != STRING:
        return False
    elem = stream.types.get(t.elem)
    return isinstance(elem, _Slice) and elem.elem == STRING


def _check(value: Value) -> None:
    """Go's rule decoding into ``*Item``: a struct whose fields named as Item's have
    compatible types, one of them at least."""
    t = value.types.get(value.type_id)
    if not isinstance(t, _Struct):
        raise GobError("gob: the value is not a struct, not RoadRunner's Item")
    matched = 0
    for name, ident in t.fields:
        if name in ("Job", "Ident"):
            ok = ident == STRING
        elif name == "Payload":
            ok = ident in (BYTES, STRING)
        elif name in _HEADERS:
            ok = _is_headers(value, ident)
        elif name == "Options":
            opts = value.types.get(ident)
            ok = (
                isinstance(opts, _Struct)
                and all(_OPTIONS.get(n, i) == i for n, i in opts.fields)
                and any(n in _OPTIONS for n, _ in opts.fields)
            )
        else:
            continue
        if not ok:
            raise GobError(f"gob: the field {name} is not of RoadRunner's Item type")
        matched += 1
    if not matched:
        raise GobError("gob: a struct without any field of RoadRunner's Item")


def _text(value: str) -> str:
    """A Go string's text: bytes that are not UTF-8 replaced."""
    return value.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def read_item(body: bytes | memoryview) -> Item:
    """RoadRunner's Item in ``body``; raises :class:`GobError` when ``body`` is not a
    gob stream whose first value Go would decode into RoadRunner's Item."""
    if body[: len(TYPES)] == TYPES:
        item = _read_known(body)
        if item is not None:
            return item
    return _read_any(body)


def _read_known(body: bytes | memoryview) -> Item | None:
    """The Item of a body headed by :data:`TYPES` (what a Go process writes when Item
    is the first type it encodes; rrjobs' always), read without the generic decoder
    (the same result, a few times faster); ``None`` when the message after the types
    is not an Item's value."""
    r = _Reader(body, len(TYPES), len(body))
    length = r.uint()
    if length == 0 or length > r.left():
        raise GobError(f"gob: a message of {length} bytes with {r.left()} left")
    try:
        return _known_value(bytes(body[r.pos : r.pos + length]))
    except IndexError:  # a count or delta past the message's end
        raise GobError("gob: truncated") from None


def _long(data: bytes, pos: int, first: int) -> tuple[int, int]:
    """The unsigned integer whose first byte (>= 0x80: its byte count, negated) was
    ``first``, and the position after it."""
    n = 256 - first
    if n > 8 or pos + n > len(data):
        raise GobError("gob: a truncated or too long unsigned integer")
    return int.from_bytes(data[pos : pos + n], "big"), pos + n


def _bytes_at(data: bytes, pos: int) -> tuple[bytes, int]:
    n = data[pos]
    pos += 1
    if n >= 0x80:
        n, pos = _long(data, pos, n)
    end = pos + n
    if end > len(data):
        raise GobError(f"gob: a length of {n} with {len(data) - pos} bytes left")
    return data[pos:end], end


def _str_at(data: bytes, pos: int) -> tuple[str, int]:
    """:func:`_bytes_at` as text (invalid UTF-8 replaced, as Go's strings may hold any bytes)."""
    raw, pos = _bytes_at(data, pos)
    return raw.decode("utf-8", "replace"), pos


def _uint_at(data: bytes, pos: int) -> tuple[int, int]:
    u = data[pos]
    if u < 0x80:
        return u, pos + 1
    return _long(data, pos + 1, u)


def _int_at(data: bytes, pos: int) -> tuple[int, int]:
    u, pos = _uint_at(data, pos)
    return (~(u >> 1) if u & 1 else u >> 1), pos


def _count_at(data: bytes, pos: int) -> tuple[int, int]:
    """A slice's or map's count: each element takes a byte at least."""
    n, pos = _uint_at(data, pos)
    if n > len(data) - pos:
        raise GobError(f"gob: {n} elements with {len(data) - pos} bytes left")
    return n, pos


def _known_value(data: bytes) -> Item | None:
    """:func:`_read_known` of the value's message ``data`` (an ``IndexError`` past its end)."""
    ident_of, pos = _int_at(data, 0)
    if ident_of != ITEM_ID:
        return None
    job = ident = pipeline = queue = ""
    payload = b""
    headers: dict[str, list[str]] = {}
    priority = delay = 0
    auto_ack = False
    number = -1
    while True:
        delta, pos = _uint_at(data, pos)
        if not delta:
            break
        number += delta
        if number == 0:
            job, pos = _str_at(data, pos)
        elif number == 1:
            ident, pos = _str_at(data, pos)
        elif number == 2:
            payload, pos = _bytes_at(data, pos)
        elif number == 3:
            count, pos = _count_at(data, pos)
            for _ in range(count):
                key, pos = _str_at(data, pos)
                values, pos = _count_at(data, pos)
                out = []
                for _ in range(values):
                    value, pos = _str_at(data, pos)
                    out.append(value)
                headers[key] = out
        elif number == 4:
            option = -1
            while True:
                step, pos = _uint_at(data, pos)
                if not step:
                    break
                option += step
                if option == 0:
                    priority, pos = _int_at(data, pos)
                elif option == 1:
                    pipeline, pos = _str_at(data, pos)
                elif option == 2:
                    delay, pos = _int_at(data, pos)
                elif option == 3:
                    flag, pos = _uint_at(data, pos)
                    auto_ack = flag != 0
                elif option == 4:
                    queue, pos = _str_at(data, pos)
                else:
                    raise GobError(f"gob: field {option} of a struct of 5 fields")
        else:
            raise GobError(f"gob: field {number} of a struct of 5 fields")
    if pos != len(data):
        raise GobError(f"gob: {len(data) - pos} bytes left in the value's message")
    return Item(job, ident, payload, headers, priority, pipeline, delay, auto_ack, queue)


def _read_any(body: bytes | memoryview) -> Item:
    """:func:`read_item` by the generic decoder: any type ids, RoadRunner's older Items."""
    value = decode(body)
    _check(value)
    v: dict[str, Any] = value.value
    payload = v.get("Payload", b"")
    if isinstance(payload, str):
        payload = payload.encode("utf-8", "surrogateescape")
    raw_headers: dict[str, list[str]] = v.get("Hdrs", v.get("Headers", {}))
    headers = {_text(k): [_text(x) for x in vals] for k, vals in raw_headers.items()}
    opts: dict[str, Any] = v.get("Options", {})
    return Item(
        job=_text(v.get("Job", "")),
        ident=_text(v.get("Ident", "")),
        payload=payload,
        headers=headers,
        priority=opts.get("Priority", 0),
        pipeline=_text(opts.get("Pipeline", "")),
        delay=opts.get("Delay", 0),
        auto_ack=opts.get("AutoAck", False),
        queue=_text(opts.get("Queue", "")),
    )


# -- encoding -------------------------------------------------------------------------


def _uint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    raw = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((256 - len(raw),)) + raw


def _int(n: int) -> bytes:
    if not -(2**63) <= n < 2**63:
        raise GobError(f"gob: {n} does not fit a Go int64")
    return _uint(~n << 1 | 1 if n < 0 else n << 1)


def _raw(data: bytes) -> bytes:
    return _uint(len(data)) + data


def _str(text: str) -> bytes:
    return _raw(text.encode("utf-8", "surrogateescape"))


def _message(ident: int, body: bytes) -> bytes:
    inner = _int(ident) + body
    return _uint(len(inner)) + inner


# The ids a Go program's encoder gives these types (the first it encodes).
ITEM_ID, STRINGS_ID, HEADERS_ID, OPTIONS_ID = 64, 65, 66, 67


def _common_bytes(name: str, ident: int) -> bytes:
    return (b"\x01" + _str(name) + b"\x01" if name else b"\x02") + _int(ident) + b"\x00"


def _struct_type(name: str, ident: int, fields: list[tuple[str, int]]) -> bytes:
    parts = [b"\x03\x01", _common_bytes(name, ident), b"\x01", _uint(len(fields))]
    parts += [b"\x01" + _str(f) + b"\x01" + _int(i) + b"\x00" for f, i in fields]
    return b"".join((*parts, b"\x00\x00"))


#: The type definitions heading every body: Item, ``map[string][]string``,
#: ``[]string``, Options, in the order and with the ids Go's encoder sends them.
TYPES = b"".join(
    (
        _message(
            -ITEM_ID,
            _struct_type(
                "Item",
                ITEM_ID,
                [
                    ("Job", STRING),
                    ("Ident", STRING),
                    ("Payload", BYTES),
                    ("Hdrs", HEADERS_ID),
                    ("Options", OPTIONS_ID),
                ],
            ),
        ),
        _message(
            -HEADERS_ID,
            b"\x04\x01"
            + _common_bytes("map[string][]string", HEADERS_ID)
            + b"\x01"
            + _int(STRING)
            + b"\x01"
            + _int(STRINGS_ID)
            + b"\x00\x00",
        ),
        _message(
            -STRINGS_ID,
            b"\x02\x01" + _common_bytes("", STRINGS_ID) + b"\x01" + _int(STRING) + b"\x00\x00",
        ),
        _message(
            -OPTIONS_ID,
            _struct_type(
                "Options",
                OPTIONS_ID,
                [
                    ("Priority", INT),
                    ("Pipeline", STRING),
                    ("Delay", INT),
                    ("AutoAck", BOOL),
                    ("Queue", STRING),
                ],
            ),
        ),
    )
)


_KNOWN.update(decode(TYPES + _message(ITEM_ID, b"\x00")).types)


#: ``_uint(n)`` of the counts and deltas below 128.
_SMALL = [bytes((n,)) for n in range(128)]
_ITEM_ID = _int(ITEM_ID)


def _put_text(out: list[bytes], text: str) -> None:
    raw = text.encode("utf-8", "surrogateescape")
    n = len(raw)
    out += (_SMALL[n] if n < 128 else _uint(n), raw)


def encode_item(item: Item) -> bytes:
    """``item`` as Go's ``gob.NewEncoder(w).Encode(&item)`` writes it, ``Options``
    always set (the map's keys in ``headers``' order; Go's are in random order).
    Raises :class:`GobError` for an integer outside Go's ``int64``."""
    return encode(
        item.job,
        item.ident,
        item.payload,
        item.headers,
        item.priority,
        item.pipeline,
        item.delay,
        item.auto_ack,
        item.queue,
    )


def encode(
    job: str,
    ident: str,
    payload: bytes,
    headers: dict[str, list[str]],
    priority: int,
    pipeline: str,
    delay: int = 0,
    auto_ack: bool = False,
    queue: str = "",
) -> bytes:
    """:func:`encode_item` of the Item of these fields (one join, no Item built)."""
    # the TYPES, the value message's length (set below), its type id, then the fields
    # that are not Go's zero value, each by its delta from the previous one
    out = [TYPES, b"", _ITEM_ID]
    last = -1
    for number, text in ((0, job), (1, ident)):
        if text:
            out.append(_SMALL[number - last])
            _put_text(out, text)
            last = number
    if payload:
        n = len(payload)
        out += (_SMALL[2 - last], _SMALL[n] if n < 128 else _uint(n), payload)
        last = 2
    if headers:
        out += (_SMALL[3 - last], _uint(len(headers)))
        for key, values in headers.items():
            _put_text(out, key)
            out.append(_uint(len(values)))
            for value in values:
                _put_text(out, value)
        last = 3
    out.append(_SMALL[4 - last])  # Options, always
    last = -1
    options = ((0, priority), (1, pipeline), (2, delay), (3, auto_ack), (4, queue))
    for number, option in options:
        if option:
            out.append(_SMALL[number - last])
            if isinstance(option, str):
                _put_text(out, option)
            elif option is True:
                out.append(b"\x01")
            else:
                out.append(_int(option))
            last = number
    out.append(b"\x00\x00")  # the ends of Options and of Item
    out[1] = _uint(sum(map(len, out)) - len(TYPES))
    return b"".join(out)


__all__ = [
    "MAX_DEPTH",
    "MAX_TYPES",
    "TYPES",
    "GobError",
    "Item",
    "Value",
    "decode",
    "encode",
    "encode_item",
    "read_item",
]
