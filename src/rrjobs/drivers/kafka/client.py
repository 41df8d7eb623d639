"""aiokafka clients from the driver's options: connection settings, producer, partitioners.

Imports aiokafka (the driver package is the only place that does).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import ssl
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener  # type: ignore[import-untyped]
from aiokafka.errors import MessageSizeTooLargeError  # type: ignore[import-untyped]
from aiokafka.record.default_records import (  # type: ignore[import-untyped]
    DefaultRecordBatchBuilder,
)

from rrjobs.core.errors import PayloadTooLargeError
from rrjobs.core.tls import client_ssl_context
from rrjobs.drivers.kafka.codec import Encoded, RecordHeaders, key_partition
from rrjobs.drivers.kafka.config import KafkaOptions, KafkaSection, SASLOptions
from rrjobs.drivers.kafka.failures import describe, failed, window
from rrjobs.drivers.kafka.offsets import OffsetTracker

_ACKS: dict[str, int | str] = {"NoAck": 0, "LeaderAck": 1, "AllISRAck": "all"}
_SASL: dict[str, str] = {"plain": "PLAIN", "SCRAM-SHA-256": "SCRAM-SHA-256",
                         "SCRAM-SHA-512": "SCRAM-SHA-512"}


def ssl_context(section: KafkaSection) -> ssl.SSLContext | None:
    """The TLS context of ``kafka.tls`` (blocking file reads: call at construction)."""
    tls = section.tls
    if tls is None:
        return None
    return client_ssl_context(tls)


def connection_kwargs(section: KafkaSection, sasl: SASLOptions | None,
                      context: ssl.SSLContext | None) -> dict[str, Any]:
    """``bootstrap_servers``, ``security_protocol``, TLS and SASL for any aiokafka client."""
    kwargs: dict[str, Any] = {"bootstrap_servers": list(section.brokers)}
    if sasl is not None:
        kwargs["security_protocol"] = "SASL_SSL" if context is not None else "SASL_PLAINTEXT"
        kwargs["sasl_mechanism"] = _SASL[sasl.mechanism]
        kwargs["sasl_plain_username"] = sasl.username
        kwargs["sasl_plain_password"] = sasl.password
    elif context is not None:
        kwargs["security_protocol"] = "SSL"
    if context is not None:
        kwargs["ssl_context"] = context
    return kwargs


class RoundRobinPartitioner:
    """``RoundRobin``: partitions in turn, whatever the key."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def __call__(self, key: bytes | None, all_partitions: Sequence[int],
                 available: Sequence[int]) -> int:
        return self.pick(sorted(available) if available else list(all_partitions))

    def pick(self, choices: Sequence[int]) -> int:
        """The next of ``choices`` (the available partitions, sorted, else all)."""
        return choices[next(self._counter) % len(choices)]


#: A record to produce: topic, partition (``None``: the partitioning strategy
#: picks it), key, value, headers.
Record = tuple[str, int | None, bytes, bytes, RecordHeaders]

#: A record whose size in a batch is within this many bytes of
#: ``max_message_bytes`` is measured exactly, as aiokafka's ``send`` measures
#: every record (its estimate exceeds the real size by less than this).
_SIZE_SLACK = 256


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a result nobody awaits as retrieved (no "never retrieved" warning)."""
    if not fut.cancelled():
        fut.exception()


class Producer:
    """The pipeline's producer: ``send`` and ``send_records`` wait for the broker's
    acknowledgement.

    Concurrency-safe (aiokafka batches concurrent sends). ``delivery_timeout``
    bounds each wait when set.

    Partitions are picked here, as the ``partitioning_strategy`` does
    (``Uniform``: murmur2 of the key, as Kafka's default partitioner, whose hash
    is skipped for a topic of one partition; ``RoundRobin``: in turn; ``Manual``:
    the message's), when the topic's metadata is known; otherwise aiokafka's
    partitioner (the same strategy) picks them once it is.
    """

    def __init__(self, options: KafkaOptions, conn: dict[str, Any]) -> None:
        p = options.producer_options
        self.manual = p.partitioning_strategy == "Manual"
        self.delivery_timeout = p.delivery_timeout or None
        self.max_request_size = p.max_message_bytes
        self._round_robin = (RoundRobinPartitioner()
                             if p.partitioning_strategy == "RoundRobin" else None)
        kwargs: dict[str, Any] = dict(conn)
        kwargs.update(
            acks=_ACKS[p.required_acks],
            enable_idempotence=not p.disable_idempotent,
            max_request_size=p.max_message_bytes,
            request_timeout_ms=int(p.request_timeout * 1000),
            compression_type=p.compression_codec,
            linger_ms=0,
            max_batch_size=min(p.max_message_bytes, 1024 * 1024),
        )
        if self._round_robin is not None:
            kwargs["partitioner"] = self._round_robin
        self.client = AIOKafkaProducer(**kwargs)

    async def start(self) -> None:
        await self.client.start()

    async def stop(self) -> None:
        await self.client.stop()

    # -- partitions ------------------------------------------------------------------------

    def _chooser(self, topic: str, partitions: set[int]) -> Callable[[bytes], int]:
        """``key → partition`` for ``topic`` by the partitioning strategy, from its
        known ``partitions`` (listed as aiokafka lists them to its partitioner)."""
        listed = list(partitions)
        if self._round_robin is not None:
            available = self.client.client.cluster.available_partitions_for_topic(topic)
            choices = sorted(available) if available else listed
            pick = self._round_robin.pick
            return lambda key: pick(choices)
        if len(listed) == 1:  # the key's hash would not matter
            only = listed[0]
            return lambda key: only
        return lambda key: key_partition(key, listed)

    @staticmethod
    def _check_partition(topic: str, partition: int, partitions: set[int]) -> None:
        if partition not in partitions:
            raise ValueError(f"kafka: topic {topic!r} has no partition {partition} "
                             f"(it has {sorted(partitions)})")

    def _too_large(self, key: bytes, value: bytes,
                   headers: RecordHeaders) -> None:
        """Raise :class:`PayloadTooLargeError` for a record aiokafka's ``send`` refuses."""
        size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
        if size > self.max_request_size:
            raise PayloadTooLargeError(
                f"kafka: record of {len(value)} bytes ({size} with its key and headers) is "
                f"too large for max_message_bytes ({self.max_request_size})")

    # -- producing -------------------------------------------------------------------------

    async def enqueue(self, topic: str, rec: Encoded,
                      partition: int | None = None) -> asyncio.Future[Any]:
        """Hand a record to the producer; the returned future resolves once the
        broker acknowledged it. Raises :class:`PayloadTooLargeError` at once for
        a record over ``max_message_bytes``, :class:`ValueError` for a partition
        the topic does not have."""
        partitions = self.client.client.cluster.partitions_for_topic(topic)
        if partitions:
            if partition is None:
                partition = self._chooser(topic, partitions)(rec.key)
            else:
                self._check_partition(topic, partition, partitions)
        try:
            fut: asyncio.Future[Any] = await self.client.send(
                topic, rec.value, key=rec.key, partition=partition, headers=rec.headers)
        except MessageSizeTooLargeError as exc:
            raise PayloadTooLargeError(f"kafka: record of {len(rec.value)} bytes is too large "
                                       f"for max_message_bytes: {exc}") from None
        return fut

    async def wait(self, futures: Sequence[asyncio.Future[Any]]) -> None:
        """Wait for the acknowledgements of ``futures`` (within ``delivery_timeout``)."""
        if not futures:
            return
        try:
            async with asyncio.timeout(self.delivery_timeout):
                await asyncio.gather(*futures)
        except MessageSizeTooLargeError as exc:
            raise PayloadTooLargeError(f"kafka: the broker refused a record as too large: "
                                       f"{exc}") from None

    async def send(self, topic: str, rec: Encoded, partition: int | None = None) -> None:
        await self.wait([await self.enqueue(topic, rec, partition)])

    async def send_records(self, records: Iterable[Record]) -> None:
        """Produce ``records`` and wait for the broker's acknowledgements (within
        ``delivery_timeout``).

        The records are written into aiokafka record batches (``create_batch``),
        one per partition or more when one is full (``max_batch_size``), and each
        batch is handed over with ``send_batch``: one future per batch, not per
        record. The producer's acks and idempotence apply to these batches as to
        any (sequence numbers are assigned per batch when it is sent). Records of
        one partition keep their order. Partitions are picked as the strategy
        does (see the class doc), waiting for a topic's metadata when unknown.

        Nothing is sent if a record is over ``max_message_bytes``
        (:class:`PayloadTooLargeError`) or names a partition its topic does not
        have (:class:`ValueError`): every batch is built before the first is handed
        over. If the broker refuses a batch, the first such error is raised; other
        batches may have been stored.
        """
        client = self.client
        cluster = client.client.cluster
        create = client.create_batch
        limit = self.max_request_size - _SIZE_SLACK
        batches: dict[tuple[str, int], list[Any]] = {}
        targets: dict[str, tuple[set[int], Callable[[bytes], int]]] = {}
        topic_seen: str | None = None
        partitions: set[int] = set()
        choose: Callable[[bytes], int] = int
        seen_partition = -1
        chain: list[Any] = []
        builder: Any = None
        for topic, partition, key, value, headers in records:
            if topic != topic_seen:
                target = targets.get(topic)
                if target is None:
                    known = cluster.partitions_for_topic(topic)
                    parts = known if known else await client.partitions_for(topic)
                    target = targets[topic] = (parts, self._chooser(topic, parts))
                partitions, choose = target
                topic_seen, seen_partition = topic, -1
            if partition is None:
                partition = choose(key)
            elif partition not in partitions:
                self._check_partition(topic, partition, partitions)
            if partition != seen_partition:
                seen_partition = partition
                chain = batches.setdefault((topic, partition), [])
                if not chain:
                    chain.append(create())
                builder = chain[-1]
            meta = builder.append(timestamp=None, key=key, value=value, headers=headers)
            if meta is None:  # full: the record starts the partition's next batch
                builder = create()
                chain.append(builder)
                meta = builder.append(timestamp=None, key=key, value=value, headers=headers)
            if meta.size > limit:
                self._too_large(key, value, headers)
        futures: list[asyncio.Future[Any]] = []
        try:
            for (topic, partition), chain in batches.items():
                for builder in chain:
                    futures.append(await client.send_batch(builder, topic, partition=partition))
        except BaseException:
            for fut in futures:
                fut.add_done_callback(_retrieve)
            raise
        await self.wait(futures)


class Commits:
    """Commits the settled prefix of ``tracker`` through ``consumer`` (set once it
    exists): the commit loop of the driver and of its delay forwarder.

    :meth:`loop` commits whenever the prefix moved (:attr:`event`), at most every
    ``interval`` seconds; a failed commit is retried at that pace. Commits failing
    for longer than ``error_timeout``, or with an error that is not Kafka's (see
    :mod:`~rrjobs.drivers.kafka.failures`), call ``on_fatal(what, error)``; when it
    returns true the loop ends (the pipeline is being restarted). ``on_outage(True)``
    is called when commits start failing (logged once), ``on_outage(False)`` when one
    succeeds again.
    """

    def __init__(self, tracker: OffsetTracker[Any], label: str, interval: float,
                 error_timeout: float, on_fatal: Callable[[str, BaseException], bool],
                 log: logging.Logger,
                 on_outage: Callable[[bool], None] | None = None) -> None:
        self.tracker = tracker
        self.on_outage = on_outage
        self.consumer: Any = None
        self.event = asyncio.Event()
        self.interval = interval
        self.error_timeout = error_timeout
        self._label = label
        self._on_fatal = on_fatal
        self._log = log
        self._lock = asyncio.Lock()

    def settle(self, tp: Any, offset: int) -> None:
        """A record is done; commit when the prefix moved."""
        if self.tracker.settle(tp, offset):
            self.event.set()

    async def commit(self, tps: Iterable[Any] | None = None) -> None:
        """Commit the moved prefix of ``tps`` (or of every partition) now."""
        async with self._lock:
            offsets = self.tracker.to_commit(tps)
            if offsets and self.consumer is not None:
                await self.consumer.commit(offsets)
                self.tracker.committed(offsets)

    async def loop(self) -> None:
        outage = window(self.error_timeout)
        while True:
            await self.event.wait()
            self.event.clear()
            try:
                await self.commit()
            except Exception as exc:
                first = not outage.failing
                if failed(outage, exc, by_kind=False):
                    if self._on_fatal(describe("commit", outage), exc):
                        return
                    outage.ok()
                elif first:
                    self._log.warning("%s: commit failed, will retry: %s: %s", self._label,
                                      type(exc).__name__, exc)
                    if self.on_outage is not None:
                        self.on_outage(True)
                self.event.set()
            else:
                if outage.failing:
                    outage.ok()
                    self._log.info("%s: committing again", self._label)
                    if self.on_outage is not None:
                        self.on_outage(False)
            await asyncio.sleep(self.interval)


class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands a consumer's rebalances to ``owner.revoked``/``owner.assigned`` (coroutines
    taking the set of partitions): the driver's and its delay forwarder's."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        await self.owner.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        await self.owner.assigned(set(assigned))
