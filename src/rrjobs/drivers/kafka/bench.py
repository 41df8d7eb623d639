"""``rrjobs bench --driver kafka``: settings and a raw aiokafka baseline (the driver's acks
and commit cadence) on ``RRJOBS_KAFKA_BROKERS``, else ``kafka.brokers``, else the default.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]

from rrjobs.core.baseline import BenchSpec, DriverBench, PhaseResult, bench_name, from_env, run_loop
from rrjobs.core.message import new_id
from rrjobs.drivers.kafka.client import connection_kwargs
from rrjobs.drivers.kafka.config import KafkaOptions, KafkaSection

#: The driver options of ``rrjobs bench --driver kafka`` unless ``--option`` says otherwise.
BENCH_PREFETCH = 1000
BENCH_COMMIT_INTERVAL = 0.2


def brokers(config: Mapping[str, Any] | None = None) -> list[str]:
    """``RRJOBS_KAFKA_BROKERS``, else ``kafka.brokers`` of ``config``, else the default."""
    given = from_env("RRJOBS_KAFKA_BROKERS", config, "kafka", "brokers")
    return KafkaSection.model_validate({"brokers": given}).brokers


def bench_defaults() -> tuple[dict[str, Any], dict[str, Any]]:
    """The config sections and pipeline options of ``rrjobs bench --driver kafka``."""
    name = bench_name()
    return {"kafka": {"brokers": brokers()}}, {
        "auto_create_topics_enable": True,
        "consumer_options": {"topics": [name]},
        "group_options": {"group_id": name, "commit_interval": BENCH_COMMIT_INTERVAL,
                          "session_timeout": "6s", "heartbeat_interval": "500ms"},
        "prefetch": BENCH_PREFETCH,
    }


async def kafka_baseline(spec: BenchSpec) -> PhaseResult:
    """A raw aiokafka loop: idempotent acks=all producer, group consumer committing
    every commit_interval (the driver's acks and commit cadence)."""
    options = KafkaOptions.model_validate(dict(spec.options))
    section = KafkaSection.model_validate(
        {**((spec.config or {}).get("kafka") or {}), "brokers": brokers(spec.config)})
    conn = connection_kwargs(section, options.sasl_options or section.sasl, None)
    interval = options.group_options.commit_interval if options.group_options else 0.2
    topic, payload = bench_name("raw"), spec.payload()
    p = options.producer_options
    producer = AIOKafkaProducer(acks="all", enable_idempotence=not p.disable_idempotent,
                                max_request_size=p.max_message_bytes, linger_ms=0,
                                max_batch_size=min(p.max_message_bytes, 1024 * 1024), **conn)
    consumer = AIOKafkaConsumer(group_id=topic, enable_auto_commit=False,
                                auto_offset_reset="earliest", session_timeout_ms=6000,
                                heartbeat_interval_ms=500, **conn)
    await producer.start()
    try:
        await producer.partitions_for(topic)  # creates the topic, as the driver does
        await consumer.start()
        consumer.subscribe([topic])
        dirty, last_commit = False, time.monotonic()

        async def receive() -> int:
            nonlocal dirty, last_commit
            batch = await consumer.getmany(timeout_ms=500, max_records=options.prefetch)
            got = sum(len(records) for records in batch.values())
            dirty = dirty or bool(got)
            now = time.monotonic()
            if dirty and now - last_commit >= interval:
                await consumer.commit()
                dirty, last_commit = False, now
            return got

        async def send(n: int) -> None:
            futures = [await producer.send(topic, payload, key=new_id().encode())
                       for _ in range(n)]
            await asyncio.gather(*futures)

        result = await run_loop(spec, send, receive, finish=consumer.commit)
    finally:
        await consumer.stop()
        await producer.stop()
    return result


#: The ``rrjobs.bench`` entry point of the kafka driver.
BENCH = DriverBench(kafka_baseline, bench_defaults, raw_client=True)
