"""Helpers shared by the kafka driver's integration tests: drivers on their own
priority queues, topics, committed offsets, and reading a topic back raw."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from rrjobs.config import Config
from rrjobs.core.job import Job
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.drivers.kafka import KafkaConstructor, KafkaDriver

#: Group timings short enough for tests.
GROUP = {"session_timeout": "3s", "heartbeat_interval": "300ms", "commit_interval": "50ms",
         "revoke_timeout": "5s"}


class Node:
    """One driver on its own priority queue (the test is the consumer)."""

    def __init__(self, driver: KafkaDriver, queue: PriorityQueue) -> None:
        self.driver = driver
        self.queue = queue

    async def take(self, within: float = 20.0) -> Job:
        async with asyncio.timeout(within):
            return await self.queue.extract_min()

    async def take_many(self, n: int, within: float = 20.0) -> list[Job]:
        async with asyncio.timeout(within):
            return [await self.queue.extract_min() for _ in range(n)]

    async def nothing(self, within: float = 1.0) -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(within):
                job = await self.queue.extract_min()
                pytest.fail(f"unexpected job {job!r} payload={job.payload!r}")


def kafka_config(bootstrap: str) -> Config:
    return Config({"kafka": {"brokers": [bootstrap]}, "jobs": {}}, source="test")


@pytest.fixture
async def nodes(kafka_bootstrap: str) -> AsyncIterator[Callable[..., Any]]:
    """A factory of drivers built as ``Declare`` builds them, started unless
    ``run=False`` (all stopped at the end of the test)."""
    made: list[KafkaDriver] = []

    async def make(name: str, *, run: bool = True, **options: Any) -> Node:
        queue = PriorityQueue()
        pipeline = Pipeline(name=name, driver="kafka", config=options)
        driver = await KafkaConstructor(kafka_config(kafka_bootstrap)).driver_from_pipeline(
            pipeline, queue)
        made.append(driver)
        if run:
            await driver.run(pipeline)
        return Node(driver, queue)

    yield make
    for driver in reversed(made):
        await driver.stop()


async def create_topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def committed(bootstrap: str, group: str, tp: TopicPartition) -> int:
    """The group's committed offset of ``tp`` (-1 without one)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        got = await admin.list_consumer_group_offsets(group, partitions=[tp])
        return int(got[tp].offset) if tp in got else -1
    finally:
        await admin.close()


async def wait_committed(bootstrap: str, group: str, tp: TopicPartition, want: int,
                         within: float = 15.0) -> None:
    end = time.monotonic() + within
    last = -2
    while time.monotonic() < end:
        last = await committed(bootstrap, group, tp)
        if last == want:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"committed offset of {group} is {last}, expected {want}")


async def read_all(bootstrap: str, topic: str, partitions: int,
                   within: float = 30.0) -> dict[int, list[Any]]:
    """Every record of ``topic`` (``partitions`` partitions), per partition in
    offset order, read with a raw consumer."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                                enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        out: dict[int, list[Any]] = {p: [] for p in range(partitions)}
        async with asyncio.timeout(within):
            while any(len(out[tp.partition]) < ends[tp] for tp in tps):
                for tp, records in (await consumer.getmany(timeout_ms=200)).items():
                    out[tp.partition] += records
        return out
    finally:
        await consumer.stop()
