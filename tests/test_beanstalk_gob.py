"""Go's gob of RoadRunner's beanstalk Item: bodies Go wrote (tests/fixtures/gob), round
trips, and malformed input (no broker)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from rrjobs.core.headers import DEDUCED_BY_RR, BadHeadersError
from rrjobs.drivers.beanstalk import codec, gob

FIXTURE = Path(__file__).parent / "fixtures" / "gob" / "items.json"
BODIES = {k: bytes.fromhex(v) for k, v in json.loads(FIXTURE.read_text())["bodies"].items()}

#: What integration/gob_interop put in each body.
EXPECTED = {
    "v6_1": gob.Item(
        job="App\\Jobs\\Mail",
        ident="go-1",
        payload=b'{"to":"a@example.com"}',
        headers={"h": ["a", "b"], "rr_attempts": ["2"]},
        priority=7,
        pipeline="p-go",
        queue="t",
    ),
    "v6_2": gob.Item(job="auto", ident="go-2", payload=b"\x00\x01\x02\xff", auto_ack=True),
    "v6_3": gob.Item(job="none", ident="go-3", payload="été".encode(), headers={"ü": ["ñ"]}),
    "v6_empty": gob.Item(),
    "v6_big": gob.Item(
        job="big",
        ident="x" * 300,
        payload=b"\x07" * 1000,
        priority=-(2**63),
        delay=2**32 - 1,
        pipeline="p",
    ),
    # another type id for Item (a process that gave the first ids to other types)
    "v6_shifted": gob.Item(
        job="shifted", ident="s-1", payload=b"p", headers={"k": ["v"]}, priority=2, auto_ack=True
    ),
    "v4_1": gob.Item(
        job="old",
        ident="v4-1",
        payload=b"hello",
        headers={"k": ["v"]},
        priority=3,
        pipeline="p4",
        delay=5,
        auto_ack=True,
    ),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bodies_go_wrote_are_read(name: str) -> None:
    assert gob.read_item(BODIES[name]) == EXPECTED[name]


@pytest.mark.parametrize("name", ["v6_1", "v6_2", "v6_big"])
def test_items_are_written_as_go_writes_them(name: str) -> None:
    """Byte for byte (Go omits a nil Options, rrjobs always sets it: those with
    Options only; v6_1's two header keys happen to be in Go's order)."""
    assert gob.encode_item(EXPECTED[name]) == BODIES[name]


def test_the_type_definitions_are_gos() -> None:
    assert BODIES["v6_empty"].startswith(gob.TYPES)
    for other in ("v4_1", "v6_shifted"):  # read by the generic decoder
        assert BODIES[other][: len(gob.TYPES)] != gob.TYPES


text = st.text(st.characters(exclude_categories=("Cs",)), max_size=40)
items = st.builds(
    gob.Item,
    job=text,
    ident=text,
    payload=st.binary(max_size=300),
    headers=st.dictionaries(text, st.lists(text, max_size=3), max_size=5),
    priority=st.integers(-(2**63), 2**63 - 1),
    pipeline=text,
    delay=st.integers(-(2**63), 2**63 - 1),
    auto_ack=st.booleans(),
    queue=text,
)


@given(items)
@settings(max_examples=300)
def test_items_round_trip(item: gob.Item) -> None:
    body = gob.encode_item(item)
    assert gob.read_item(body) == item
    assert gob._read_any(body) == item  # the generic decoder reads the same


@given(st.binary(max_size=400))
@settings(max_examples=500)
def test_any_bytes_are_read_or_refused_cleanly(body: bytes) -> None:
    assume(not body.startswith(codec.MAGIC))
    try:
        item: gob.Item | None = gob.read_item(body)
    except gob.GobError:
        item = None
    d = codec.decode(body, 4)
    if item is None:
        assert (d.name, d.payload, d.priority) == (DEDUCED_BY_RR, body, 4)
    else:
        assert d.payload == item.payload


@given(items, st.data())
@settings(max_examples=200)
def test_a_mutated_item_is_read_or_refused_cleanly(item: gob.Item, data: st.DataObject) -> None:
    body = bytearray(gob.encode_item(item))
    for _ in range(data.draw(st.integers(1, 4))):
        body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    try:
        fast: gob.Item | None = gob.read_item(bytes(body))
    except gob.GobError:
        fast = None
    try:
        slow: gob.Item | None = gob._read_any(bytes(body))
    except gob.GobError:
        slow = None
    if fast is not None and slow is not None:
        assert fast == slow


def test_integers_outside_int64_are_not_written() -> None:
    with pytest.raises(gob.GobError, match="int64"):
        gob.encode_item(gob.Item(priority=2**63))
    with pytest.raises(gob.GobError, match="int64"):
        gob.encode_item(gob.Item(delay=-(2**63) - 1))


def test_every_truncation_is_refused() -> None:
    body = BODIES["v6_1"]
    for end in range(len(body)):
        with pytest.raises(gob.GobError):
            gob.read_item(body[:end])


def _msg(ident: int, body: bytes) -> bytes:
    inner = gob._int(ident) + body
    return gob._uint(len(inner)) + inner


def _slice_type(ident: int, elem: int) -> bytes:
    """The definition of ``type T []E``."""
    return _msg(
        -ident, b"\x02\x01\x02" + gob._int(ident) + b"\x00\x01" + gob._int(elem) + b"\x00\x00"
    )


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x00",
        b"\xf7" + b"\xff" * 8,  # a 9-byte unsigned integer
        b"\xf8\x7f\xff\xff\xff\xff\xff\xff\xff",  # a message of 2**63 bytes
        b"\xfc\xff\xff\xff\xff\x01",  # a message of 4 GiB, 1 byte there
        gob.TYPES + _msg(gob.ITEM_ID, b"\x01\xf8\x7f\xff\xff\xff\xff\xff\xff\xff"),  # huge Job
        gob.TYPES + _msg(gob.ITEM_ID, b"\x04\xfc\x7f\xff\xff\xff"),  # 2**31 header keys
        gob.TYPES + _msg(gob.ITEM_ID, b"\x09\x01\x00"),  # field 8 of 5
        gob.TYPES + _msg(gob.ITEM_ID, b"\x01\x03Job"),  # no end of struct
        gob.TYPES + gob.TYPES,  # every type defined twice
        _msg(gob.ITEM_ID, b"\x00"),  # an undefined type
        _msg(-gob.ITEM_ID, b"\x00"),  # an empty wireType
        _msg(-3, b"\x00"),  # a predefined id defined again
        _msg(gob.STRING, b"\x00\x03abc"),  # a string, not an Item
        _msg(gob.INTERFACE, b"\x00\x00"),  # an interface value
        _slice_type(70, 70) + _msg(70, b"\x00" + b"\x01" * 10_000 + b"\x00"),  # []T, 10,000 deep
    ],
)
def test_malformed_bodies_raise_a_gob_error(body: bytes) -> None:
    with pytest.raises(gob.GobError):
        gob.read_item(body)


def test_values_nest_at_most_max_depth() -> None:
    types = _slice_type(70, 70)
    ok = _msg(70, b"\x00" + b"\x01" * (gob.MAX_DEPTH - 1) + b"\x00")
    expected: list[object] = []
    for _ in range(gob.MAX_DEPTH - 1):
        expected = [expected]
    assert gob.decode(types + ok).value == expected
    with pytest.raises(gob.GobError, match="nested"):
        gob.decode(types + _msg(70, b"\x00" + b"\x01" * gob.MAX_DEPTH + b"\x00"))


def test_too_many_types_are_refused() -> None:
    body = b"".join(_slice_type(100 + i, gob.STRING) for i in range(gob.MAX_TYPES + 1))
    with pytest.raises(gob.GobError, match="types"):
        gob.decode(body + _msg(100, b"\x00\x00"))


def test_another_struct_is_not_an_item() -> None:
    """Go's rule: no field of Item's name, or one of another type: not an Item."""
    other = gob._message(-64, gob._struct_type("Other", 64, [("Name", gob.STRING)]))
    with pytest.raises(gob.GobError, match="without any field"):
        gob.read_item(other + gob._message(64, b"\x01\x01a\x00"))
    wrong = gob._message(-64, gob._struct_type("Item", 64, [("Job", gob.INT)]))
    with pytest.raises(gob.GobError, match="Job"):
        gob.read_item(wrong + gob._message(64, b"\x01\x02\x00"))
    # unknown fields beside Item's are skipped, as Go does
    extra = gob._message(
        -64,
        gob._struct_type(
            "Item", 64, [("Job", gob.STRING), ("Extra", gob.FLOAT), ("Ident", gob.STRING)]
        ),
    )
    got = gob.read_item(extra + gob._message(64, b"\x01\x01j\x01\xfe\xf0\x3f\x01\x01i\x00"))
    assert (got.job, got.ident) == ("j", "i")
    assert gob.decode(extra + gob._message(64, b"\x02\xfe\xf0\x3f\x00")).value == {"Extra": 1.0}


def test_codec_reads_roadrunners_items_as_jobs() -> None:
    d = codec.decode(BODIES["v6_1"], 10)
    assert (d.id, d.name, d.payload, d.priority, d.auto_ack) == (
        "go-1",
        "App\\Jobs\\Mail",
        b'{"to":"a@example.com"}',
        7,
        False,
    )
    assert d.headers == {"h": ["a", "b"], "rr_attempts": ["2"]}
    d = codec.decode(BODIES["v6_2"], 10)  # priority 0: the pipeline's, as RoadRunner
    assert (d.id, d.priority, d.auto_ack, d.headers) == ("go-2", 10, True, {})
    d = codec.decode(BODIES["v6_empty"], 10)  # nothing set: a new id, deduced_by_rr
    assert d.name == DEDUCED_BY_RR and d.id and d.payload == b""
    assert codec.decode(BODIES["v4_1"], 10).payload == b"hello"


def test_codec_writes_items_roadrunner_reads() -> None:
    headers = {"a": ["1", "2"], "rr_error": ["E: x"]}
    fields: dict[str, Any] = dict(
        id="i-1", name="n", payload=b"\x00\xff\n", priority=3, auto_ack=True
    )
    body = codec.encode(pipeline="p", headers=headers, delay=4, **fields)
    item = gob.read_item(body)
    assert (item.ident, item.job, item.payload, item.priority, item.auto_ack) == tuple(
        fields.values()
    )
    assert (item.headers, item.pipeline, item.delay, item.queue) == (headers, "p", 4, "")
    d = codec.decode(body, 10)
    assert (d.id, d.name, d.payload, d.priority, d.auto_ack) == tuple(fields.values())
    assert d.headers == headers


def test_an_item_with_too_many_headers_is_a_failed_job() -> None:
    body = gob.encode_item(gob.Item(job="j", headers={str(i): [] for i in range(300)}))
    with pytest.raises(BadHeadersError):
        codec.decode(body, 10)
    assert codec.payload_of(body) == body
