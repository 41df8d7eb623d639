"""Apache Kafka smoke test with the raw aiokafka client.

Produce, consume in a group, and redelivery: an offset that is not committed is read
again by the next consumer of the same group; a committed one is not.
"""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition  # type: ignore[import-untyped,unused-ignore]
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped,unused-ignore]

pytestmark = [pytest.mark.smoke, pytest.mark.kafka, pytest.mark.timeout(180)]


def _consumer(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # Short group timings: joins take about a second instead of many.
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )


async def test_produce_consume_commit_and_redelivery_without_commit(
    kafka_bootstrap: str, unique_name: str
) -> None:
    topic, group = unique_name, f"{unique_name}-group"
    partition = TopicPartition(topic, 0)
    async with asyncio.timeout(90):
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])

            producer = AIOKafkaProducer(
                bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True
            )
            await producer.start()
            try:
                for index in (1, 2):
                    sent = await producer.send_and_wait(
                        topic, f"job-{index}".encode(), key=b"k", headers=[("n", b"%d" % index)]
                    )
                    assert sent.offset == index - 1
            finally:
                await producer.stop()

            # 1. Consume job-1 and "nack" it: leave without committing.
            consumer = _consumer(kafka_bootstrap, topic, group)
            await consumer.start()
            try:
                record = await consumer.getone()
                assert (record.offset, record.key, record.value) == (0, b"k", b"job-1")
                assert record.headers == (("n", b"1"),)
            finally:
                await consumer.stop()

            # 2. Same group again: job-1 is delivered again; ack (commit) it and job-2.
            consumer = _consumer(kafka_bootstrap, topic, group)
            await consumer.start()
            try:
                record = await consumer.getone()
                assert (record.offset, record.value) == (0, b"job-1")
                await consumer.commit({partition: record.offset + 1})
                record = await consumer.getone()
                assert (record.offset, record.value) == (1, b"job-2")
                await consumer.commit({partition: record.offset + 1})
                assert await consumer.committed(partition) == 2
            finally:
                await consumer.stop()

            # 3. Same group once more: everything is committed, nothing is redelivered.
            consumer = _consumer(kafka_bootstrap, topic, group)
            await consumer.start()
            try:
                assert await consumer.committed(partition) == 2
                batch = await consumer.getmany(timeout_ms=1500)
                assert all(not records for records in batch.values())
            finally:
                await consumer.stop()
        finally:
            await admin.delete_topics([topic])
            await admin.close()
