"""What a driver gives ``rrjobs bench``: the spec a baseline runs, its result,
and :class:`DriverBench`, the object a driver registers.

A driver registers its bench entry as a third-party driver does, in its
distribution's metadata::

    [project.entry-points."rrjobs.bench"]
    my_awesome_driver = "my_awesome_driver.bench:BENCH"

The entry point names a :class:`DriverBench` (or a bare baseline function).
It is loaded only when ``rrjobs bench`` runs that driver. This module imports
nothing outside ``rrjobs.core``, so a baseline needs only the core and the
broker's own client (:mod:`rrjobs.bench` runs the runtime phase). A baseline
times its items with :func:`run_timed`, or with :func:`run_loop` when its
consumer is one loop of receives.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

PushMode = Literal["batch", "single"]


@dataclass(frozen=True, slots=True)
class BenchSpec:
    """One benchmark, as the runtime phase and the baseline both see it.

    Attributes:
        driver: the driver name.
        pipeline: the pipeline name.
        jobs: how many jobs to push and consume.
        workers: consumers (the runtime's ``pool.num_workers``; the baseline's
            consumer tasks).
        batch: messages per ``push_batch`` call (per loop yield with
            ``push="single"``).
        producers: concurrent producer tasks; each pushes its share of ``jobs``.
        push: ``"batch"`` (``push_batch``) or ``"single"`` (one ``push`` per job).
        payload_size: bytes of payload per job.
        options: the pipeline's driver options (``jobs.pipelines.<p>.config``).
        config: the whole configuration tree the runtime is built from (driver
            sections such as ``amqp:`` included), for baselines that need
            connection settings.
        gc_freeze: move everything allocated before the clock starts into the
            garbage collector's permanent generation (:func:`gc.freeze`, as a
            server may do after start-up), for both phases, so that full
            collections do not walk the imported modules again and again.
    """

    driver: str
    pipeline: str
    jobs: int
    workers: int
    batch: int = 1000
    producers: int = 1
    push: PushMode = "batch"
    payload_size: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    gc_freeze: bool = False

    def shares(self) -> list[int]:
        """How many jobs each producer pushes (they add up to ``jobs``)."""
        base, extra = divmod(self.jobs, self.producers)
        return [base + (1 if i < extra else 0) for i in range(self.producers)]

    def payload(self) -> bytes:
        """A job's payload: ``payload_size`` random bytes."""
        return os.urandom(self.payload_size) if self.payload_size else b""

    async def publish(self, n: int, one: Callable[[], Awaitable[object]]) -> None:
        """``n`` awaited calls of ``one``: all at once with ``push="batch"`` (as
        ``push_batch``), one after the other with ``push="single"``."""
        if self.push == "batch":
            await asyncio.gather(*(one() for _ in range(n)))
        else:
            for _ in range(n):
                await one()


def bench_name(kind: str = "") -> str:
    """A fresh name for a run's queue, topic or stream: ``rrjobs-bench-<8 hex>``, or
    ``rrjobs-bench-<kind>-<8 hex>`` (a baseline's own: ``kind="raw"``)."""
    return "-".join(filter(None, ("rrjobs-bench", kind, uuid.uuid4().hex[:8])))


def from_env(var: str, config: Mapping[str, Any] | None, section: str, key: str) -> Any:
    """The variable ``var`` when set (the one the integration tests use for the
    broker), else ``config[section][key]``; ``None`` when neither is."""
    return os.environ.get(var, "").strip() or ((config or {}).get(section) or {}).get(key)


@dataclass(frozen=True, slots=True)
class PhaseResult:
    """One timed phase: how long it took (wall clock and this process's CPU
    time) and how many items went through."""

    seconds: float
    processed: int
    cpu_seconds: float = 0.0

    @property
    def jobs_per_s(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def jobs_per_cpu_s(self) -> float:
        return self.processed / self.cpu_seconds if self.cpu_seconds > 0 else 0.0


async def run_timed(spec: BenchSpec, send: Callable[[int], Awaitable[object]],
                    consume: Awaitable[object], *, chunk: int = 0) -> tuple[float, float]:
    """Time one baseline: ``consume`` against ``spec.producers`` producer tasks.

    ``consume`` is the consumer's coroutine, or a future it completes, done once
    every job is handled. Each producer sends its share of ``spec.jobs``
    (:meth:`BenchSpec.shares`) by awaiting ``send(n)`` with ``n`` at most
    ``spec.batch`` (and ``chunk``, when the broker caps a batch), yielding to the
    event loop between calls. Returns the wall-clock and CPU seconds from the
    first send to the end of ``consume``. The producers are then awaited, so
    their errors propagate; whatever is still running on the way out (an error,
    a cancellation) is cancelled and awaited.
    """
    size = min(spec.batch, chunk) if chunk else spec.batch

    async def produce(share: int) -> None:
        left = share
        while left > 0:
            n = min(size, left)
            left -= n
            await send(n)
            await asyncio.sleep(0)

    loop = asyncio.get_running_loop()
    start, cpu = time.perf_counter(), time.process_time()
    consumer = asyncio.ensure_future(consume)
    producers = [loop.create_task(produce(share)) for share in spec.shares()]
    try:
        await consumer
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        await asyncio.gather(*producers)
    finally:
        for task in (*producers, consumer):
            task.cancel()
        await asyncio.gather(*producers, consumer, return_exceptions=True)
    return elapsed, cpu


async def run_loop(spec: BenchSpec, send: Callable[[int], Awaitable[object]],
                   receive: Callable[[], Awaitable[int]], *, chunk: int = 0,
                   finish: Callable[[], Awaitable[object]] | None = None) -> PhaseResult:
    """:func:`run_timed` with one consumer that awaits ``receive()`` (it takes what
    the broker hands out and settles it, returning how many) until ``spec.jobs``
    items are, then ``finish()`` when given (a last commit), within the clock."""
    handled = 0

    async def consume() -> None:
        nonlocal handled
        while handled < spec.jobs:
            handled += await receive()
        if finish is not None:
            await finish()

    elapsed, cpu = await run_timed(spec, send, consume(), chunk=chunk)
    return PhaseResult(elapsed, handled, cpu)


BaselineFn = Callable[[BenchSpec], Awaitable[PhaseResult]]
#: ``() -> (config sections, pipeline options)`` for ``--driver`` without ``--config``.
DefaultsFn = Callable[[], tuple[Mapping[str, Any], Mapping[str, Any]]]


@dataclass(frozen=True, slots=True)
class DriverBench:
    """A driver's part of ``rrjobs bench``.

    Attributes:
        baseline: times the same number of items as the runtime phase with the
            broker's bare client and no rrjobs code, with the pipeline's own
            settings (``spec.options``), so that the ratio compares like with like.
            ``None``: the driver is measured against its peers instead
            (``benchmarks/peers``); ``rrjobs bench`` then reports no ratio.
        defaults: the config sections and pipeline options the driver benches
            with when no ``--config`` is given (e.g. the broker address from the
            driver's ``RRJOBS_*`` variable); ``--option`` values override the
            options. ``None``: none.
        raw_client: the baseline is the broker's own client in a bare loop; the
            result then also names its figure ``raw_client_jobs_per_s``.
    """

    baseline: BaselineFn | None
    defaults: DefaultsFn | None = None
    raw_client: bool = False
