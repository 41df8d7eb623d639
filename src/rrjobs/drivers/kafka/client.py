"""aiokafka clients from the driver's options: connection settings, producer, commits, and
when a client error is fatal."""

from __future__ import annotations

import asyncio
import functools
import itertools
import ssl
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer, ConsumerRebalanceListener  # type: ignore[import-untyped]
from aiokafka.errors import KafkaError, MessageSizeTooLargeError  # type: ignore[import-untyped]
from aiokafka.record.default_records import (  # type: ignore[import-untyped]
    DefaultRecordBatchBuilder,
)

from rrjobs.core.errors import PayloadTooLargeError
from rrjobs.core.outage import Attempts, Outage
from rrjobs.drivers.kafka.codec import Record, key_partition
from rrjobs.drivers.kafka.config import KafkaOptions, KafkaSection, SASLOptions
from rrjobs.drivers.kafka.offsets import OffsetTracker

_ACKS: dict[str, int | str] = {"NoAck": 0, "LeaderAck": 1, "AllISRAck": "all"}
#: Seconds a failing loop waits before it tries again.
RETRY_BACKOFF = 0.5


def fatal_error(exc: BaseException, *, by_kind: bool = True) -> bool:
    """Fatal at once ("Fatal client errors" in docs/drivers/kafka.md): a foreign exception (the
    client does not recover) or, by kind, a non-retriable :class:`KafkaError`; commits (not
    ``by_kind``) only after ``error_timeout``: one refused in a rebalance is expected."""
    return not isinstance(exc, KafkaError) or (by_kind and not exc.retriable)


def connection_kwargs(section: KafkaSection, sasl: SASLOptions | None,
                      context: ssl.SSLContext | None) -> dict[str, Any]:
    """``bootstrap_servers``, ``security_protocol``, TLS and SASL for any aiokafka client."""
    kwargs: dict[str, Any] = {"bootstrap_servers": list(section.brokers)}
    if context is not None:
        kwargs.update(security_protocol="SSL", ssl_context=context)
    if sasl is not None:  # the mechanism is plain or SCRAM-SHA-*: aiokafka's names in capitals
        kwargs.update(security_protocol="SASL_SSL" if context is not None else "SASL_PLAINTEXT",
                      sasl_mechanism=sasl.mechanism.upper(), sasl_plain_username=sasl.username,
                      sasl_plain_password=sasl.password.get_secret_value())
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


#: A batched record this close to ``max_message_bytes`` is measured as aiokafka's ``send``
#: measures every record (its estimate exceeds the real size by less than this).
_SIZE_SLACK = 256


class Producer:
    """The pipeline's producer (concurrency-safe): sends wait for the acknowledgement, and
    partitions are picked as the ``partitioning_strategy`` does (docs/drivers/kafka.md)."""

    def __init__(self, options: KafkaOptions, conn: dict[str, Any]) -> None:
        p = options.producer_options
        self.manual = p.partitioning_strategy == "Manual"
        self.delivery_timeout = p.delivery_timeout or None
        self.max_request_size = p.max_message_bytes
        self._round_robin = (RoundRobinPartitioner()
                             if p.partitioning_strategy == "RoundRobin" else None)
        extra = {"partitioner": self._round_robin} if self._round_robin is not None else {}
        self.client = AIOKafkaProducer(
            acks=_ACKS[p.required_acks], enable_idempotence=not p.disable_idempotent,
            max_request_size=p.max_message_bytes, request_timeout_ms=int(p.request_timeout * 1000),
            compression_type=p.compression_codec, linger_ms=0,
            max_batch_size=min(p.max_message_bytes, 1024 * 1024), **extra, **conn)

    def _chooser(self, topic: str, partitions: set[int]) -> Callable[[bytes], int]:
        """``key → partition`` for ``topic`` by the strategy, from its known ``partitions``."""
        listed = list(partitions)
        if self._round_robin is not None:
            available = self.client.client.cluster.available_partitions_for_topic(topic)
            choices = sorted(available) if available else listed
            pick = self._round_robin.pick
            return lambda key: pick(choices)
        return lambda key: key_partition(key, listed)

    @staticmethod
    def _check_partition(topic: str, partition: int, partitions: set[int]) -> None:
        if partition not in partitions:
            raise ValueError(f"kafka: topic {topic!r} has no partition {partition} "
                             f"(it has {sorted(partitions)})")

    async def send(self, record: Record) -> None:
        """Produce one record and wait for its acknowledgement. Raises :class:`ValueError`
        for a partition the topic lacks, :class:`PayloadTooLargeError` for a record too large."""
        topic, partition, key, value, headers = record
        partitions = self.client.client.cluster.partitions_for_topic(topic)
        if partitions:
            if partition is None:
                partition = self._chooser(topic, partitions)(key)
            else:
                self._check_partition(topic, partition, partitions)
        try:
            fut: asyncio.Future[Any] = await self.client.send(
                topic, value, key=key, partition=partition, headers=headers)
        except MessageSizeTooLargeError as exc:
            raise PayloadTooLargeError(f"kafka: record of {len(value)} bytes is too large "
                                       f"for max_message_bytes: {exc}") from None
        await self.wait([fut])

    async def wait(self, futures: Sequence[asyncio.Future[Any]]) -> None:
        """Wait for the acknowledgements of ``futures`` (within ``delivery_timeout``)."""
        try:
            async with asyncio.timeout(self.delivery_timeout):
                await asyncio.gather(*futures)
        except MessageSizeTooLargeError as exc:
            raise PayloadTooLargeError(f"kafka: the broker refused a record as too large: "
                                       f"{exc}") from None

    async def send_records(self, records: Iterable[Record]) -> None:
        """Produce ``records`` in aiokafka record batches (one future per batch, records
        of a partition in order) and wait for the broker's acknowledgements. Every batch is
        built before the first is sent: a record too large (:class:`PayloadTooLargeError`)
        or for a partition its topic lacks (:class:`ValueError`) sends nothing. If the
        broker refuses a batch, the first error is raised; other batches may be stored."""
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
            if meta.size > limit:  # too large when aiokafka's ``send`` measures it?
                size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, headers)
                if size > self.max_request_size:
                    raise PayloadTooLargeError(
                        f"kafka: record of {len(value)} bytes ({size} with its key and headers) "
                        f"is too large for max_message_bytes ({self.max_request_size})")
        futures: list[asyncio.Future[Any]] = []
        try:
            for (topic, partition), chain in batches.items():
                for builder in chain:
                    futures.append(await client.send_batch(builder, topic, partition=partition))
        except BaseException:
            for fut in futures:  # nobody awaits them: retrieved, no "never retrieved" warning
                fut.add_done_callback(lambda done: done.cancelled() or done.exception())
            raise
        await self.wait(futures)


class Commits:
    """Commits the settled prefix of ``tracker`` through ``consumer`` (set once it exists):
    :meth:`loop` commits when it moved, at most (and retrying) every ``interval`` s. A fatal
    failure calls ``on_fatal(what, error)``, which ends the loop when it returns true; the
    others are failures of ``source`` in ``outage`` (the pipeline's), until one works again."""

    def __init__(self, tracker: OffsetTracker[Any], interval: float, error_timeout: float,
                 on_fatal: Callable[[str, BaseException], bool], outage: Outage,
                 source: str = "commits") -> None:
        self.tracker = tracker
        self.consumer: Any = None
        self.event = asyncio.Event()
        self.interval = interval
        # just after an outage, a refused commit is its aftermath (the group rebalanced
        # meanwhile, the records come again): no new outage
        self.calls = Attempts(outage, source, error_timeout, on_fatal,
                              functools.partial(fatal_error, by_kind=False), 0, aftermath=True)
        self._lock = asyncio.Lock()

    def settle(self, tp: Any, offset: int) -> None:
        """A record is done; commit when the prefix moved."""
        if self.tracker.settle(tp, offset):
            self.event.set()

    async def commit(self, tps: Iterable[Any] | None = None) -> bool:
        """Commit the moved prefix of ``tps`` (or of every partition) now; ``True`` when done."""
        async with self._lock:
            offsets = self.tracker.to_commit(tps)
            if offsets and self.consumer is not None:
                await self.consumer.commit(offsets)
                self.tracker.committed(offsets)
        return True

    async def loop(self) -> None:
        while True:
            await self.event.wait()
            self.event.clear()
            done = await self.calls.attempt(self.commit(), "commit", False, "committing offsets")
            if done is None:
                return
            if not done:
                self.event.set()
            await asyncio.sleep(self.interval)


class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Hands a consumer's rebalances to ``owner.revoked`` and ``owner.assigned``."""

    def __init__(self, owner: Any) -> None:
        self.owner = owner

    async def on_partitions_revoked(self, revoked: set[Any]) -> None:
        await self.owner.revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[Any]) -> None:
        await self.owner.assigned(set(assigned))
