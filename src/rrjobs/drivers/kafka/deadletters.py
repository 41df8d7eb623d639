"""``rrjobs dlq`` on a Kafka pipeline: its dead letters are the records of its
``dead_letter_topic`` from the committed offsets of the consumer group ``rrjobs-dlq-<pipeline>``.

Kafka deletes no single record, so a letter is removed by moving that group's committed offset
past it: each operation reads the topic from those offsets to its end (a consumer of its own,
assigned every partition), and after a replay or a purge commits, per partition, the first
offset still holding a letter of this pipeline. A letter replayed ahead of older ones of its
partition is kept out of the lists by this driver until those go; a restart forgets that, and
the letter shows again (a replay is at-least-once). Records of other pipelines sharing the topic
are never shown, and never hold the offset back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

from aiokafka import AIOKafkaConsumer, TopicPartition  # type: ignore[import-untyped]

from rrjobs.core.deadletters import DeadLetter, ScannedStore, Session, failed_at_text, scanned
from rrjobs.drivers.kafka import codec


class Stored(NamedTuple):
    """A record of the topic: where it is, and its letter."""

    partition: int
    offset: int
    timestamp: int
    letter: DeadLetter


#: How long one read of the topic may take before it gives up.
READ_TIMEOUT = 60.0


class DeadLetterTopic(ScannedStore[Stored]):
    """The :class:`~rrjobs.core.deadletters.DeadLetterStore` of ``pipeline``: its
    letters in ``topic``; ``conn``: aiokafka's connection keywords."""

    def __init__(self, conn: dict[str, Any], topic: str, pipeline: str, priority: int) -> None:
        super().__init__(pipeline, priority)
        self.conn = conn
        self.topic = topic
        self.group = f"rrjobs-dlq-{pipeline}"
        #: per partition: offsets replayed above the committed one
        self._taken: dict[int, set[int]] = {}

    @asynccontextmanager
    async def session(self, removing: bool) -> AsyncIterator[Session[Stored]]:
        """The topic read from the group's offsets with a consumer of its own; a letter is
        removed by marking it taken, and a take or purge ends with :meth:`_commit`."""
        consumer = AIOKafkaConsumer(group_id=self.group, enable_auto_commit=False,
                                    auto_offset_reset="earliest", **self.conn)
        await consumer.start()
        try:
            stored, bounds = await self._read(consumer)
            try:
                yield scanned((s, s.letter) for s in stored
                              if s.offset not in self._taken.get(s.partition, ())), self._take
            finally:
                if removing:
                    await self._commit(consumer, stored, bounds)
        finally:
            await consumer.stop()

    async def _take(self, s: Stored) -> None:
        self._taken.setdefault(s.partition, set()).add(s.offset)

    def _letter(self, record: Any) -> DeadLetter:
        f = codec.decode(record.key, record.value, record.headers or (), self.priority)
        return DeadLetter.of(f.id, f.name, record.value or b"", f.headers, self.pipeline,
                             f.priority, failed_at_text(record.timestamp / 1000))

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
                            out.append(Stored(tp.partition, r.offset, r.timestamp, self._letter(r)))
        out.sort(key=lambda s: (s.timestamp, s.partition, s.offset))
        return out, bounds

    async def _commit(self, consumer: Any, stored: list[Stored],
                      bounds: dict[Any, tuple[int, int]]) -> None:
        """Commit, per partition, the first offset that still holds a letter of this
        pipeline (the end when none does); forget the replays below it."""
        kept: dict[int, int] = {}
        for s in stored:
            if (s.letter.pipeline == self.pipeline
                    and s.offset not in self._taken.get(s.partition, ())):
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
