"""``Message``: what ``Driver.push`` receives (RoadRunner's ``jobs.Message``)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from rrjobs.core.headers import Headers


def new_id() -> str:
    """A fresh job id (uuid4, as RoadRunner's PHP client makes them)."""
    return str(uuid.uuid4())


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
        if not isinstance(self.payload, bytes | bytearray | memoryview):
            raise TypeError(f"payload must be bytes, not {type(self.payload).__name__}")
        if self.delay < 0:
            raise ValueError("delay must be >= 0")
        if not self.id:
            self.id = new_id()
