"""The ``rrjobs.bench`` baseline: the same jobs through the bare spool, no runtime."""

import asyncio
import shutil
import time
import uuid
from pathlib import Path

from my_awesome_driver.driver import Options, Settings
from my_awesome_driver.spool import Spool
from rrjobs.core.baseline import BenchSpec, DriverBench, PhaseResult
from rrjobs.core.options import validate


async def spool_baseline(spec: BenchSpec) -> PhaseResult:
    """The bare spool: publish each chunk with one sync, reserve prefetch at a time, ack each."""
    settings = validate(Settings, dict(spec.config.get("my_awesome_driver") or {}),
                        "my_awesome_driver")
    options = validate(Options, dict(spec.options), f"jobs.pipelines.{spec.pipeline}.config")
    spool = Spool(Path(settings.dir) / f".bench-{uuid.uuid4().hex}", fsync=settings.fsync)

    def run() -> PhaseResult:
        spool.create()
        body, done = b"\0" * spec.payload_size, 0
        start, cpu = time.perf_counter(), time.process_time()
        while done < spec.jobs:
            spool.publish([({}, body, 0, 0)] * min(spec.batch, spec.jobs - done))
            while got := spool.reserve(options.prefetch, 30_000):
                for handle, *_ in got:
                    spool.ack(handle)
                done += len(got)
        return PhaseResult(time.perf_counter() - start, done, time.process_time() - cpu)

    try:
        return await asyncio.to_thread(run)
    finally:
        await asyncio.to_thread(shutil.rmtree, spool.root, True)


BENCH = DriverBench(spool_baseline)
