"""``rrjobs bench --driver amqp``: the bench's settings and its raw aio-pika baseline.

The broker is the one in ``RRJOBS_AMQP_URL`` (the variable the integration
tests use), else RoadRunner's default address. Each run uses a fresh durable
queue on the durable direct exchange ``rrjobs.bench``, deleted afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aio_pika

from rrjobs.core.baseline import (
    BenchSpec,
    DriverBench,
    PhaseResult,
    bench_name,
    from_env,
    run_timed,
)
from rrjobs.drivers.amqp.config import DEFAULT_ADDR

BENCH_EXCHANGE = "rrjobs.bench"
PERSISTENT = aio_pika.DeliveryMode.PERSISTENT
#: The prefetch of both phases unless ``--option prefetch=N`` says otherwise.
BENCH_PREFETCH = 100


def broker_url(config: Mapping[str, Any] | None = None) -> str:
    """``RRJOBS_AMQP_URL``, else ``amqp.addr`` of ``config``, else the default address."""
    return str(from_env("RRJOBS_AMQP_URL", config, "amqp", "addr") or DEFAULT_ADDR)


def bench_defaults() -> tuple[dict[str, Any], dict[str, Any]]:
    """The config sections and pipeline options of ``rrjobs bench --driver amqp``."""
    name = bench_name()
    return {"amqp": {"addr": broker_url()}}, {
        "queue": name, "routing_key": name, "exchange": BENCH_EXCHANGE,
        "exchange_durable": True, "durable": True, "prefetch": BENCH_PREFETCH,
        "delete_queue_on_stop": True}


async def amqp_baseline(spec: BenchSpec) -> PhaseResult:
    """A raw aio-pika loop: persistent publishes with confirms, the same prefetch, manual acks."""
    name, payload, handled = bench_name("raw"), spec.payload(), 0
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    connection = await aio_pika.connect(broker_url(spec.config))
    try:
        publish_channel = await connection.channel(publisher_confirms=True)
        consume_channel = await connection.channel()
        await consume_channel.set_qos(
            prefetch_count=int(spec.options.get("prefetch", BENCH_PREFETCH)))
        exchange = await publish_channel.declare_exchange(
            BENCH_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True)
        queue = await publish_channel.declare_queue(name, durable=True)
        await queue.bind(exchange, routing_key=name)
        consume_queue = await consume_channel.get_queue(name, ensure=False)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal handled
            await message.ack()
            handled += 1
            if handled == spec.jobs and not done.done():
                done.set_result(None)

        async def send(n: int) -> None:
            await spec.publish(n, lambda: exchange.publish(
                aio_pika.Message(payload, delivery_mode=PERSISTENT), routing_key=name))

        tag = await consume_queue.consume(on_message)
        elapsed, cpu = await run_timed(spec, send, done)
        await consume_queue.cancel(tag)
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
    return PhaseResult(elapsed, handled, cpu)


#: The ``rrjobs.bench`` entry point of the amqp driver.
BENCH = DriverBench(amqp_baseline, bench_defaults, raw_client=True)
