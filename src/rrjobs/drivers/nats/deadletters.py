"""``rrjobs dlq`` on a NATS pipeline: its dead letters are the messages of its
``dead_letter_subject`` in the JetStream stream that holds that subject.

They are read one at a time with the stream's message-get API (``next_by_subj``
from a sequence), so nothing is consumed and no consumer is created; a letter is
removed with a message delete. A subject may be shared: letters whose
``rr_original_pipeline`` names another pipeline are left alone. A replay or a
purge covers the letters stored when it began (a letter that fails again after
its replay comes later in the stream).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from functools import partial
from typing import Any

import nats.js.errors

from rrjobs.core.base import describe_error
from rrjobs.core.deadletters import (
    DeadLetter,
    Replay,
    find_scanned,
    first_scanned,
    take_scanned,
)
from rrjobs.core.headers import RR_ERROR, UNREADABLE
from rrjobs.drivers.nats import codec


class DeadLetterSubject:
    """The :class:`~rrjobs.core.deadletters.DeadLetterStore` of ``pipeline``: its
    letters on ``subject``, through the JetStream context ``js``."""

    def __init__(self, js: Any, subject: str, pipeline: str, priority: int) -> None:
        self.js = js
        self.subject = subject
        self.pipeline = pipeline
        self.priority = priority
        self._stream = ""

    async def stream(self) -> str:
        """The name of the stream holding the subject (looked up once)."""
        if not self._stream:
            self._stream = await self.js.find_stream_name_by_subject(self.subject)
        return self._stream

    def letter(self, raw: Any) -> DeadLetter:
        """The dead letter in a stored message (an unreadable one: its raw bytes,
        named by its stream sequence)."""
        try:
            f, payload = codec.job_parts(raw, self.priority)
        except Exception as exc:  # a body or header block no job can carry
            return DeadLetter.of(str(raw.seq), UNREADABLE, raw.data or b"",
                                 {RR_ERROR: [describe_error(exc)]}, self.pipeline)
        return DeadLetter.of(f.id, f.name, payload, f.headers, self.pipeline, f.priority)

    async def scan(self, end: int | None = None) -> AsyncIterator[tuple[int, DeadLetter]]:
        """``(sequence, letter)`` of this pipeline's letters, oldest first, up to
        sequence ``end`` (every one when ``None``)."""
        stream, seq = await self.stream(), 1
        while end is None or seq <= end:
            try:
                raw = await self.js.get_msg(stream, seq=seq, subject=self.subject, next=True)
            except nats.js.errors.NotFoundError:
                return
            if end is not None and raw.seq > end:
                return
            seq = raw.seq + 1
            letter = self.letter(raw)
            if letter.pipeline == self.pipeline:
                yield raw.seq, letter

    async def last_seq(self) -> int:
        info = await self.js.stream_info(await self.stream())
        return int(info.state.last_seq or 0)

    async def list_dead_letters(self, limit: int) -> list[DeadLetter]:
        return await first_scanned(self.scan(), limit)

    async def peek_dead_letter(self, id: str) -> DeadLetter | None:
        return await find_scanned(self.scan(), id)

    async def take_dead_letters(self, ids: Sequence[str] | None,
                                replay: Replay) -> list[str]:
        stream = await self.stream()
        return await take_scanned(self.scan(await self.last_seq()), ids, replay,
                                  partial(self.js.delete_msg, stream))

    async def purge_dead_letters(self) -> int:
        stream, count = await self.stream(), 0
        async for seq, _ in self.scan(await self.last_seq()):
            await self.js.delete_msg(stream, seq)
            count += 1
        return count
