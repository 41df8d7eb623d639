"""``push_batch`` on Kafka: record batches per partition, partitions as the strategy picks
them, order, batch size limits, and all-or-nothing refusal (real Apache Kafka)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from integration.kafka_helpers import read_all
from rrjobs.config import Config
from rrjobs.core.errors import PayloadTooLargeError
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.drivers.kafka import KafkaConstructor, KafkaDriver
from rrjobs.drivers.kafka.codec import RecordEncoder

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

MakeDriver = Callable[..., Awaitable[KafkaDriver]]


@pytest.fixture
async def driver_for(kafka_bootstrap: str) -> AsyncIterator[MakeDriver]:
    """Builds (never runs) drivers whose first topic is ``topic`` with ``partitions``
    partitions; stops them at the end."""
    made: list[KafkaDriver] = []

    async def make(topic: str, partitions: int, **producer_options: Any) -> KafkaDriver:
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, partitions, 1)])
        finally:
            await admin.close()
        config = Config({"kafka": {"brokers": [kafka_bootstrap]}, "jobs": {}}, source="test")
        pipeline = Pipeline(name=topic, driver="kafka", config={
            "consumer_options": {"topics": [topic]}, "producer_options": producer_options})
        driver = await KafkaConstructor(config).driver_from_pipeline(pipeline, PriorityQueue())
        made.append(driver)
        return driver

    yield make
    for driver in made:
        await driver.stop()


def messages(topic: str, n: int, payload: bytes = b"", **kwargs: Any) -> list[Message]:
    return [Message("app.Job", payload + str(i).encode(), topic, **kwargs) for i in range(n)]


async def test_records_go_where_the_default_partitioner_puts_their_keys_in_push_order(
        driver_for: MakeDriver, kafka_bootstrap: str, unique_name: str) -> None:
    topic = unique_name
    driver = await driver_for(topic, 3)
    msgs = messages(topic, 300, priority=4, headers={"h": ["1", "2"]})
    msgs[7].auto_ack = True
    await driver.push_batch(msgs)
    got = await read_all(kafka_bootstrap, topic, 3)
    everyone = [0, 1, 2]
    for partition, records in got.items():
        assert records, f"partition {partition} got nothing of 300 records"
        expected = [m for m in msgs if DefaultPartitioner()(m.id.encode(), everyone, everyone)
                    == partition]
        assert [r.key for r in records] == [m.id.encode() for m in expected]  # push order
        for record, msg in zip(records, expected, strict=True):
            _, value, headers = RecordEncoder(topic).record(msg.id, msg.name, msg.payload, 4,
                                                            msg.headers, msg.auto_ack)
            assert (record.value, list(record.headers)) == (value, headers)


async def test_round_robin_takes_partitions_in_turn(
        driver_for: MakeDriver, kafka_bootstrap: str, unique_name: str) -> None:
    topic = unique_name
    driver = await driver_for(topic, 3, partitioning_strategy="RoundRobin")
    await driver.push_batch(messages(topic, 9))
    got = await read_all(kafka_bootstrap, topic, 3)
    assert [len(got[p]) for p in range(3)] == [3, 3, 3]
    order = sorted(r.value for p in range(3) for r in got[p][:1])
    assert order == [b"0", b"1", b"2"]  # the first three records went one per partition


async def test_a_batch_larger_than_a_record_batch_is_split_in_order(
        driver_for: MakeDriver, kafka_bootstrap: str, unique_name: str) -> None:
    topic = unique_name
    driver = await driver_for(topic, 1, max_message_bytes=20_000)
    client = driver.producer.client
    sizes: list[int] = []
    send_batch = client.send_batch

    async def counting(batch: Any, topic: str, *, partition: int) -> Any:
        sizes.append(batch.size())
        return await send_batch(batch, topic, partition=partition)

    client.send_batch = counting
    msgs = messages(topic, 60, payload=b"x" * 3000)  # ~180 kB
    await driver.push_batch(msgs)
    assert len(sizes) >= 9 and max(sizes) <= 20_000, sizes
    got = await read_all(kafka_bootstrap, topic, 1)
    assert [r.value for r in got[0]] == [m.payload for m in msgs]


async def test_a_refused_message_sends_nothing_of_its_batch(
        driver_for: MakeDriver, kafka_bootstrap: str, unique_name: str) -> None:
    topic = unique_name
    driver = await driver_for(topic, 2, max_message_bytes=16_384,
                              partitioning_strategy="Manual")
    big = messages(topic, 3)
    big[1].headers = {"h": ["x" * 17_000]}  # the payload fits, the record does not
    with pytest.raises(PayloadTooLargeError):
        await driver.push_batch(big)
    bad_partition = messages(topic, 3)
    bad_partition[2].partition = 5
    with pytest.raises(ValueError, match="no partition 5"):
        await driver.push_batch(bad_partition)
    await driver.push_batch(messages(topic, 2, partition=1))
    got = await read_all(kafka_bootstrap, topic, 2)
    assert ([r.value for r in got[0]], [r.value for r in got[1]]) == ([], [b"0", b"1"])
