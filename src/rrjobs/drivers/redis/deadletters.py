"""``rrjobs dlq`` on a Redis pipeline: its dead letters are the entries of its dead-letter
stream (``rrjobs:{queue}:dead``), read with ``XRANGE`` (nothing is consumed, no group is
involved) and removed with ``XDEL``. Pipelines sharing a queue share the stream: letters
whose ``rr_original_pipeline`` names another pipeline are left alone. A replay or a purge
covers the letters stored when it began.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from rrjobs.core.deadletters import DeadLetter, ScannedStore, Session, failed_at_text
from rrjobs.drivers.redis import codec

#: Entries one ``XRANGE`` reads.
PAGE = 100


class DeadLetterStream(ScannedStore[bytes]):
    """The :class:`~rrjobs.core.deadletters.DeadLetterStore` of ``pipeline``: its letters
    in stream ``key``, through the redis-py asyncio ``client``."""

    def __init__(self, client: Any, key: str, pipeline: str, priority: int) -> None:
        super().__init__(pipeline, priority)
        self.client = client
        self.key = key

    def letter(self, entry: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
        """The letter in an entry (an unreadable one: its payload, named by its entry id)."""
        def read() -> DeadLetter:
            f, payload = codec.decode(fields, self.priority)
            return DeadLetter.of(f.id, f.name, payload, f.headers, self.pipeline, f.priority,
                                 _failed_at(entry))
        return DeadLetter.read(read, entry.decode(), fields.get(codec.PAYLOAD, b""),
                               self.pipeline)

    @asynccontextmanager
    async def session(self, removing: bool) -> AsyncIterator[Session[bytes]]:
        end = b"+"
        if removing:
            last = await self.client.xrevrange(self.key, count=1)
            end = last[0][0] if last else b"0-0"

        async def remove(entry: bytes) -> None:
            await self.client.xdel(self.key, entry)
        yield self.scan(end), remove

    async def scan(self, end: bytes = b"+") -> AsyncIterator[tuple[bytes, DeadLetter]]:
        """``(entry id, letter)`` of the stream's entries, oldest first, up to ``end``."""
        start = b"-"
        while True:
            page = await self.client.xrange(self.key, start, end, count=PAGE)
            for entry, fields in page:
                yield entry, self.letter(entry, fields or {})
            if len(page) < PAGE:
                return
            start = b"(" + page[-1][0]


def _failed_at(entry: bytes) -> str:
    """When the entry was added: its id's milliseconds, as ``rr_failed_at`` writes it."""
    ms = entry.split(b"-", 1)[0]
    return failed_at_text(int(ms) / 1000) if ms.isdigit() else ""
