"""``Message``: what ``Driver.push`` receives (RoadRunner's ``jobs.Message``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from rrjobs.core.headers import Headers

#: Ids made per ``os.urandom`` call: one system call serves this many jobs.
_IDS_PER_REFILL = 256
#: Where the dashes of ``xxxxxxxx-xxxx-4xxx-Vxxx-xxxxxxxxxxxx`` are.
_DASHES = (8, 13, 18, 23)
#: A record of the refill buffer: an id's 36 characters and a comma.
_WIDTH = 37
#: A random byte → a hex digit (its low 4 bits: every digit equally likely).
_HEX = bytes(b"0123456789abcdef"[i & 15] for i in range(256))
#: A random hex digit → the RFC 4122 variant digit (``8``, ``9``, ``a`` or ``b``).
_VARIANT = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")
_DASH_COLUMN = b"-" * _IDS_PER_REFILL
_VERSION_COLUMN = b"4" * _IDS_PER_REFILL
_COMMAS = b"," * (_IDS_PER_REFILL - 1)
_ids: list[str] = []


def _refill_ids() -> None:
    """Make ``_IDS_PER_REFILL`` uuid4 strings at once. One random byte per
    character becomes a hex digit (one ``translate``); the dashes, the version
    and the variant column are set for all ids by one slice assignment each;
    one ``split`` cuts the ids apart."""
    width = _WIDTH
    out = bytearray(os.urandom(width * _IDS_PER_REFILL - 1).translate(_HEX))
    for col in _DASHES:
        out[col::width] = _DASH_COLUMN
    out[14::width] = _VERSION_COLUMN
    out[19::width] = out[19::width].translate(_VARIANT)
    out[36::width] = _COMMAS
    _ids.extend(out.decode("ascii").split(","))


# A forked child must not hand out the ids its parent holds.
os.register_at_fork(after_in_child=_ids.clear)


def new_id() -> str:
    """A fresh job id: a random (version 4) UUID string, as RoadRunner's PHP
    client makes them, from ``os.urandom`` like :func:`uuid.uuid4`.

    Ids are made 256 at a time, so most calls cost a list pop instead of a
    system call and a ``UUID`` object. Thread-safe (``list.pop`` is atomic; a
    racing refill only makes more ids) and fork-safe (a child starts afresh).
    """
    while True:
        try:
            return _ids.pop()
        except IndexError:
            _refill_ids()


@dataclass(slots=True, init=False)
class Message:
    """A job to be pushed.

    Attributes:
        name: the job name (RoadRunner's ``job``); selects the handler.
        payload: the body, bytes, passed through untouched.
        pipeline: the target pipeline (RoadRunner's ``options.pipeline``).
        id: unique id; a uuid4 is generated when not given.
        headers: metadata, several values per key.
        priority: lower runs first; 0 means "inherit the pipeline priority".
        delay: seconds before the job becomes ready (fractions allowed; a
            driver rounds up to its own resolution).
        auto_ack: acknowledge on receipt, before the handler runs; the job is
            never redelivered, whatever the handler does.
        topic, partition, offset, metadata: RoadRunner's Kafka options; only
            the Kafka driver reads them.
    """

    name: str
    payload: bytes = b""
    pipeline: str = ""
    id: str = field(default_factory=new_id)
    headers: Headers = field(default_factory=dict)
    priority: int = 0
    delay: float = 0.0
    auto_ack: bool = False
    topic: str = ""
    partition: int = 0
    offset: int = 0
    metadata: str = ""

    def __init__(self, name: str, payload: bytes = b"", pipeline: str = "", id: str = "",
                 headers: Headers | None = None, priority: int = 0, delay: float = 0.0,
                 auto_ack: bool = False, topic: str = "", partition: int = 0, offset: int = 0,
                 metadata: str = "") -> None:
        # Written out rather than generated: a message is made per job, and the
        # generated ``__init__`` plus ``__post_init__`` and the id factory cost
        # two more Python calls and a default check per field.
        # ``type(...) is bytes`` first: isinstance against a union costs more than
        # the rest of the message's construction.
        if type(payload) is not bytes and not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
        if delay < 0.0:
            raise ValueError("delay must be >= 0")
        if not id:
            try:
                id = _ids.pop()
            except IndexError:
                id = new_id()
        self.name = name
        self.payload = payload
        self.pipeline = pipeline
        self.id = id
        self.headers = {} if headers is None else headers
        self.priority = priority
        self.delay = delay
        self.auto_ack = auto_ack
        self.topic = topic
        self.partition = partition
        self.offset = offset
        self.metadata = metadata
