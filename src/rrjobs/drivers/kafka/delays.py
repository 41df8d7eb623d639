"""Delayed jobs on Kafka: a delay topic and a forwarder.

Kafka has no delayed delivery, and holding a record unacknowledged in memory
until it is due would tie the delay to one consumer's life and hold back the
commit of everything after it. The design:

1. **A delayed job is a record in the pipeline's delay topic** (default
   ``<topic>.rrjobs-delayed``), written with the job's usual layout plus
   ``rr_due`` (unix ms, decimal) and ``rr_target_topic`` /
   ``rr_target_partition`` (where it goes when due). A delayed push, and a
   ``nack(requeue=True, delay)`` or ``requeue(headers, delay)``, produce it
   and return once the broker has it: from then on the delay is durable,
   whatever happens to the process.
2. **Every consuming driver runs a forwarder**, a consumer of the delay topic in
   the group ``<group_id>.rrjobs-delayed`` (``rrjobs-delayed.<delay topic>``
   for a pipeline without a group): each delay-topic partition is forwarded by
   exactly one live consumer, and its progress is committed to Kafka.
3. The forwarder reads ahead up to ``buffer`` records (the pipeline's
   ``delay_buffer``, 10,000 by default) and keeps their due times
   on one timer heap (:class:`~rrjobs.core.timers.DelayQueue`). When a record
   is due it is produced to its target topic (``rr_due`` and the target
   headers removed) and, once the broker has the copy, marked done in the
   delay topic's :class:`~rrjobs.drivers.kafka.offsets.OffsetTracker`; the
   contiguous forwarded prefix is committed. With ``buffer`` records waiting,
   the forwarder pauses its partitions until one is forwarded.
4. **Restart**: a forwarder that stops or dies leaves its uncommitted records
   in the delay topic; the next member of the group reads them again and
   forwards each when due. Nothing is held unacknowledged past a consumer's
   life; a record forwarded but not yet committed when the process died is
   forwarded again (at-least-once: a duplicate, never a loss).

Delays are exact to the timer (not before ``rr_due``; after it by the produce
round trip), in any order of due times, up to ``buffer`` pending records per
forwarder; beyond that, records wait in the topic, in order, and a long delay
ahead of them can make shorter ones late (never early).

Pausing a pipeline does not pause its forwarder: jobs falling due while paused
move to the (paused) main topic and wait there.

A fatal error of the forwarder's consumer (see
:mod:`~rrjobs.drivers.kafka.failures`) is reported through ``on_fatal``, which
asks the runtime to restart the pipeline; uncommitted records are forwarded
again by the next forwarder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError  # type: ignore[import-untyped]

from rrjobs.core.delays import whole_millis
from rrjobs.core.supervise import Supervisor
from rrjobs.core.timers import DelayQueue
from rrjobs.drivers.kafka import failures
from rrjobs.drivers.kafka.client import Commits, Listener, Producer
from rrjobs.drivers.kafka.codec import RR_DUE, RR_TARGET_PARTITION, RR_TARGET_TOPIC, Encoded
from rrjobs.drivers.kafka.config import DEFAULT_DELAY_BUFFER
from rrjobs.drivers.kafka.failures import RETRY_BACKOFF
from rrjobs.drivers.kafka.offsets import OffsetTracker

log = logging.getLogger("rrjobs.drivers.kafka")

#: Records a forwarder keeps scheduled in memory at most (the ``delay_buffer`` option).
DEFAULT_BUFFER = DEFAULT_DELAY_BUFFER


def due_headers(delay: float, topic: str, partition: int | None) -> list[tuple[str, bytes]]:
    """The headers that make a record a delayed one: due (unix ms, rounded up: never
    early) and target."""
    due = -(-time.time_ns() // 1_000_000) + whole_millis(delay)
    return [(RR_DUE, str(due).encode()), (RR_TARGET_TOPIC, topic.encode()),
            (RR_TARGET_PARTITION, b"" if partition is None else str(partition).encode())]


@dataclass(slots=True)
class _Entry:
    tp: Any
    offset: int
    generation: int
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]
    topic: str
    partition: int | None


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
        due_ms = int(meta[RR_DUE].decode())
        topic = meta[RR_TARGET_TOPIC].decode()
        raw_partition = meta.get(RR_TARGET_PARTITION, b"").decode()
        partition = int(raw_partition) if raw_partition else None
    except (KeyError, ValueError, UnicodeDecodeError):
        return 0.0, None
    wait = max(0.0, due_ms / 1000 - time.time())
    entry = _Entry(tp, record.offset, generation, record.key, record.value or b"", rest,
                   topic, partition)
    return wait, entry


class DelayForwarder:
    """Forwards due records of a delay topic to their targets (see the module doc).

    Runs on the event loop, its loops in the driver's ``supervisor``;
    ``start``/``stop`` are not concurrency-safe with each other. ``tracker`` is
    read by the driver's ``state()``.

    ``buffer`` (> 0) bounds the records read ahead and scheduled. Fetches
    failing fatally, or commits failing for longer than ``error_timeout``
    (``0``: never), call ``on_fatal(what, error)``; when it returns true the
    failing loop ends (the pipeline is being restarted), otherwise it retries.
    """

    def __init__(self, *, topic: str, group_id: str, conn: dict[str, Any], producer: Producer,
                 group_timings: dict[str, int], commit_interval: float,
                 supervisor: Supervisor, buffer: int = DEFAULT_BUFFER, error_timeout: float = 0.0,
                 on_fatal: Callable[[str, BaseException], bool] | None = None,
                 on_forwarded: Callable[[int], None] | None = None) -> None:
        if buffer <= 0:
            raise ValueError(f"buffer must be > 0, not {buffer}")
        self.topic = topic
        self.group_id = group_id
        self.buffer = buffer
        self._error_timeout = error_timeout
        self._on_fatal = on_fatal
        self.tracker: OffsetTracker[Any] = OffsetTracker()
        self.commits = Commits(self.tracker, f"delay topic {topic!r}", commit_interval,
                               error_timeout, self._fatal, log)
        self._conn = conn
        self._producer = producer
        self._timings = group_timings
        self._supervisor = supervisor
        self._on_forwarded = on_forwarded
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

    # -- lifecycle --------------------------------------------------------------------------

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

    async def stop(self) -> None:
        for name, _ in self._loops():
            await self._supervisor.stop_task(name)
        self._timers.drain()
        self._due.clear()
        self._pending.clear()
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await self.commits.commit()
            with contextlib.suppress(Exception):
                await self._consumer.stop()
            self._consumer = None

    # -- reading ----------------------------------------------------------------------------

    async def _read(self) -> None:
        consumer = self._consumer
        outage = failures.window(self._error_timeout)
        paused = False
        while True:
            room = self.buffer - self.scheduled
            assignment = consumer.assignment()
            if room <= 0 and not paused:
                consumer.pause(*assignment)
                paused = True
            elif room > 0 and paused:
                consumer.resume(*assignment)
                paused = False
            try:
                batch = await consumer.getmany(timeout_ms=200 if paused else 500,
                                               max_records=max(1, min(room, 1000)))
            except Exception as exc:
                if failures.failed(outage, exc):
                    if self._fatal(failures.describe("fetch", outage), exc):
                        return
                    outage.ok()
                else:
                    log.warning("delay topic %r: fetch failed: %s", self.topic, exc)
                await asyncio.sleep(RETRY_BACKOFF)
                continue
            outage.ok()
            for tp, records in batch.items():
                generation = self._generation.get(tp, 0)
                for record in records:
                    wait, entry = parse(record, tp, generation)
                    self.tracker.track(tp, record.offset)
                    if entry is None:
                        log.error("delay topic %r: record %s@%d has no due time or target; "
                                  "skipped", self.topic, tp, record.offset)
                        self.commits.settle(tp, record.offset)
                        continue
                    self._pending[tp] = self._pending.get(tp, 0) + 1
                    self._timers.add(wait, entry)

    def _fire(self, entry: _Entry) -> None:
        self._due.append(entry)
        self._due_event.set()

    # -- forwarding -----------------------------------------------------------------------------

    async def _forward(self) -> None:
        while True:
            await self._due_event.wait()
            self._due_event.clear()
            async with self._forward_lock:
                batch = [e for e in self._drain_due() if self._current(e)]
                if not batch:
                    continue
                try:
                    futures = [await self._producer.enqueue(
                        e.topic, Encoded(e.key or b"", e.value, e.headers), e.partition)
                        for e in batch]
                    await self._producer.wait(futures)
                except Exception as exc:
                    log.warning("delay topic %r: forwarding %d records failed, will retry: %s",
                                self.topic, len(batch), exc)
                    await asyncio.sleep(0.5)
                    self._due.extendleft(reversed(batch))
                    self._due_event.set()
                    continue
                for e in batch:
                    if self._current(e):
                        self._pending[e.tp] = max(0, self._pending.get(e.tp, 0) - 1)
                        self.commits.settle(e.tp, e.offset)
                if self._on_forwarded is not None:
                    self._on_forwarded(len(batch))

    def _drain_due(self) -> list[_Entry]:
        out = list(self._due)
        self._due.clear()
        return out

    def _current(self, entry: _Entry) -> bool:
        return self._generation.get(entry.tp, 0) == entry.generation and entry.tp in self.tracker

    def _fatal(self, what: str, exc: BaseException) -> bool:
        """Report a fatal failure; ``True``: the pipeline restarts, stop the loop."""
        if self._on_fatal is None:
            log.error("delay topic %r: %s: %s: %s", self.topic, what, type(exc).__name__, exc)
            return False
        return self._on_fatal(f"delay topic {self.topic!r}: {what}", exc)

    # -- rebalance ---------------------------------------------------------------------------------

    async def revoked(self, revoked: set[Any]) -> None:
        async with self._forward_lock:  # a forward in progress finishes (and is committed)
            with contextlib.suppress(KafkaError):
                await self.commits.commit(revoked)
        for tp in revoked:
            self._generation[tp] = self._generation.get(tp, 0) + 1
        self._due = deque(e for e in self._due if e.tp not in revoked)
        self.tracker.revoke(revoked)
        # Timer entries of revoked partitions are skipped when they fire.
        for tp in revoked:
            self._pending.pop(tp, None)

    async def assigned(self, assigned: set[Any]) -> None:
        for tp in assigned:
            self.tracker.assign(tp)
