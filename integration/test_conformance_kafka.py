"""The driver conformance suite on the ``kafka`` driver, against real Apache Kafka (KRaft)."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from rrjobs.core.fields import RR_FIELDS
from rrjobs.core.message import Message
from rrjobs.drivers.kafka.codec import encode_priority
from rrjobs.testing import ConformanceSuite, DriverFactory, HookUnsupported, Pipe
from rrjobs.testing.suite import NackTests

#: Short group timings: joins and rebalances take about a second.
GROUP = {"session_timeout": "3s", "heartbeat_interval": "300ms", "commit_interval": "50ms",
         "revoke_timeout": "5s"}
#: The producer's (and the broker's default) largest request: about 1 MiB.
MAX_RECORD = 1_000_000


def dead_letter_options(name: str) -> dict[str, Any]:
    """A pipeline's dead letters to ``<name>.dlq``."""
    return {"dead_letter_topic": f"{name}.dlq"}


class KafkaFactory(DriverFactory):
    """One topic per pipeline (``<name>``, one partition), consumed in the group ``<name>``."""

    driver = "kafka"
    shared_broker = True
    delivery_timeout = 20.0
    redelivery_timeout = 20.0
    delay_tolerance = 3.0
    quiet_period = 0.7
    delay_granularity = 0.001  # due times in whole milliseconds

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.producer: AIOKafkaProducer | None = None

    async def open(self) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await self.producer.start()

    async def close(self) -> None:
        if self.producer is not None:
            await self.producer.stop()

    async def cleanup(self, names: Sequence[str]) -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            doomed = [t for n in names for t in (n, f"{n}.rrjobs-delayed", f"{n}.dlq")
                      if t in existing]
            if doomed:
                with contextlib.suppress(Exception):
                    await admin.delete_topics(doomed)
        finally:
            await admin.close()

    def global_config(self) -> dict[str, Any]:
        return {"kafka": {"brokers": [self.bootstrap]}}

    def pipeline_options(self, name: str) -> dict[str, Any]:
        return {
            "auto_create_topics_enable": True,
            "consumer_options": {"topics": [name]},
            "group_options": {"group_id": name, **GROUP},
            "prefetch": 100,
        }

    async def publish_raw(self, pipe: Pipe, body: bytes, headers: Mapping[str, str]) -> None:
        assert self.producer is not None
        await self.producer.send_and_wait(
            pipe.name, body, headers=[(k, v.encode()) for k, v in headers.items()])

    async def publish_raw_headers(self, pipe: Pipe, body: bytes,
                                  headers: Mapping[str, bytes]) -> None:
        """Record headers are bytes: each value as it is."""
        assert self.producer is not None
        if len(body) + sum(len(v) for v in headers.values()) > MAX_RECORD:
            raise HookUnsupported("Kafka's default message.max.bytes (1 MiB) takes no "
                                  "record this large")
        await self.producer.send_and_wait(pipe.name, body, headers=list(headers.items()))

    def prefetch_options(self, jobs: int) -> dict[str, Any]:
        return {"prefetch": jobs}

    async def publish_roadrunner(self, pipe: Pipe, msg: Message) -> None:
        """RoadRunner's layout (reference §10): key = id, each header's first value,
        then rr_job, rr_pipeline and rr_priority as 8 bytes little-endian."""
        assert self.producer is not None
        headers = [(k, v[0].encode()) for k, v in msg.headers.items()]
        headers += [("rr_job", msg.name.encode()), ("rr_pipeline", pipe.name.encode()),
                    ("rr_priority", encode_priority(msg.priority))]
        await self.producer.send_and_wait(pipe.name, msg.payload, key=msg.id.encode(),
                                          headers=headers)

    async def _dead_records(self, name: str) -> list[ConsumerRecord[bytes, bytes]]:
        """Every record of the topic ``<name>.dlq`` so far."""
        tp = TopicPartition(f"{name}.dlq", 0)
        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False)
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.seek_to_beginning(tp)
            end = (await consumer.end_offsets([tp]))[tp]
            got: list[ConsumerRecord[bytes, bytes]] = []
            while await consumer.position(tp) < end:
                batch = await consumer.getmany(tp, timeout_ms=1000)
                got += batch.get(tp, [])
            return got
        finally:
            await consumer.stop()

    async def dead_letters(self, pipe: Pipe) -> list[bytes]:
        return [r.value or b"" for r in await self._dead_records(pipe.name)]

    async def dead_letter_options(self, name: str) -> dict[str, Any]:
        return dead_letter_options(name)

    async def dead_letter_messages(self, name: str) -> list[Message]:
        """Each record's job headers: its plain record headers, ``rr_headers`` on top."""
        out = []
        for record in await self._dead_records(name):
            raw: dict[str, list[str]] = {}
            for key, value in record.headers:
                raw.setdefault(key, []).append(value.decode())
            headers = {k: v for k, v in raw.items() if k not in RR_FIELDS}
            headers.update(json.loads(raw.get("rr_headers", ["{}"])[0]))
            out.append(Message(raw["rr_job"][0], record.value or b"", name,
                               id=(record.key or b"").decode(), headers=headers))
        return out


@pytest.fixture
def driver_factory(kafka_bootstrap: str) -> KafkaFactory:
    return KafkaFactory(kafka_bootstrap)


class TestKafkaConformance(ConformanceSuite):
    marker = "kafka"


class KafkaDeadLetterFactory(KafkaFactory):
    def pipeline_options(self, name: str) -> dict[str, Any]:
        return {**super().pipeline_options(name), **dead_letter_options(name)}


class TestKafkaDeadLetterConformance(NackTests):
    """The nack section again with a ``dead_letter_topic``."""

    marker = "kafka"

    @pytest.fixture
    def driver_factory(self, kafka_bootstrap: str) -> KafkaDeadLetterFactory:
        return KafkaDeadLetterFactory(kafka_bootstrap)
