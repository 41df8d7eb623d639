"""``rrjobs dlq`` on an AMQP pipeline: its dead letters are the messages of its
``dead_letter_queue``, the queue its dead-letter exchange routes them to.

Each operation opens a channel of its own and takes the queue's messages with
``basic.get`` (unacknowledged, so nobody else gets them meanwhile), up to the
count the queue held when it began. A letter replayed or purged is acked; closing
the channel gives every other message back to the queue, in its place. Messages of other
pipelines sharing the queue (``rr_original_pipeline``) are left alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from pamqp import commands as spec

from rrjobs.core.deadletters import (
    DeadLetter,
    Replay,
    find_scanned,
    first_scanned,
    take_scanned,
)
from rrjobs.drivers.amqp import codec
from rrjobs.drivers.amqp.connection import Link


class DeadLetterQueue:
    """The :class:`~rrjobs.core.deadletters.DeadLetterStore` of ``pipeline``: its
    letters in ``queue``, through the driver's ``link``."""

    def __init__(self, link: Link, queue: str, pipeline: str, priority: int) -> None:
        self.link = link
        self.queue = queue
        self.pipeline = pipeline
        self.priority = priority

    @contextlib.asynccontextmanager
    async def _channel(self) -> AsyncIterator[Any]:
        chan, raw = await (await self.link.current()).channel()
        try:
            yield raw
        finally:
            with contextlib.suppress(Exception):  # what was not acked goes back
                await chan.close()

    def _letter(self, message: Any) -> DeadLetter | None:
        f = codec.unpack(message.header.properties.headers, self.priority)
        letter = DeadLetter.of(f.id, f.name, bytes(message.body or b""), f.headers,
                               self.pipeline, f.priority)
        return letter if letter.pipeline == self.pipeline else None

    async def _scan(self, raw: Any) -> AsyncIterator[tuple[int, DeadLetter]]:
        """``(delivery tag, letter)`` of this pipeline's letters, oldest first, up
        to the count the queue held at the first get; the caller settles them."""
        left: int | None = None
        while left is None or left > 0:
            message = await raw.basic_get(self.queue, no_ack=False)
            got = message.delivery
            if not isinstance(got, spec.Basic.GetOk):
                return
            if left is None:
                left = int(got.message_count or 0) + 1
            left -= 1
            letter = self._letter(message)
            if letter is not None:
                yield int(got.delivery_tag or 0), letter

    async def list_dead_letters(self, limit: int) -> list[DeadLetter]:
        async with self._channel() as raw:
            return await first_scanned(self._scan(raw), limit)

    async def peek_dead_letter(self, id: str) -> DeadLetter | None:
        async with self._channel() as raw:
            return await find_scanned(self._scan(raw), id)

    async def take_dead_letters(self, ids: Sequence[str] | None,
                                replay: Replay) -> list[str]:
        async with self._channel() as raw:
            return await take_scanned(self._scan(raw), ids, replay, raw.basic_ack)

    async def purge_dead_letters(self) -> int:
        count = 0
        async with self._channel() as raw:
            async for tag, _ in self._scan(raw):
                await raw.basic_ack(tag)
                count += 1
        return count
