"""aiokafka clients from the driver's options: connection settings, producer, partitioners.

Imports aiokafka (the driver package is the only place that does).
"""

from __future__ import annotations

import asyncio
import itertools
import ssl
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer  # type: ignore[import-untyped]
from aiokafka.errors import MessageSizeTooLargeError  # type: ignore[import-untyped]

from rrjobs.core.errors import PayloadTooLargeError
from rrjobs.core.tls import client_ssl_context
from rrjobs.drivers.kafka.codec import Encoded
from rrjobs.drivers.kafka.config import KafkaOptions, KafkaSection, SASLOptions

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
        choices = sorted(available) if available else list(all_partitions)
        return choices[next(self._counter) % len(choices)]


class Producer:
    """The pipeline's producer: ``send`` waits for the broker's acknowledgement.

    Concurrency-safe (aiokafka batches concurrent sends). ``delivery_timeout``
    bounds each wait when set.
    """

    def __init__(self, options: KafkaOptions, conn: dict[str, Any]) -> None:
        p = options.producer_options
        self.manual = p.partitioning_strategy == "Manual"
        self.delivery_timeout = p.delivery_timeout or None
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
        if p.partitioning_strategy == "RoundRobin":
            kwargs["partitioner"] = RoundRobinPartitioner()
        self.client = AIOKafkaProducer(**kwargs)

    async def start(self) -> None:
        await self.client.start()

    async def stop(self) -> None:
        await self.client.stop()

    async def enqueue(self, topic: str, rec: Encoded,
                      partition: int | None = None) -> asyncio.Future[Any]:
        """Hand a record to the producer; the returned future resolves once the
        broker acknowledged it. Raises :class:`PayloadTooLargeError` at once for
        a record over ``max_message_bytes``."""
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
