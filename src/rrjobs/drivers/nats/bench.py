"""``rrjobs bench --driver nats``: the bench's settings and its raw nats-py baseline (what it
does: ``docs/drivers/nats.md``, *Benchmark*). Each run uses a fresh stream, deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Mapping
from typing import Any

import nats
from nats.js.api import AckPolicy, ConsumerConfig, StreamConfig

from rrjobs.core.baseline import BenchSpec, DriverBench, PhaseResult, run_timed
from rrjobs.drivers.nats.config import DEFAULT_ADDR

BENCH_PREFETCH = 1000  #: the prefetch of both phases unless ``--option prefetch=N`` says otherwise


def server_url(config: Mapping[str, Any] | None = None) -> str:
    """``RRJOBS_NATS_URL``, else ``nats.addr`` of ``config``, else the default."""
    addr = ((config or {}).get("nats") or {}).get("addr")
    return os.environ.get("RRJOBS_NATS_URL", "").strip() or str(addr or DEFAULT_ADDR)


def bench_defaults() -> tuple[dict[str, Any], dict[str, Any]]:
    """The config sections and pipeline options of ``rrjobs bench --driver nats``."""
    name = f"rrjobs-bench-{uuid.uuid4().hex[:8]}"
    sections = {"nats": {"addr": server_url()}}
    options = {"stream": name, "subject": f"{name}.jobs", "prefetch": BENCH_PREFETCH,
               "delete_stream_on_stop": True}
    return sections, options


async def nats_baseline(spec: BenchSpec) -> PhaseResult:
    """A raw nats-py loop: publishes with PubAcks, batched pull fetches, ``+ACK`` each."""
    prefetch = int(spec.options.get("prefetch", BENCH_PREFETCH))
    name = f"rrjobs-bench-raw-{uuid.uuid4().hex[:8]}"
    subject = f"{name}.jobs"
    payload = os.urandom(spec.payload_size) if spec.payload_size else b""
    handled = 0
    nc = await nats.connect(server_url(spec.config), no_echo=True)
    js = nc.jetstream()
    try:
        await js.add_stream(StreamConfig(name=name, subjects=[subject]))
        sub = await js.pull_subscribe(subject, durable=name, stream=name, config=ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT, ack_wait=30, max_ack_pending=prefetch))

        async def consume() -> None:
            nonlocal handled
            while handled < spec.jobs:
                try:
                    msgs = await sub.fetch(prefetch, timeout=1.0)
                except TimeoutError:
                    continue
                for msg in msgs:
                    await msg.ack()
                handled += len(msgs)

        async def send(n: int) -> None:
            if spec.push == "batch":
                await asyncio.gather(*(js.publish(subject, payload) for _ in range(n)))
            else:
                for _ in range(n):
                    await js.publish(subject, payload)

        elapsed, cpu = await run_timed(spec, send, consume())
        await nc.flush()
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(name)
        await nc.close()
    return PhaseResult(elapsed, handled, cpu)


BENCH = DriverBench(nats_baseline, bench_defaults, raw_client=True)  #: the ``rrjobs.bench`` entry
