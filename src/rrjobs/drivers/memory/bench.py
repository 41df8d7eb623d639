"""The memory driver's baseline for ``rrjobs bench``: a bare ``asyncio.Queue``
producer/consumer loop with the same chunking and consumer count, no rrjobs code."""

from __future__ import annotations

import asyncio

from rrjobs.core.baseline import BenchSpec, DriverBench, PhaseResult, run_timed


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

    async def send(n: int) -> None:
        put = queue.put_nowait
        for i in range(n):
            put(i)

    consumers = [loop.create_task(consume()) for _ in range(spec.workers)]
    try:
        elapsed, cpu = await run_timed(spec, send, done)
    finally:
        for c in consumers:
            c.cancel()
        await asyncio.gather(*consumers, return_exceptions=True)
    return PhaseResult(elapsed, handled, cpu)


#: The ``rrjobs.bench`` entry point of the memory driver.
BENCH = DriverBench(memory_baseline)
