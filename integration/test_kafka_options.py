"""The kafka driver's options against real Apache Kafka: ``consume_regexp``,
``consumer_offset`` (``At``, ``AfterMilli``, ``AtEnd``) with a group and with
``consume_partitions``, ``partitioning_strategy``, ``compression_codec``,
``delay_buffer``, and the runtime's restart after a fatal client error."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.consumer import fetcher as aiokafka_fetcher
from aiokafka.errors import TopicAuthorizationFailedError

from integration.kafka_helpers import (
    GROUP,
    Node,
    create_topic,
    read_all,
    wait_committed,
)
from integration.waiting import eventually
from rrjobs.config import Config
from rrjobs.core.errors import ConfigError
from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.drivers.kafka import KafkaDriver
from rrjobs.runtime.app import App
from rrjobs.runtime.jobs import Jobs

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(120)]


def group(name: str, **extra: Any) -> dict[str, Any]:
    return {"group_id": name, **GROUP, **extra}


async def produce(bootstrap: str, records: list[tuple[str, int | None, bytes, int | None]],
                  **producer_options: Any) -> None:
    """Produce ``(topic, partition, value, timestamp_ms)`` records with a raw client."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, **producer_options)
    await producer.start()
    try:
        for topic, partition, value, timestamp_ms in records:
            await producer.send_and_wait(topic, value, key=value, partition=partition,
                                         timestamp_ms=timestamp_ms)
    finally:
        await producer.stop()


async def read_back(bootstrap: str, topic: str, partitions: int, n: int,
                    within: float = 20.0) -> list[Any]:
    """The ``n`` records of ``topic`` (``partitions`` partitions), read with a raw
    consumer; fails unless the topic holds exactly ``n``."""
    got = await read_all(bootstrap, topic, partitions, within)
    out = [r for records in got.values() for r in records]
    assert len(out) == n, f"{topic} has {len(out)} records, not {n}"
    return out


async def positioned(node: Node, tp: TopicPartition, offset: int, within: float = 20.0) -> None:
    """Wait until the driver's consumer owns ``tp`` and reads it from ``offset`` (so a
    record produced after is delivered)."""
    consumer = node.driver._consumer
    await eventually(lambda: tp in consumer.assignment(), within, "the assignment")
    end = time.monotonic() + within
    while (at := await consumer.position(tp)) != offset:
        assert time.monotonic() < end, f"{tp} is read from {at}, not {offset}"
        await asyncio.sleep(0.02)


async def take_all(node: Node, n: int, within: float = 20.0) -> list[Job]:
    jobs = await node.take_many(n, within)
    for job in jobs:
        await job.ack()
    return jobs


def payloads(jobs: list[Job]) -> list[bytes]:
    return sorted(j.payload for j in jobs)


# -- consume_regexp ----------------------------------------------------------------------------


async def test_consume_regexp_consumes_every_matching_topic_and_no_other(
        nodes: Callable[..., Any], kafka_bootstrap: str, unique_name: str) -> None:
    """Topics are regular expressions: records of the existing matching topics, and of a
    matching topic created after the start (found at the next metadata refresh,
    ``metadata_max_age``), are consumed; a non-matching topic's, the pipeline's own
    delay topic's and its dead-letter topic's (both match the expression) are not."""
    base = unique_name
    a, b, late, other = f"{base}.in.a", f"{base}.in.b", f"{base}.in.late", f"{base}.out"
    await create_topic(kafka_bootstrap, a, 1)
    await create_topic(kafka_bootstrap, b, 2)
    await create_topic(kafka_bootstrap, other, 1)
    await produce(kafka_bootstrap, [(a, 0, b"a0", None), (a, 0, b"a1", None),
                                    (b, 0, b"b0", None), (b, 1, b"b1", None),
                                    (other, 0, b"out", None)])
    node = await nodes(base, **{
        "auto_create_topics_enable": True,
        "consumer_options": {"topics": [re.escape(f"{base}.in.") + ".*"],
                             "consume_regexp": True, "metadata_max_age": "500ms"},
        "group_options": group(base),
        "delay_topic": f"{base}.in.delays",
        "dead_letter_topic": f"{base}.in.dlq"})
    jobs = await node.take_many(4)
    assert payloads(jobs) == [b"a0", b"a1", b"b0", b"b1"]
    await jobs[0].nack()  # to the dead-letter topic, which matches the expression
    for job in jobs[1:]:
        await job.ack()

    start = time.monotonic()
    await node.driver.push(Message("j", b"delayed", base, topic=a, delay=1.5))
    await create_topic(kafka_bootstrap, late, 1)
    await produce(kafka_bootstrap, [(late, 0, b"late", None)])
    got = await node.take_many(2, within=30)
    took = time.monotonic() - start
    by_payload = {j.payload: j for j in got}
    assert sorted(by_payload) == [b"delayed", b"late"]
    assert took >= 1.5 - 0.01  # the delayed job came from the forwarder, when due
    assert by_payload[b"late"].topic == late  # type: ignore[attr-defined]
    for job in got:
        await job.ack()
    # Every topic existed before the late one was matched: the subscription is exact.
    assert node.driver._consumer.subscription() == {a, b, late}
    await node.nothing(1.0)


# -- consumer_offset ------------------------------------------------------------------------------


async def test_group_at_starts_at_the_offset_only_without_a_committed_offset(
        nodes: Callable[..., Any], kafka_bootstrap: str, unique_name: str) -> None:
    topic = name = unique_name
    await create_topic(kafka_bootstrap, topic, 1)
    await produce(kafka_bootstrap, [(topic, 0, f"{i}".encode(), None) for i in range(10)])
    opts = {"consumer_options": {"topics": [topic],
                                 "consumer_offset": {"type": "At", "value": 4}},
            "group_options": group(name)}
    node = await nodes(name, **opts)
    jobs = await take_all(node, 6)
    assert [j.payload for j in jobs] == [f"{i}".encode() for i in range(4, 10)]
    await node.nothing(1.0)
    await wait_committed(kafka_bootstrap, name, TopicPartition(topic, 0), 10)
    await node.driver.stop()

    await produce(kafka_bootstrap, [(topic, 0, b"10", None), (topic, 0, b"11", None)])
    again = await nodes(name, **opts)  # the committed offset wins over At
    assert [j.payload for j in await take_all(again, 2)] == [b"10", b"11"]
    await again.nothing(1.0)


async def test_group_after_milli_starts_at_the_first_record_at_or_after_the_time(
        nodes: Callable[..., Any], kafka_bootstrap: str, unique_names: Callable[[str], str]
) -> None:
    topic, future = unique_names("t"), unique_names("future")
    await create_topic(kafka_bootstrap, topic, 2)
    base = int(time.time() * 1000) - 60_000
    await produce(kafka_bootstrap, [(topic, i % 2, f"{i}".encode(), base + i * 1000)
                                    for i in range(8)])
    node = await nodes(topic, **{
        "consumer_options": {"topics": [topic],
                             "consumer_offset": {"type": "AfterMilli", "value": base + 4500}},
        "group_options": group(topic)})
    assert payloads(await take_all(node, 3)) == [b"5", b"6", b"7"]
    await node.nothing(1.0)

    # A time after every record: the consumer starts at the end.
    await create_topic(kafka_bootstrap, future, 1)
    await produce(kafka_bootstrap, [(future, 0, b"old", None)])
    later = await nodes(future, **{
        "consumer_options": {"topics": [future], "consumer_offset": {
            "type": "AfterMilli", "value": int(time.time() * 1000) + 3_600_000}},
        "group_options": group(future)})
    await positioned(later, TopicPartition(future, 0), 1)
    await produce(kafka_bootstrap, [(future, 0, b"new", None)])
    assert [j.payload for j in await take_all(later, 1)] == [b"new"]
    await later.nothing(1.0)


async def test_group_at_end_and_at_start(
        nodes: Callable[..., Any], kafka_bootstrap: str, unique_names: Callable[[str], str]
) -> None:
    topic = unique_names("t")
    await create_topic(kafka_bootstrap, topic, 1)
    await produce(kafka_bootstrap, [(topic, 0, b"old-1", None), (topic, 0, b"old-2", None)])
    end = await nodes(topic, **{
        "consumer_options": {"topics": [topic], "consumer_offset": {"type": "AtEnd"}},
        "group_options": group(unique_names("end"))})
    start = await nodes(topic, **{
        "consumer_options": {"topics": [topic], "consumer_offset": {"type": "AtStart"}},
        "group_options": group(unique_names("start"))})
    await positioned(end, TopicPartition(topic, 0), 2)
    await produce(kafka_bootstrap, [(topic, 0, b"new", None)])
    assert [j.payload for j in await take_all(end, 1)] == [b"new"]
    assert [j.payload for j in await take_all(start, 3)] == [b"old-1", b"old-2", b"new"]
    await end.nothing(1.0)
    await start.nothing(0.1)


async def test_consume_partitions_start_each_partition_where_its_spec_says(
        nodes: Callable[..., Any], kafka_bootstrap: str, unique_name: str) -> None:
    """``At`` (an offset; past the end: the end), ``AfterMilli``, ``AtEnd`` and
    ``AtStart`` per partition, without a group."""
    topic = unique_name
    await create_topic(kafka_bootstrap, topic, 5)
    base = int(time.time() * 1000) - 60_000
    await produce(kafka_bootstrap, [(topic, p, f"p{p}-{i}".encode(), base + i * 1000)
                                    for p in range(5) for i in range(4)])
    node = await nodes(topic, **{"consumer_options": {"consume_partitions": {topic: {
        "0": {"type": "At", "value": 2},
        "1": {"type": "AfterMilli", "value": base + 1500},
        "2": {"type": "AtEnd"},
        "3": {"type": "At", "value": 100},
        "4": {"type": "AtStart"}}}}})
    # The positions are set before run() returns.
    await produce(kafka_bootstrap, [(topic, p, f"p{p}-new".encode(), None) for p in range(5)])
    jobs = await take_all(node, 13)
    assert payloads(jobs) == sorted([
        b"p0-2", b"p0-3", b"p0-new",
        b"p1-2", b"p1-3", b"p1-new",
        b"p2-new",
        b"p3-new",
        b"p4-0", b"p4-1", b"p4-2", b"p4-3", b"p4-new"])
    await node.nothing(1.0)


# -- partitioning_strategy ------------------------------------------------------------------------

#: Kafka's murmur2 of these keys, from Kafka's own test vectors (``UtilsTest``).
MURMUR2 = {"21": -973932308, "foobar": -790332482, "a-little-bit-long-string": -985981536,
           "a-little-bit-longer-string": -1486304829,
           "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971, "abc": 479470107}


async def test_uniform_puts_a_job_on_the_partition_of_kafkas_murmur2_of_its_id(
        nodes: Callable[..., Any], kafka_bootstrap: str, unique_name: str) -> None:
    topic = unique_name
    await create_topic(kafka_bootstrap, topic, 4)
    node = await nodes(topic, run=False, consumer_options={"topics": [topic]})
    await node.driver.push_batch([Message("j", b"x", topic, id=key) for key in MURMUR2])
    records = await read_back(kafka_bootstrap, topic, 4, len(MURMUR2))
    got = {r.key.decode(): r.partition for r in records}
    want = {key: (h & 0x7FFFFFFF) % 4 for key, h in MURMUR2.items()}
    assert got == want
    assert set(want.values()) == {0, 1, 2, 3}


async def test_round_robin_cycles_through_the_partitions(
        nodes: Callable[..., Any], kafka_bootstrap: str, unique_name: str) -> None:
    topic = unique_name
    await create_topic(kafka_bootstrap, topic, 3)
    node = await nodes(topic, run=False, consumer_options={"topics": [topic]},
                       producer_options={"partitioning_strategy": "RoundRobin"})
    for i in range(6):  # the same key each time: only the turn decides
        await node.driver.push(Message("j", f"{i}".encode(), topic, id="same"))
    await node.driver.push_batch([Message("j", f"{i}".encode(), topic, id="same")
                                  for i in range(6, 12)])
    records = await read_back(kafka_bootstrap, topic, 3, 12)
    partition_of = {int(r.value): r.partition for r in records}
    first = partition_of[0]
    assert [partition_of[i] for i in range(12)] == [(first + i) % 3 for i in range(12)]


async def test_manual_puts_a_job_on_message_partition(
        nodes: Callable[..., Any], kafka_bootstrap: str, unique_name: str) -> None:
    topic = unique_name
    await create_topic(kafka_bootstrap, topic, 3)
    node = await nodes(topic, run=False, consumer_options={"topics": [topic]},
                       producer_options={"partitioning_strategy": "Manual"})
    wanted = [2, 0, 1, 2, 2, 0]
    await node.driver.push_batch([Message("j", f"{i}".encode(), topic, partition=p)
                                  for i, p in enumerate(wanted)])
    records = await read_back(kafka_bootstrap, topic, 3, len(wanted))
    assert sorted((int(r.value), r.partition) for r in records) == list(enumerate(wanted))


# -- compression_codec ---------------------------------------------------------------------------

#: aiokafka's record batch codec ids (the batch attributes' low bits).
CODEC_IDS = {"gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}


@pytest.mark.parametrize("codec", sorted(CODEC_IDS))
async def test_compression_codec_compresses_the_stored_batches_or_is_refused(
        codec: str, nodes: Callable[..., Any], kafka_bootstrap: str, unique_name: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """gzip always works; snappy, lz4 and zstd need cramjam: without it the pipeline is
    refused at ``producer_options.compression_codec``; with it the batches the broker
    returns are compressed with the codec and the jobs come back intact."""
    topic = unique_name
    options = {"auto_create_topics_enable": True, "consumer_options": {"topics": [topic]},
               "producer_options": {"compression_codec": codec}}
    if codec != "gzip" and importlib.util.find_spec("cramjam") is None:
        with pytest.raises(ConfigError) as caught:
            await nodes(topic, **options)
        assert caught.value.path == f"declare.{topic}.producer_options.compression_codec"
        assert "cramjam" in str(caught.value)
        return

    codecs_seen: list[int] = []
    real = aiokafka_fetcher.MemoryRecords

    def spy(data: bytes) -> Any:
        probe = real(data)
        while (batch := probe.next_batch()) is not None:
            codecs_seen.append(batch.compression_type)
        return real(data)

    monkeypatch.setattr(aiokafka_fetcher, "MemoryRecords", spy)
    node = await nodes(topic, run=False, **options)
    sent = [Message("j", f"{i:04d}".encode() * 500, topic) for i in range(20)]
    await node.driver.push_batch(sent)
    records = await read_back(kafka_bootstrap, topic, 1, len(sent))
    assert sorted(r.value for r in records) == sorted(m.payload for m in sent)
    assert codecs_seen and set(codecs_seen) == {CODEC_IDS[codec]}


# -- delay_buffer ----------------------------------------------------------------------------------


async def test_delay_buffer_bounds_the_forwarders_read_ahead(
        nodes: Callable[..., Any], unique_names: Callable[[str], str]) -> None:
    """With ``delay_buffer: 2`` the forwarder schedules two of five delayed records and
    pauses its partition; with the default it schedules all five."""
    small, default = unique_names("small"), unique_names("default")
    bounded = await nodes(small, auto_create_topics_enable=True, delay_buffer=2,
                          consumer_options={"topics": [small]}, group_options=group(small))
    unbounded = await nodes(default, auto_create_topics_enable=True,
                            consumer_options={"topics": [default]},
                            group_options=group(default))
    for node, topic in ((bounded, small), (unbounded, default)):
        await node.driver.push_batch([Message("j", f"{i}".encode(), topic, delay=600)
                                      for i in range(5)])
    fwd, other = bounded.driver._forwarder, unbounded.driver._forwarder
    assert fwd is not None and other is not None and fwd.buffer == 2
    await eventually(lambda: other.scheduled == 5, 20, "the default forwarder reads all five")
    await eventually(lambda: fwd.scheduled == 2 and bool(fwd._consumer.assignment())
                     and fwd._consumer.paused() == fwd._consumer.assignment(),
                     20, "the bounded forwarder full and paused")
    assert fwd.scheduled == 2
    assert (await bounded.driver.state()).delayed == 5


async def test_a_small_delay_buffer_still_forwards_everything_when_due(
        nodes: Callable[..., Any], unique_name: str) -> None:
    topic = unique_name
    node = await nodes(topic, auto_create_topics_enable=True, delay_buffer=1,
                       consumer_options={"topics": [topic]}, group_options=group(topic))
    start = time.monotonic()
    await node.driver.push_batch([Message("j", f"{i}".encode(), topic, delay=0.3)
                                  for i in range(4)])
    jobs = await take_all(node, 4)
    assert time.monotonic() - start >= 0.3 - 0.01
    assert payloads(jobs) == [b"0", b"1", b"2", b"3"]


# -- a fatal client error restarts the pipeline ----------------------------------------------------


async def test_a_fatal_fetch_error_makes_the_runtime_restart_the_pipeline_losing_nothing(
        kafka_bootstrap: str, unique_name: str) -> None:
    """The consumer of a running pipeline fails with a non-retriable error while a handler
    holds a job: the driver asks the runtime for a restart; the new driver consumes from
    the committed offsets, so the held job comes again and later jobs are handled."""
    topic = name = unique_name
    handled: list[bytes] = []
    release = asyncio.Event()
    app = App("kafka-restart")

    @app.handler("j")
    async def handle(job: Job) -> None:
        if job.payload == b"held" and not release.is_set():
            await release.wait()
        handled.append(job.payload)

    options = {"auto_create_topics_enable": True, "consumer_options": {"topics": [topic]},
               "group_options": group(name)}
    config = Config({"kafka": {"brokers": [kafka_bootstrap]},
                     "jobs": {"consume": [name], "pool": {"num_workers": 2},
                              "pipelines": {name: {"driver": "kafka", "config": options}}}},
                    source="test")
    jobs = Jobs(config, app)
    await jobs.start()
    try:
        first = jobs._pipelines[name].driver
        assert isinstance(first, KafkaDriver)
        await jobs.push(Message("j", b"done", name))
        await jobs.push(Message("j", b"held", name))
        await eventually(lambda: handled == [b"done"], 20, "the first job handled")
        await wait_committed(kafka_bootstrap, name, TopicPartition(topic, 0), 1)

        async def broken(*args: Any, **kwargs: Any) -> Any:
            raise TopicAuthorizationFailedError("injected")

        first._consumer.getmany = broken
        await eventually(lambda: jobs._pipelines[name].driver is not first
                         and not jobs._restarts, 40, "the pipeline rebuilt")
        assert first.stopped
        release.set()  # the old driver is gone: this settlement is refused, not lost
        await jobs.push(Message("j", b"after", name))
        await eventually(lambda: sorted(handled) == [b"after", b"done", b"held", b"held"],
                         30, "the held job again and the later one")
        await wait_committed(kafka_bootstrap, name, TopicPartition(topic, 0), 3)
        (stat,) = await jobs.stat()
        assert stat.state.ready is True
    finally:
        release.set()
        await jobs.stop()
