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

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

import nats.js.errors

from rrjobs.core.deadletters import DeadLetter, ScannedStore, Session
from rrjobs.drivers.nats import codec


class DeadLetterSubject(ScannedStore[int]):
    """The :class:`~rrjobs.core.deadletters.DeadLetterStore` of ``pipeline``: its
    letters on ``subject``, through the JetStream context ``js``."""

    def __init__(self, js: Any, subject: str, pipeline: str, priority: int) -> None:
        super().__init__(pipeline, priority)
        self.js = js
        self.subject = subject
        self._stream = ""

    async def stream(self) -> str:
        """The name of the stream holding the subject (looked up once)."""
        if not self._stream:
            self._stream = await self.js.find_stream_name_by_subject(self.subject)
        return self._stream

    def letter(self, raw: Any) -> DeadLetter:
        """The dead letter in a stored message (an unreadable one: its raw bytes,
        named by its stream sequence)."""
        def read() -> DeadLetter:
            f, payload = codec.job_parts(raw, self.priority)
            return DeadLetter.of(f.id, f.name, payload, f.headers, self.pipeline, f.priority)
        return DeadLetter.read(read, str(raw.seq), raw.data or b"", self.pipeline)

    @asynccontextmanager
    async def session(self, removing: bool) -> AsyncIterator[Session[int]]:
        """The subject's messages by sequence (a take or purge: up to the stream's
        last sequence when it began); a letter is removed with a message delete."""
        stream = await self.stream()
        end = int((await self.js.stream_info(stream)).state.last_seq or 0) if removing else None
        yield self.scan(end), partial(self.js.delete_msg, stream)

    async def scan(self, end: int | None = None) -> AsyncIterator[tuple[int, DeadLetter]]:
        """``(sequence, letter)`` of the subject's messages, oldest first, up to
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
            yield raw.seq, self.letter(raw)
