"""The kafka driver's own guarantees against real Apache Kafka: contiguous commits,
rebalances, durable delays, RoadRunner's record layout, Message topic/partition."""

from __future__ import annotations

import asyncio
import gc
import struct
import time
import warnings
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from integration.brokers.base import LOOPBACK, free_ports
from integration.kafka_helpers import GROUP, Node, committed, create_topic, wait_committed
from rrjobs.config import Config
from rrjobs.core.errors import AckLostError, ConfigError
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.drivers.kafka import KafkaConstructor, KafkaUnavailableError

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]

def options(topic: str, group: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"auto_create_topics_enable": True,
                           "consumer_options": {"topics": [topic]}, **extra}
    if group is not None:
        out["group_options"] = {"group_id": group, **GROUP}
    return out


# -- the contiguous-commit rule -------------------------------------------------------------


async def test_out_of_order_acks_commit_only_the_contiguous_prefix_and_skip_nothing(
        nodes: Callable[..., Any], kafka_bootstrap: str, unique_name: str) -> None:
    """Ack 9..4 and 2..0 but not 3: the commit stops at 3. After a restart, record 3
    (and, at-least-once, those behind it) come again; nothing is skipped."""
    topic = group = unique_name
    node = await nodes(topic, **options(topic, group))
    for i in range(10):
        await node.driver.push(Message("j", f"{i}".encode(), topic))
    jobs = await node.take_many(10)
    assert [j.payload for j in jobs] == [f"{i}".encode() for i in range(10)]
    for job in reversed(jobs):
        if job.payload != b"3":
            await job.ack()
    tp = TopicPartition(topic, 0)
    await wait_committed(kafka_bootstrap, group, tp, 3)
    await asyncio.sleep(0.3)  # more commit rounds: still held at 3
    assert await committed(kafka_bootstrap, group, tp) == 3
    await node.driver.stop()  # record 3 never settled

    again = await nodes(topic, **options(topic, group))
    redelivered = await again.take_many(7)
    assert [j.payload for j in redelivered] == [f"{i}".encode() for i in range(3, 10)]
    assert redelivered[0].id == jobs[3].id
    for job in redelivered:
        await job.ack()
    await wait_committed(kafka_bootstrap, group, tp, 10)
    await again.driver.stop()

    third = await nodes(topic, **options(topic, group))
    await third.nothing(1.5)


async def test_a_nacked_and_a_requeued_record_advance_the_offset(
        nodes: Callable[..., Any], kafka_bootstrap: str, unique_name: str) -> None:
    topic = group = unique_name
    node = await nodes(topic, **options(topic, group))
    for i in range(3):
        await node.driver.push(Message("j", f"{i}".encode(), topic))
    first, second, third = await node.take_many(3)
    await first.nack()  # dropped: offset advances
    await second.requeue({"r": ["1"]})  # a copy at offset 3, the original done
    await third.ack()
    copy = await node.take()
    assert (copy.id, copy.headers.get("r")) == (second.id, ["1"])
    assert copy.offset == 3  # type: ignore[attr-defined]
    await wait_committed(kafka_bootstrap, group, TopicPartition(topic, 0), 3)
    await copy.ack()
    await wait_committed(kafka_bootstrap, group, TopicPartition(topic, 0), 4)


# -- rebalance --------------------------------------------------------------------------------


async def test_rebalance_with_jobs_in_flight_loses_nothing(
        nodes: Callable[..., Any], kafka_bootstrap: str, unique_name: str) -> None:
    """Two consumers of one group on 4 partitions; the second joins while the first
    holds jobs in its queue and handlers. Every job is acknowledged at least once;
    acks on revoked partitions are refused, never committed."""
    topic = group = unique_name
    await create_topic(kafka_bootstrap, topic, 4)
    total = 300
    a = await nodes(topic, **options(topic, group, prefetch=40))
    sent = [Message("j", f"{i}".encode(), topic) for i in range(total)]
    await a.driver.push_batch(sent)
    acked: list[str] = []
    lost_acks = 0
    done = asyncio.Event()
    warmed_up = asyncio.Event()

    async def drain(node: Node) -> None:
        nonlocal lost_acks
        while True:
            job = await node.queue.extract_min()
            await asyncio.sleep(0.005)
            try:
                await job.ack()
            except AckLostError:
                lost_acks += 1
                continue
            acked.append(job.id)
            if len(acked) >= 60:
                warmed_up.set()
            if {m.id for m in sent} <= set(acked):
                done.set()

    tasks = [asyncio.create_task(drain(a))]
    try:
        async with asyncio.timeout(30):
            await warmed_up.wait()
        b = await nodes(topic, **options(topic, group, prefetch=40))
        tasks.append(asyncio.create_task(drain(b)))
        async with asyncio.timeout(60):
            await done.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    assert {m.id for m in sent} <= set(acked), "a job was lost in the rebalance"
    assert len(b.driver.tracker) > 0, "the second consumer got no partition"
    duplicates = len(acked) - len(set(acked))
    print(f"rebalance: {total} jobs, {duplicates} acknowledged twice, {lost_acks} acks refused")
    for p in range(4):  # everything ends up committed by the current owners
        tp = TopicPartition(topic, p)
        end = time.monotonic() + 15
        while True:
            producer_end = await _end_offset(kafka_bootstrap, tp)
            if await committed(kafka_bootstrap, group, tp) == producer_end:
                break
            assert time.monotonic() < end, f"partition {p} never fully committed"
            await asyncio.sleep(0.1)


async def _end_offset(bootstrap: str, tp: TopicPartition) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        return int((await consumer.end_offsets([tp]))[tp])
    finally:
        await consumer.stop()


# -- delays -------------------------------------------------------------------------------------


async def test_delays_survive_a_consumer_restart(
        nodes: Callable[..., Any], unique_name: str) -> None:
    """A delayed push and a delayed requeue, then the consumer stops before they are due:
    the next consumer delivers both, not before they are due."""
    topic = group = unique_name
    node = await nodes(topic, **options(topic, group))
    start = time.monotonic()
    pushed = Message("later", b"pushed", topic, delay=3.0)
    await node.driver.push(pushed)
    await node.driver.push(Message("now", b"retry-me", topic))
    job = await node.take()
    await job.requeue({"again": ["yes"]}, delay=3.0)
    state = await node.driver.state()
    assert state.delayed == 2
    await asyncio.sleep(0.5)  # the forwarder has read both and holds them on its timer
    await node.driver.stop()

    again = await nodes(topic, **options(topic, group))
    jobs = await again.take_many(2, within=20)
    elapsed = time.monotonic() - start
    assert elapsed >= 3.0 - 0.01
    assert sorted(j.payload for j in jobs) == [b"pushed", b"retry-me"]
    requeued = next(j for j in jobs if j.payload == b"retry-me")
    assert (requeued.id, requeued.headers.get("again")) == (job.id, ["yes"])
    for j in jobs:
        await j.ack()
    await again.nothing(1.0)


async def test_delays_fire_by_due_time_not_by_push_order(
        nodes: Callable[..., Any], unique_name: str) -> None:
    topic = group = unique_name
    node = await nodes(topic, **options(topic, group))
    start = time.monotonic()
    for delay in (2.5, 0.5, 1.5):
        await node.driver.push(Message("d", f"{delay}".encode(), topic, delay=delay))
    jobs = []
    for _ in range(3):
        job = await node.take()
        jobs.append((job.payload, time.monotonic() - start))
        await job.ack()
    assert [p for p, _ in jobs] == [b"0.5", b"1.5", b"2.5"]
    for payload, at in jobs:
        assert at >= float(payload) - 0.01


# -- wire format ---------------------------------------------------------------------------------


async def test_pushed_records_have_roadrunners_layout(
        nodes: Callable[..., Any], kafka_bootstrap: str, unique_name: str) -> None:
    topic = unique_name
    node = await nodes(topic, run=False, **options(topic))
    msg = Message("app.Job", b"\x00payload", topic, priority=7,
                  headers={"one": ["1"], "two": ["a", "b"]})
    await node.driver.push(msg)
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        async with asyncio.timeout(20):
            record = await consumer.getone()
    finally:
        await consumer.stop()
    headers = dict(record.headers)
    assert record.key == msg.id.encode()
    assert record.value == b"\x00payload"
    assert headers["rr_job"] == b"app.Job"
    assert headers["rr_pipeline"] == topic.encode()
    assert headers["rr_priority"] == struct.pack("<Q", 7)
    assert headers["one"] == b"1"
    assert headers["two"] == b"a"  # RoadRunner's first value ...
    assert b'"two":["a","b"]' in headers["rr_headers"]  # ... and all of them for rrjobs
    assert headers["rr_id"] == msg.id.encode()


async def test_roadrunner_records_are_consumed(
        nodes: Callable[..., Any], kafka_bootstrap: str, unique_name: str) -> None:
    topic = group = unique_name
    node = await nodes(topic, **options(topic, group, priority=9))
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"php", key=b"rr-1", headers=[
            ("attempts", b"2"), ("rr_job", b"php.Job"), ("rr_pipeline", b"x"),
            ("rr_priority", struct.pack("<Q", 3))])
        await producer.send_and_wait(topic, b"zero", key=b"rr-2", headers=[
            ("rr_job", b"php.Job"), ("rr_priority", struct.pack("<Q", 0))])
    finally:
        await producer.stop()
    first, second = sorted(await node.take_many(2), key=lambda j: j.id)
    assert (first.id, first.name, first.priority, first.payload) == ("rr-1", "php.Job", 3,
                                                                      b"php")
    assert first.headers == {"attempts": ["2"]}
    assert first.pipeline == topic
    assert (second.id, second.priority) == ("rr-2", 9)  # 0 means the pipeline's
    await first.ack()
    await second.ack()


# -- Message options ----------------------------------------------------------------------------


async def test_push_honours_message_topic_and_manual_partition(
        nodes: Callable[..., Any], kafka_bootstrap: str, unique_names: Callable[[str], str]
) -> None:
    home, other = unique_names("home"), unique_names("other")
    await create_topic(kafka_bootstrap, other, 3)
    node = await nodes(home, run=False, **options(
        home, producer_options={"partitioning_strategy": "Manual"}))
    await node.driver.push(Message("j", b"to-other", home, topic=other, partition=2))
    await node.driver.push(Message("j", b"to-home", home))
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(other, p) for p in range(3)] + [TopicPartition(home, 0)]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    assert [ends[TopicPartition(other, p)] for p in range(3)] == [0, 0, 1]
    assert ends[TopicPartition(home, 0)] == 1


async def test_pause_pauses_partitions_of_consume_partitions(
        nodes: Callable[..., Any], unique_name: str) -> None:
    """Without a group (``consume_partitions``): pause holds deliveries, resume
    releases them; offsets are tracked for the consumer's life."""
    topic = unique_name
    opts = {"auto_create_topics_enable": True,
            "consumer_options": {"consume_partitions": {topic: {"0": {"type": "AtStart"}}}}}
    node = await nodes(topic, **opts)
    await node.driver.push(Message("j", b"a", topic, topic=topic))
    first = await node.take()
    await node.driver.pause(topic)
    await node.driver.push(Message("j", b"b", topic, topic=topic))
    await node.nothing(1.0)
    await first.ack()
    part = node.driver.tracker.get(TopicPartition(topic, 0))
    assert part is not None and part.commit_point == 1  # tracked without a group
    await node.driver.resume(topic)
    second = await node.take()
    assert second.payload == b"b"
    await second.ack()


@pytest.mark.parametrize("where", ["missing topic", "unreachable brokers"])
async def test_a_failed_start_closes_its_producer(kafka_bootstrap: str, unique_name: str,
                                                  where: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Against the real broker (a topic that does not exist, auto-creation off) and a port
    nobody listens on: the driver's producer is closed and no task of it is left."""
    made: list[AIOKafkaProducer] = []
    init = AIOKafkaProducer.__init__

    def spy(self: AIOKafkaProducer, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(AIOKafkaProducer, "__init__", spy)
    (port,) = free_ports(1)
    brokers = [kafka_bootstrap] if where == "missing topic" else [f"{LOOPBACK}:{port}"]
    config = Config({"kafka": {"brokers": brokers, "ping": {"timeout": "3s"}}, "jobs": {}},
                    source="test")
    pipeline = Pipeline(name=unique_name, driver="kafka", config={
        "auto_create_topics_enable": False, "consumer_options": {"topics": [unique_name]}})
    before = asyncio.all_tasks()
    error = ConfigError if where == "missing topic" else KafkaUnavailableError
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(error):
            await KafkaConstructor(config).driver_from_pipeline(pipeline, PriorityQueue())
        await asyncio.sleep(0.1)  # let cancelled tasks finish
        left = [t for t in asyncio.all_tasks() - before if not t.done()]
        assert made and all(p._closed for p in made), "a producer was left open"
        del made[:]
        gc.collect()
    assert left == []
    assert not [w for w in caught if "Unclosed AIOKafkaProducer" in str(w.message)]
