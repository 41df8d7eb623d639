"""``rrjobs dlq`` on a Kafka pipeline: its dead letters are the records of its
``dead_letter_topic`` from the committed offsets of the consumer group
``rrjobs-dlq-<pipeline>`` on.

Kafka deletes no single record, so a letter is removed by moving that group's
committed offset past it: each operation reads the topic from those offsets to
its end (a consumer of its own, assigned every partition), and after a replay
or a purge commits, per partition, the first offset still holding a letter of
this pipeline. A letter replayed ahead of older ones of its partition is kept
out of the lists by this driver until those go; a restart forgets that, and
the letter shows again (a replay is at-least-once). Records of other
pipelines sharing the topic are never shown, and never hold the offset back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]

from rrjobs.core.deadletters import DeadLetter, Replay, failed_at_text
from rrjobs.drivers.kafka import codec


class Stored(NamedTuple):
    """A record of the topic: where it is, and its letter (``None``: another pipeline's)."""

    partition: int
    offset: int
    timestamp: int
    letter: DeadLetter | None


#: How long one read of the topic may take before it gives up.
READ_TIMEOUT = 60.0


class DeadLetterTopic:
    """The :class:`~rrjobs.core.deadletters.DeadLetterStore` of ``pipeline``: its
    letters in ``topic``; ``conn``: aiokafka's connection keywords."""

    def __init__(self, conn: dict[str, Any], topic: str, pipeline: str, priority: int,
                 log: logging.Logger) -> None:
        self.conn = conn
        self.topic = topic
        self.pipeline = pipeline
        self.priority = priority
        self.group = f"rrjobs-dlq-{pipeline}"
        self.log = log
        #: per partition: offsets replayed above the committed one
        self._taken: dict[int, set[int]] = {}

    @asynccontextmanager
    async def _reader(self) -> AsyncIterator[Any]:
        consumer = AIOKafkaConsumer(group_id=self.group, enable_auto_commit=False,
                                    auto_offset_reset="earliest", **self.conn)
        await consumer.start()
        try:
            yield consumer
        finally:
            await consumer.stop()

    def _letter(self, record: Any) -> DeadLetter | None:
        f = codec.decode(record.key, record.value, record.headers or (), self.priority)
        letter = DeadLetter.of(f.id, f.name, record.value or b"", f.headers, self.pipeline,
                               f.priority, failed_at_text(record.timestamp / 1000))
        return letter if letter.pipeline == self.pipeline else None

    async def _read(self, consumer: Any) -> tuple[list[Stored], dict[Any, tuple[int, int]]]:
        """Every record from the committed offsets to the end, oldest first, and per
        partition its ``(committed, end)`` offsets."""
        metadata = await consumer._client.fetch_all_metadata()  # as the driver's open does
        tps = [TopicPartition(self.topic, p)
               for p in sorted(metadata.partitions_for_topic(self.topic) or ())]
        consumer.assign(tps)
        bounds: dict[Any, tuple[int, int]] = {}
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            start = await consumer.committed(tp)
            if start is None:
                await consumer.seek_to_beginning(tp)
                start = await consumer.position(tp)
            else:
                consumer.seek(tp, start)
            bounds[tp] = (start, ends[tp])
        out: list[Stored] = []
        async with asyncio.timeout(READ_TIMEOUT):
            for tp in tps:
                while await consumer.position(tp) < ends[tp]:
                    batch = await consumer.getmany(tp, timeout_ms=1000)
                    for r in batch.get(tp, ()):
                        if r.offset < ends[tp]:
                            out.append(Stored(tp.partition, r.offset, r.timestamp,
                                              self._letter(r)))
        out.sort(key=lambda s: (s.timestamp, s.partition, s.offset))
        return out, bounds

    def _shown(self, stored: list[Stored]) -> list[tuple[Stored, DeadLetter]]:
        return [(s, s.letter) for s in stored if s.letter is not None
                and s.offset not in self._taken.get(s.partition, ())]

    async def list_dead_letters(self, limit: int) -> list[DeadLetter]:
        async with self._reader() as consumer:
            stored, _ = await self._read(consumer)
        return [letter for _, letter in self._shown(stored)[:limit]]

    async def peek_dead_letter(self, id: str) -> DeadLetter | None:
        async with self._reader() as consumer:
            stored, _ = await self._read(consumer)
        return next((letter for _, letter in self._shown(stored) if letter.id == id), None)

    async def take_dead_letters(self, ids: Sequence[str] | None,
                                replay: Replay) -> list[str]:
        taken: list[str] = []
        async with self._reader() as consumer:
            stored, bounds = await self._read(consumer)
            chosen = self._shown(stored)
            if ids is not None:
                oldest: dict[str, tuple[Stored, DeadLetter]] = {}
                for s, letter in chosen:
                    oldest.setdefault(letter.id, (s, letter))
                chosen = [oldest[i] for i in dict.fromkeys(ids) if i in oldest]
            try:
                for s, letter in chosen:
                    await replay(letter)
                    self._taken.setdefault(s.partition, set()).add(s.offset)
                    taken.append(letter.id)
            finally:
                await self._commit(consumer, stored, bounds)
        return taken

    async def purge_dead_letters(self) -> int:
        async with self._reader() as consumer:
            stored, bounds = await self._read(consumer)
            count = len(self._shown(stored))
            for s in stored:
                self._taken.setdefault(s.partition, set()).add(s.offset)
            await self._commit(consumer, stored, bounds)
        return count

    async def _commit(self, consumer: Any, stored: list[Stored],
                      bounds: dict[Any, tuple[int, int]]) -> None:
        """Commit, per partition, the first offset that still holds a letter of this
        pipeline (the end when none does); forget the replays below it."""
        kept: dict[int, int] = {}
        for s in stored:
            if s.letter is not None and s.offset not in self._taken.get(s.partition, ()):
                kept[s.partition] = min(kept.get(s.partition, s.offset), s.offset)
        offsets = {}
        for tp, (start, end) in bounds.items():
            first = kept.get(tp.partition, end)
            if first != start:
                offsets[tp] = first
            taken = self._taken.get(tp.partition)
            if taken:
                taken.difference_update({o for o in taken if o < first})
        if offsets:
            await consumer.commit(offsets)
