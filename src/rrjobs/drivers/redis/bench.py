"""``rrjobs bench --driver redis``: the bench's settings and its raw redis-py baseline.

The server is ``RRJOBS_REDIS_URL``, else ``redis.addr`` of the config, else the default;
each run uses a fresh queue, deleted afterwards. The baseline does what the driver may:
``XADD`` a batch in one pipeline (``push="batch"``; one ``XADD`` each with
``push="single"``), ``XREADGROUP`` of up to ``prefetch`` blocking for ``block``, then
``XACK`` and ``XDEL`` of what it read in one pipeline.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from rrjobs.core.baseline import BenchSpec, DriverBench, PhaseResult, bench_name, from_env, run_loop
from rrjobs.core.delays import whole_millis
from rrjobs.core.message import new_id
from rrjobs.core.options import validate
from rrjobs.drivers.redis import codec
from rrjobs.drivers.redis.config import DEFAULT_ADDR, RedisOptions, RedisSection
from rrjobs.drivers.redis.driver import client_for, stream_keys

BENCH_PREFETCH = 1000  #: the prefetch of both phases unless ``--option prefetch=N`` says otherwise


def server_url(config: Mapping[str, Any] | None = None) -> str:
    """``RRJOBS_REDIS_URL``, else ``redis.addr`` of ``config``, else the default."""
    return str(from_env("RRJOBS_REDIS_URL", config, "redis", "addr") or DEFAULT_ADDR)


def bench_defaults() -> tuple[dict[str, Any], dict[str, Any]]:
    """The config sections and pipeline options of ``rrjobs bench --driver redis``."""
    return {"redis": {"addr": server_url()}}, {"queue": bench_name(),
                                               "prefetch": BENCH_PREFETCH}


async def redis_baseline(spec: BenchSpec) -> PhaseResult:
    """A raw redis-py loop on a queue of its own (see the module docstring)."""
    section = validate(RedisSection, {**dict(spec.config.get("redis") or {}),
                                      "addr": server_url(spec.config)}, "redis")
    options = validate(RedisOptions, dict(spec.options), f"jobs.pipelines.{spec.pipeline}.config")
    name = bench_name("raw")
    stream, group, payload = stream_keys(name, [])[0], "rrjobs", spec.payload()
    client = client_for(section)
    block = whole_millis(options.block)
    try:
        await client.xgroup_create(stream, group, id="0", mkstream=True)

        def fields() -> dict[bytes, bytes]:
            return codec.encode(new_id(), "bench", payload, {}, 10, False)

        async def send(n: int) -> None:
            if spec.push == "single":
                for _ in range(n):
                    await client.xadd(stream, fields())  # type: ignore[arg-type]
                return
            pipe = client.pipeline(transaction=False)
            for _ in range(n):
                pipe.xadd(stream, fields())  # type: ignore[arg-type]
            await pipe.execute()

        async def receive() -> int:
            reply = await client.xreadgroup(group, "bench", {stream: ">"},
                                            count=options.prefetch, block=block)
            ids = [entry for _, got in reply or [] for entry, _ in got]
            if ids:
                pipe = client.pipeline(transaction=False)
                pipe.xack(stream, group, *ids)
                pipe.xdel(stream, *ids)
                await pipe.execute()
            return len(ids)

        return await run_loop(spec, send, receive)
    finally:
        with contextlib.suppress(Exception):
            await client.delete(stream)
        await client.aclose()


#: The ``rrjobs.bench`` entry point of the redis driver.
BENCH = DriverBench(redis_baseline, bench_defaults, raw_client=True)
