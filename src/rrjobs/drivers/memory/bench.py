"""The memory driver's baseline for ``rrjobs bench``: a bare ``asyncio.Queue``
producer/consumer loop with the same chunking and consumer count, no rrjobs code."""

from __future__ import annotations

import asyncio
import time

from rrjobs.core.baseline import BenchSpec, DriverBench, PhaseResult


async def memory_baseline(spec: BenchSpec) -> PhaseResult:
    """A bare asyncio.Queue producer/consumer loop (same chunking and consumer count)."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    total = spec.jobs
    handled = 0

    async def consume() -> None:
        nonlocal handled
        get = queue.get
        while True:
            await get()
            handled += 1
            if handled == total and not done.done():
                done.set_result(None)

    async def produce(share: int) -> None:
        put, batch, left = queue.put_nowait, spec.batch, share
        while left > 0:
            n = min(batch, left)
            left -= n
            for i in range(n):
                put(i)
            await asyncio.sleep(0)

    consumers = [loop.create_task(consume()) for _ in range(spec.workers)]
    try:
        start, cpu = time.perf_counter(), time.process_time()
        async with asyncio.TaskGroup() as producers:
            for share in spec.shares():
                producers.create_task(produce(share))
            await done
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        for c in consumers:
            c.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
    return PhaseResult(elapsed, handled, cpu)


#: The ``rrjobs.bench`` entry point of the memory driver.
BENCH = DriverBench(memory_baseline)
