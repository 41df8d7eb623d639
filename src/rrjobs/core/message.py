"""``Message``: what ``Driver.push`` receives (RoadRunner's ``jobs.Message``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from rrjobs.core.headers import Headers

#: Ids made per ``os.urandom`` call: one system call serves this many jobs.
_IDS_PER_REFILL = 256
#: Where the dashes of ``xxxxxxxx-xxxx-4xxx-Vxxx-xxxxxxxxxxxx`` are.
_DASHES = (8, 13, 18, 23)
#: A random hex digit → the RFC 4122 variant digit (``8``, ``9``, ``a`` or ``b``).
_VARIANT = bytes.maketrans(b"0123456789abcdef", b"89ab89ab89ab89ab")
_ids: list[str] = []


def _refill_ids() -> None:
    """Make ``_IDS_PER_REFILL`` uuid4 strings at once: each of the 36 character
    columns is filled for all of them by one slice assignment."""
    n = _IDS_PER_REFILL
    hexed = os.urandom(16 * n).hex().encode("ascii")
    out = bytearray(36 * n)
    h = 0  # the hex digit (of 32 per id) that the next column takes
    for col in range(36):
        if col in _DASHES:
            out[col::36] = b"-" * n
            continue
        if col == 14:
            out[col::36] = b"4" * n  # the version digit replaces random digit 12
        elif col == 19:
            out[col::36] = hexed[h::32].translate(_VARIANT)
        else:
            out[col::36] = hexed[h::32]
        h += 1
    text = out.decode("ascii")
    _ids.extend([text[i:i + 36] for i in range(0, 36 * n, 36)])


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


@dataclass(slots=True)
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

    def __post_init__(self) -> None:
        payload = self.payload
        # ``type(...) is bytes`` first: isinstance against a union costs more than
        # the rest of the message's construction.
        if type(payload) is not bytes and not isinstance(payload, bytes | bytearray | memoryview):
            raise TypeError(f"payload must be bytes, not {type(self.payload).__name__}")
        if self.delay < 0:
            raise ValueError("delay must be >= 0")
        if not self.id:
            self.id = new_id()
