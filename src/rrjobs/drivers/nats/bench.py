"""``rrjobs bench --driver nats``: the bench's settings and its raw nats-py baseline (what it
does: ``docs/drivers/nats.md``, *Benchmark*). Each run uses a fresh stream, deleted afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from rrjobs.core.baseline import BenchSpec, DriverBench, PhaseResult, bench_name, from_env, run_loop
from rrjobs.drivers.nats.config import DEFAULT_ADDR

BENCH_PREFETCH = 1000  #: the prefetch of both phases unless ``--option prefetch=N`` says otherwise


def server_url(config: Mapping[str, Any] | None = None) -> str:
    """``RRJOBS_NATS_URL``, else ``nats.addr`` of ``config``, else the default."""
    return str(from_env("RRJOBS_NATS_URL", config, "nats", "addr") or DEFAULT_ADDR)


def bench_defaults() -> tuple[dict[str, Any], dict[str, Any]]:
    """The config sections and pipeline options of ``rrjobs bench --driver nats``."""
    name = bench_name()
    return {"nats": {"addr": server_url()}}, {
        "stream": name, "subject": f"{name}.jobs", "prefetch": BENCH_PREFETCH,
        "delete_stream_on_stop": True}


async def nats_baseline(spec: BenchSpec) -> PhaseResult:
    """A raw nats-py loop: publishes with PubAcks, batched pull fetches, ``+ACK`` each."""
    prefetch = int(spec.options.get("prefetch", BENCH_PREFETCH))
    name, payload = bench_name("raw"), spec.payload()
    subject = f"{name}.jobs"
    nc = await nats.connect(server_url(spec.config), no_echo=True)
    js = nc.jetstream()
    try:
        await js.add_stream(StreamConfig(name=name, subjects=[subject]))
        sub = await js.pull_subscribe(subject, durable=name, stream=name, config=ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_ack_pending=prefetch))

        async def receive() -> int:
            try:
                msgs = await sub.fetch(prefetch, timeout=1.0)
            except TimeoutError:
                return 0
            for msg in msgs:
                await msg.ack()
            return len(msgs)

        async def send(n: int) -> None:
            await spec.publish(n, lambda: js.publish(subject, payload))

        result = await run_loop(spec, send, receive)
        await nc.flush()
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(name)
        await nc.close()
    return result


BENCH = DriverBench(nats_baseline, bench_defaults, raw_client=True)  #: the ``rrjobs.bench`` entry
