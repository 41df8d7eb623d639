"""``rrjobs bench --driver beanstalk``: the bench's settings and its raw-client baseline.

The server is ``RRJOBS_BEANSTALK_ADDR``, else ``beanstalk.addr`` of the config, else
``tcp://127.0.0.1:11300``; each run uses a fresh tube. The baseline is the bare
protocol client (:mod:`rrjobs.drivers.beanstalk.protocol`): each chunk put
pipelined with the same body layout, jobs reserved up to ``prefetch`` at a time
(pipelined ``reserve-with-timeout 0``, one blocking reserve when none is ready),
each deleted as it is taken, pipelined.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rrjobs.core.baseline import BenchSpec, DriverBench, PhaseResult, bench_name, from_env, run_loop
from rrjobs.core.delays import whole_seconds
from rrjobs.core.message import new_id
from rrjobs.drivers.beanstalk import codec
from rrjobs.drivers.beanstalk.config import BeanstalkOptions, BeanstalkSection
from rrjobs.drivers.beanstalk.protocol import connect

ENV = "RRJOBS_BEANSTALK_ADDR"
BENCH_PREFETCH = 512


def section(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``beanstalk:`` section: ``RRJOBS_BEANSTALK_ADDR`` over ``config``'s."""
    data = dict((config or {}).get("beanstalk") or {})
    addr = from_env(ENV, config, "beanstalk", "addr")
    if addr:
        data["addr"] = addr
    return data


def bench_defaults() -> tuple[dict[str, Any], dict[str, Any]]:
    """The config sections and pipeline options of ``rrjobs bench --driver beanstalk``."""
    return {"beanstalk": section()}, {"tube": bench_name(), "prefetch": BENCH_PREFETCH}


async def beanstalk_baseline(spec: BenchSpec) -> PhaseResult:
    """The bare protocol client: pipelined puts, pipelined reserves, pipelined deletes."""
    options = BeanstalkOptions.model_validate(dict(spec.options))
    sect = BeanstalkSection.model_validate(section(spec.config))
    tube = bench_name("raw")
    ttr = max(1, whole_seconds(options.ttr or sect.timeout))
    payload = spec.payload()
    pri = options.tube_priority
    want = max(1, min(options.prefetch // 2, 256))
    producer = await connect(sect.addr, sect.timeout)
    consumer = await connect(sect.addr, sect.timeout)
    try:
        await producer.use(tube)
        await consumer.watch(tube)
        await consumer.ignore("default")

        async def send(n: int) -> None:
            await producer.put_many([(codec.encode(
                id=new_id(), name="bench", pipeline=tube, payload=payload, headers={},
                priority=10, auto_ack=False), pri, 0, ttr) for _ in range(n)])

        async def receive() -> int:
            got = await consumer.reserve_many(want)
            if not got:
                one = await consumer.reserve(1)
                got = [one] if one is not None else []
            for job in got:
                codec.decode(job.body, 10)
                consumer.post(b"delete %d" % job.id)
            return len(got)

        async def finish() -> None:
            await consumer.stats()  # every delete before it is answered

        return await run_loop(spec, send, receive, finish=finish)
    finally:
        await producer.close()
        await consumer.close()


#: The ``rrjobs.bench`` entry point of the beanstalk driver.
BENCH = DriverBench(beanstalk_baseline, bench_defaults, raw_client=True)
