"""``rrjobs bench --driver kafka``: the bench's settings and its raw aiokafka baseline.

The broker is the one in ``RRJOBS_KAFKA_BROKERS`` (the variable the integration
tests use), else ``kafka.brokers`` of the config, else RoadRunner's default.
Each run uses fresh topics (one partition, the broker's default) and groups.

The baseline is a bare aiokafka loop with the driver's settings: an idempotent
producer with ``acks=all`` sending chunks of ``spec.batch`` records (key = a
uuid, as the driver's job ids), and a group consumer with auto-commit off that
commits what it consumed every ``commit_interval`` (the driver's commit
cadence), counting records until all arrived.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer  # type: ignore[import-untyped]

from rrjobs.core.baseline import BenchSpec, DriverBench, PhaseResult, run_timed
from rrjobs.core.message import new_id
from rrjobs.drivers.kafka.client import connection_kwargs
from rrjobs.drivers.kafka.config import DEFAULT_BROKERS, KafkaOptions, KafkaSection

#: The driver options of ``rrjobs bench --driver kafka`` unless ``--option`` says otherwise.
BENCH_PREFETCH = 1000
BENCH_COMMIT_INTERVAL = 0.2


def brokers(config: Mapping[str, Any] | None = None) -> list[str]:
    """``RRJOBS_KAFKA_BROKERS``, else ``kafka.brokers`` of ``config``, else the default."""
    env = os.environ.get("RRJOBS_KAFKA_BROKERS", "").strip()
    if env:
        return [b.strip().split("://", 1)[-1] for b in env.split(",") if b.strip()]
    section = (config or {}).get("kafka") or {}
    value = section.get("brokers") or DEFAULT_BROKERS
    return [value] if isinstance(value, str) else list(value)


def bench_defaults() -> tuple[dict[str, Any], dict[str, Any]]:
    """The config sections and pipeline options of ``rrjobs bench --driver kafka``."""
    name = f"rrjobs-bench-{uuid.uuid4().hex[:8]}"
    sections = {"kafka": {"brokers": brokers()}}
    options = {
        "auto_create_topics_enable": True,
        "consumer_options": {"topics": [name]},
        "group_options": {"group_id": name, "commit_interval": BENCH_COMMIT_INTERVAL,
                          "session_timeout": "6s", "heartbeat_interval": "500ms"},
        "prefetch": BENCH_PREFETCH,
    }
    return sections, options


async def kafka_baseline(spec: BenchSpec) -> PhaseResult:
    """A raw aiokafka loop: idempotent acks=all producer, group consumer committing
    every commit_interval (the driver's acks and commit cadence)."""
    options = KafkaOptions.model_validate(dict(spec.options))
    section_data = dict((spec.config or {}).get("kafka") or {})
    section_data["brokers"] = brokers(spec.config)
    section = KafkaSection.model_validate(section_data)
    conn = connection_kwargs(section, options.sasl_options or section.sasl, None)
    interval = options.group_options.commit_interval if options.group_options else 0.2
    topic = f"rrjobs-bench-raw-{uuid.uuid4().hex[:8]}"
    payload = os.urandom(spec.payload_size) if spec.payload_size else b""
    total = spec.jobs
    handled = 0
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

        async def consume() -> None:
            nonlocal handled
            dirty = False
            last_commit = time.monotonic()
            while handled < total:
                batch = await consumer.getmany(timeout_ms=500, max_records=options.prefetch)
                for records in batch.values():
                    handled += len(records)
                    dirty = dirty or bool(records)
                now = time.monotonic()
                if dirty and now - last_commit >= interval:
                    await consumer.commit()
                    dirty, last_commit = False, now
            await consumer.commit()

        async def send(n: int) -> None:
            futures = [await producer.send(topic, payload, key=new_id().encode())
                       for _ in range(n)]
            await asyncio.gather(*futures)

        elapsed, cpu = await run_timed(spec, send, consume())
    finally:
        await consumer.stop()
        await producer.stop()
    return PhaseResult(elapsed, handled, cpu)


#: The ``rrjobs.bench`` entry point of the kafka driver.
BENCH = DriverBench(kafka_baseline, bench_defaults, raw_client=True)
