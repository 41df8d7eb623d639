"""Delayed jobs on Kafka ("Delays" in docs/drivers/kafka.md): a record in the delay topic with
``rr_due`` (unix ms) and its target, forwarded when due by the :class:`DelayForwarder` of a
consumer in the group ``<group_id>.rrjobs-delayed``, which commits the contiguous forwarded
prefix: what it had not committed is forwarded again (at-least-once, never early)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from rrjobs.core.delays import due_at_ms
from rrjobs.core.outage import Attempts, Outage
from rrjobs.core.supervise import Supervisor
from rrjobs.core.timers import DelayQueue
from rrjobs.drivers.kafka.client import RETRY_BACKOFF, Commits, Listener, Producer, fatal_error
from rrjobs.drivers.kafka.codec import RR_DUE, RR_TARGET_PARTITION, RR_TARGET_TOPIC, Record
from rrjobs.drivers.kafka.config import DEFAULT_DELAY_BUFFER
from rrjobs.drivers.kafka.offsets import OffsetTracker


def due_headers(delay: float, topic: str, partition: int | None) -> list[tuple[str, bytes]]:
    """A delayed record's headers: due (unix ms, rounded up: never early) and target."""
    return [(RR_DUE, str(due_at_ms(delay)).encode()), (RR_TARGET_TOPIC, topic.encode()),
            (RR_TARGET_PARTITION, b"" if partition is None else str(partition).encode())]


@dataclass(slots=True)
class _Entry:
    tp: Any
    offset: int
    generation: int
    record: Record  #: the record to forward


def parse(record: Any, tp: Any, generation: int) -> tuple[float, _Entry | None]:
    """Seconds until ``record`` is due, and where it goes (``None``: unreadable)."""
    meta: dict[str, bytes] = {}
    rest: list[tuple[str, bytes]] = []
    for key, value in record.headers or ():
        if key in (RR_DUE, RR_TARGET_TOPIC, RR_TARGET_PARTITION):
            meta[key] = value or b""
        else:
            rest.append((key, value or b""))
    try:
        due_ms = int(meta[RR_DUE])  # int() reads ASCII digits from bytes
        topic = meta[RR_TARGET_TOPIC].decode()
        partition = int(meta[RR_TARGET_PARTITION]) if meta.get(RR_TARGET_PARTITION) else None
    except (KeyError, ValueError, UnicodeDecodeError):
        return 0.0, None
    return max(0.0, due_ms / 1000 - time.time()), _Entry(
        tp, record.offset, generation, (topic, partition, record.key or b"", record.value or b"",
                                        rest))


class DelayForwarder:
    """Forwards due records of a delay topic (loops in the driver's ``supervisor``; ``start``
    and ``stop`` not concurrently). A fatal failure calls ``on_fatal(what, error)``; when it
    returns true the failing loop ends (the pipeline restarts). Other failures are the
    pipeline's ``outage`` (sources ``delay fetch``, ``delay forward``, ``delay commits``)."""

    def __init__(self, *, topic: str, group_id: str, conn: dict[str, Any], producer: Producer,
                 group_timings: dict[str, int], commit_interval: float,
                 supervisor: Supervisor, outage: Outage,
                 on_fatal: Callable[[str, BaseException], bool],
                 buffer: int = DEFAULT_DELAY_BUFFER, error_timeout: float = 0.0) -> None:
        if buffer <= 0:
            raise ValueError(f"buffer must be > 0, not {buffer}")
        self.topic = topic
        self.group_id = group_id
        self.buffer = buffer
        self.outage = outage
        self._on_fatal = on_fatal
        self._reads = Attempts(outage, "delay fetch", error_timeout, self._fatal, fatal_error,
                               RETRY_BACKOFF)
        self.tracker: OffsetTracker[Any] = OffsetTracker()
        self.commits = Commits(self.tracker, commit_interval, error_timeout, self._fatal,
                               outage, "delay commits")
        self._conn = conn
        self._producer = producer
        self._timings = group_timings
        self._supervisor = supervisor
        self._consumer: Any = None
        self._timers: DelayQueue[_Entry] = DelayQueue(self._fire)
        self._due: deque[_Entry] = deque()
        self._due_event = asyncio.Event()
        self._generation: dict[Any, int] = {}
        self._pending: dict[Any, int] = {}
        self._forward_lock = asyncio.Lock()

    @property
    def scheduled(self) -> int:
        """Records read and waiting for their due time (or being forwarded)."""
        return sum(self._pending.values())

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            group_id=self.group_id, enable_auto_commit=False, auto_offset_reset="earliest",
            isolation_level="read_committed", **self._timings, **self._conn)
        await self._consumer.start()
        self.commits.consumer = self._consumer
        self._consumer.subscribe([self.topic], listener=Listener(self))
        for name, body in self._loops():
            self._supervisor.start(name, body)

    def _loops(self) -> list[tuple[str, Any]]:
        return [("delay-read", self._read), ("delay-forward", self._forward),
                ("delay-commits", self.commits.loop)]

    async def stop(self, bounded: Callable[[Awaitable[Any], str], Awaitable[None]]) -> None:
        """Stop the loops, commit, close the consumer; ``bounded(call, what)`` awaits the
        two broker calls (the driver's ``BaseDriver.bounded``: never raises)."""
        for name, _ in self._loops():
            await self._supervisor.stop_task(name)
        self._timers.drain()
        self._due.clear()
        self._pending.clear()
        if self._consumer is not None:
            await bounded(self.commits.commit(), "the delay topic's commit")
            await bounded(self._consumer.stop(), "closing the delay consumer")
            self._consumer = None

    async def _read(self) -> None:
        consumer = self._consumer
        while True:
            room = self.buffer - self.scheduled
            paused = room <= 0  # until a scheduled record is forwarded
            (consumer.pause if paused else consumer.resume)(*consumer.assignment())
            batch = await self._reads.attempt(consumer.getmany(
                timeout_ms=200 if paused else 500, max_records=max(1, min(room, 1000))),
                "fetch", {}, f"reading delay topic {self.topic!r}")
            if batch is None:
                return
            for tp, records in batch.items():
                generation = self._generation.get(tp, 0)
                self.tracker.track_many(tp, [r.offset for r in records])
                for record in records:
                    wait, entry = parse(record, tp, generation)
                    if entry is None:
                        self.outage.log.error("delay topic %r: record %s@%d has no due time "
                                              "or target; skipped", self.topic, tp, record.offset)
                        self.commits.settle(tp, record.offset)
                        continue
                    self._pending[tp] = self._pending.get(tp, 0) + 1
                    self._timers.add(wait, entry)

    def _fire(self, entry: _Entry) -> None:
        self._due.append(entry)
        self._due_event.set()

    async def _forward(self) -> None:
        while True:
            await self._due_event.wait()
            self._due_event.clear()
            async with self._forward_lock:
                batch = [e for e in self._due if self._current(e)]
                self._due.clear()
                if not batch:
                    continue
                try:
                    await self._producer.send_records(e.record for e in batch)
                except Exception as exc:
                    self.outage.down(exc, call=f"forwarding {len(batch)} delayed records",
                                     source="delay forward")
                    await asyncio.sleep(RETRY_BACKOFF)
                    self._due.extendleft(reversed(batch))
                    self._due_event.set()
                    continue
                self.outage.ok(source="delay forward")
                for e in batch:
                    if self._current(e):
                        self._pending[e.tp] = max(0, self._pending.get(e.tp, 0) - 1)
                        self.commits.settle(e.tp, e.offset)

    def _current(self, entry: _Entry) -> bool:
        return self._generation.get(entry.tp, 0) == entry.generation and entry.tp in self.tracker

    def _fatal(self, what: str, exc: BaseException) -> bool:
        """Report a fatal failure; ``True``: the pipeline restarts, stop the loop."""
        return self._on_fatal(f"delay topic {self.topic!r}: {what}", exc)

    async def revoked(self, revoked: set[Any]) -> None:
        async with self._forward_lock:  # a forward in progress finishes (and is committed)
            with contextlib.suppress(KafkaError):
                await self.commits.commit(revoked)
        for tp in revoked:  # their timer entries are skipped when they fire
            self._generation[tp] = self._generation.get(tp, 0) + 1
            self._pending.pop(tp, None)
        self._due = deque(e for e in self._due if e.tp not in revoked)
        self.tracker.revoke(revoked)

    async def assigned(self, assigned: set[Any]) -> None:
        for tp in assigned:
            self.tracker.assign(tp)
