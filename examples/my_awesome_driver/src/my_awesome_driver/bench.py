"""The driver's baseline for ``rrjobs bench``: the spool alone, no rrjobs code.

Registered in the ``rrjobs.bench`` entry-point group (see ``pyproject.toml``),
so ``rrjobs bench --driver my_awesome_driver`` compares the runtime with it.
In one thread it publishes each chunk of ``spec.batch`` messages with one
directory sync, then reserves them ``prefetch`` at a time and acknowledges
each: the least work a consumer of the same spool does for the same jobs, with
the pipeline's own settings (``dir``, ``fsync``, ``prefetch``). It uses only
``rrjobs.core`` and the spool, never the runtime.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from pathlib import Path

from my_awesome_driver.config import Options, Settings
from my_awesome_driver.spool import Spool
from rrjobs.core.baseline import BenchSpec, DriverBench, PhaseResult
from rrjobs.core.options import validate


async def spool_baseline(spec: BenchSpec) -> PhaseResult:
    """The bare spool: publish each chunk with one sync, reserve prefetch at a time, ack each."""
    settings = validate(Settings, dict(spec.config.get("my_awesome_driver") or {}),
                        "my_awesome_driver")
    options = validate(Options, dict(spec.options), f"jobs.pipelines.{spec.pipeline}.config")
    root = Path(settings.dir) / f".bench-{uuid.uuid4().hex}"
    spool = Spool(root, fsync=settings.fsync)
    try:
        return await asyncio.to_thread(_run, spool, spec, options.prefetch)
    finally:
        await asyncio.to_thread(shutil.rmtree, root, True)


def _run(spool: Spool, spec: BenchSpec, prefetch: int) -> PhaseResult:
    spool.create()
    body = b"\0" * spec.payload_size
    done = 0
    start, cpu = time.perf_counter(), time.process_time()
    while done < spec.jobs:
        n = min(spec.batch, spec.jobs - done)
        spool.publish_many([({}, body, 0, 0.0)] * n)
        while (got := spool.reserve(prefetch, 30.0)):
            for delivery in got:
                spool.ack(delivery)
            done += len(got)
    return PhaseResult(time.perf_counter() - start, done, time.process_time() - cpu)


#: The driver's ``rrjobs.bench`` entry point.
BENCH = DriverBench(spool_baseline)
