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
from collections.abc import AsyncIterator
from typing import Any

from pamqp import commands as spec

from rrjobs.core.deadletters import DeadLetter, ScannedStore, Session
from rrjobs.drivers.amqp import codec
from rrjobs.drivers.amqp.connection import Link


class DeadLetterQueue(ScannedStore[int]):
    """The :class:`~rrjobs.core.deadletters.DeadLetterStore` of ``pipeline``: its
    letters in ``queue``, through the driver's ``link``."""

    def __init__(self, link: Link, queue: str, pipeline: str, priority: int) -> None:
        super().__init__(pipeline, priority)
        self.link = link
        self.queue = queue

    @contextlib.asynccontextmanager
    async def session(self, removing: bool) -> AsyncIterator[Session[int]]:
        """A channel of its own; a letter is removed by acking its delivery tag."""
        chan, raw = await (await self.link.current()).channel()
        try:
            yield self._scan(raw), raw.basic_ack
        finally:
            with contextlib.suppress(Exception):  # what was not acked goes back
                await chan.close()

    async def _scan(self, raw: Any) -> AsyncIterator[tuple[int, DeadLetter]]:
        """``(delivery tag, letter)`` of the queue's messages, oldest first, up to
        the count the queue held at the first get."""
        left: int | None = None
        while left is None or left > 0:
            message = await raw.basic_get(self.queue, no_ack=False)
            got = message.delivery
            if not isinstance(got, spec.Basic.GetOk):
                return
            if left is None:
                left = int(got.message_count or 0) + 1
            left -= 1
            f = codec.unpack(message.header.properties.headers, self.priority)
            yield int(got.delivery_tag or 0), DeadLetter.of(
                f.id, f.name, bytes(message.body or b""), f.headers, self.pipeline, f.priority)
