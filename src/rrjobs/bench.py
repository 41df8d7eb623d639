"""``rrjobs bench``: end-to-end throughput of one driver, measured against a bare baseline.

The harness is the same for every driver::

    rrjobs bench --driver memory --jobs 200000 [--workers 2] [--json]
    rrjobs bench --driver sqlite --option file=/tmp/b.db --jobs 20000
    rrjobs bench --config .rr.yaml --pipeline emails --jobs 10000
    rrjobs bench --pq [--jobs 200000] [--json]

**What is measured.** A :class:`~rrjobs.runtime.jobs.Jobs` runtime with one
pipeline of the driver and a no-op ``async`` handler; every job is acknowledged
by the default outcome (the handler returns, the runtime acks). The clock runs
from the first push (message creation included) to the acknowledgement of the
last job. Producers push in chunks with ``push_batch`` (or one ``push`` per
message with ``--push single``) and let the loop run between chunks. In the
same run the driver's **baseline** does the same number of items with the
broker's bare client and no rrjobs code (for the memory driver an
``asyncio.Queue`` producer/consumer loop with the same chunking and consumer
count). ``ratio`` is rrjobs' rate over the baseline's. A driver measured against
its peers instead (sqlite: ``benchmarks/peers``, ``docs/performance.md``) registers
a :class:`~rrjobs.core.baseline.DriverBench` without a baseline: its runs report
rrjobs' figures only (``baseline`` and ``ratio`` are ``None``).

**Exactly once.** The handler counts the jobs it sees and their distinct ids;
after the runtime stopped the result reports ``processed``, ``duplicates`` and
``lost``, and the command exits 1 unless every job was handled exactly once.

**Where baselines come from.** A baseline is an ``async`` function taking a
:class:`BenchSpec` and returning a :class:`PhaseResult`. Each driver, built-in
or not, registers it under its name in the ``rrjobs.bench`` entry-point group,
as a :class:`~rrjobs.core.baseline.DriverBench` (the baseline, the driver's
bench defaults, whether it is a raw-client loop), loaded only when that driver
is benched::

    [project.entry-points."rrjobs.bench"]
    my_awesome_driver = "my_awesome_driver.bench:BENCH"

Code may also call :func:`register_baseline`, which wins over the entry point.
A baseline must use the same settings as the pipeline (``spec.options``: file,
durability, prefetch, ...), so that the ratio compares like with like. A driver
without a baseline is an error that names the drivers that have one.

**The priority-queue microbenchmark** (``--pq``) times
:class:`~rrjobs.core.queue.PriorityQueue` (``insert_nowait``/``extract_nowait``,
the runtime's hot path) against plain :mod:`heapq` on ``(priority, seq, item)``
tuples, after checking that both give the same order, and times ``count`` and
``remove`` of one pipeline with many jobs of other pipelines queued.

Everything runs in one process on one event loop; nothing here is timed in
tests (tests check the result's structure and the exactly-once accounting).
"""

from __future__ import annotations

import asyncio
import cProfile
import datetime
import gc
import heapq
import json
import os
import platform
import random
import statistics
import sys
import time
from array import array
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from itertools import count
from pathlib import Path
from typing import Any, overload

import click
import yaml

from rrjobs._version import __version__
from rrjobs.config import Config
from rrjobs.core.baseline import (
    BaselineFn,
    BenchSpec,
    DefaultsFn,
    DriverBench,
    PhaseResult,
    PushMode,
)
from rrjobs.core.errors import RRJobsError
from rrjobs.core.message import Message
from rrjobs.core.queue import PriorityQueue
from rrjobs.runtime.app import App
from rrjobs.runtime.jobs import Jobs

#: The job name the bench pushes and handles.
JOB_NAME = "rrjobs.bench.noop"
#: The pipeline name used when the bench builds its own config.
DEFAULT_PIPELINE = "bench"

#: The entry-point group of the drivers' bench entries.
GROUP = "rrjobs.bench"

__all__ = ["BenchSpec", "DriverBench", "PhaseResult", "PushMode", "register_baseline"]


class BenchError(RRJobsError):
    """The benchmark could not run as asked (no baseline for the driver, a bad
    option, a run that did not finish)."""


# -- what a run is -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RuntimeResult:
    """The runtime phase plus its exactly-once accounting: ``processed``
    handler calls, ``unique`` distinct job ids among them, and the pipeline's
    outcome counters."""

    phase: PhaseResult
    processed: int
    unique: int
    counters: dict[str, int]


#: Driver name → its bench entry, registered from code with
#: :func:`register_baseline`; consulted before the ``rrjobs.bench`` entry points.
BASELINES: dict[str, DriverBench] = {}
#: The entry-point objects loaded so far, by driver name.
_LOADED: dict[str, DriverBench] = {}


def bench_entry_points() -> dict[str, EntryPoint]:
    """The installed distributions' ``rrjobs.bench`` entry points, by driver name."""
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def _as_driver_bench(obj: object, where: str) -> DriverBench:
    if isinstance(obj, DriverBench):
        return obj
    if callable(obj):
        return DriverBench(obj)
    raise BenchError(f"{where} is neither a DriverBench nor a baseline function")


def driver_bench(driver: str) -> DriverBench | None:
    """The bench entry of ``driver``, or ``None`` when it registered none."""
    entry = BASELINES.get(driver) or _LOADED.get(driver)
    if entry is not None:
        return entry
    ep = bench_entry_points().get(driver)
    if ep is None:
        return None
    dist = getattr(ep, "dist", None)
    where = f"entry point {GROUP}:{driver} = {ep.value!r}" + (
        f" of {dist.name}" if dist is not None else "")
    try:
        obj = ep.load()
    except (ImportError, AttributeError) as exc:
        raise BenchError(f"{where} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    _LOADED[driver] = entry = _as_driver_bench(obj, where)
    return entry


def drivers_with_baseline() -> list[str]:
    """The driver names with a baseline (registered in code or by entry point)."""
    return sorted(set(BASELINES) | set(bench_entry_points()))


def driver_defaults(driver: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The config sections and pipeline options ``driver`` benches with by default."""
    entry = driver_bench(driver)
    if entry is None or entry.defaults is None:
        return {}, {}
    sections, options = entry.defaults()
    return dict(sections), dict(options)


@overload
def register_baseline(driver: str, *, defaults: DefaultsFn | None = None,
                      raw_client: bool = False) -> Callable[[BaselineFn], BaselineFn]: ...


@overload
def register_baseline(driver: str, fn: BaselineFn, *, defaults: DefaultsFn | None = None,
                      raw_client: bool = False) -> BaselineFn: ...


def register_baseline(driver: str, fn: BaselineFn | None = None, *,
                      defaults: DefaultsFn | None = None, raw_client: bool = False) -> Any:
    """Register ``fn`` as the baseline of ``driver`` from code; usable as a decorator.

    It wins over the driver's ``rrjobs.bench`` entry point; a later
    registration for the same driver replaces the earlier one.
    """

    def deco(f: BaselineFn) -> BaselineFn:
        BASELINES[driver] = DriverBench(f, defaults, raw_client)
        return f

    return deco(fn) if fn is not None else deco


def baseline_for(driver: str) -> BaselineFn | None:
    """The baseline of ``driver`` (``None``: its bench entry has none, it is measured
    against its peers); :class:`BenchError` if the driver has no bench entry."""
    entry = driver_bench(driver)
    if entry is None:
        have = ", ".join(drivers_with_baseline()) or "none"
        raise BenchError(
            f"no baseline registered for driver {driver!r} (drivers with a baseline: {have}); "
            f"register one in the {GROUP!r} entry-point group or with "
            "rrjobs.bench.register_baseline(name, fn)"
        )
    return entry.baseline


def describe(fn: BaselineFn | None) -> str | None:
    """The first line of a baseline's docstring (``None`` without a baseline)."""
    if fn is None:
        return None
    doc = (fn.__doc__ or "").strip()
    return doc.splitlines()[0] if doc else getattr(fn, "__name__", "baseline")


# -- the producers of the runtime phase ---------------------------------------------------------


async def _produce_messages(spec: BenchSpec, jobs: Jobs, share: int, payload: bytes) -> None:
    """Push ``share`` jobs in chunks of ``spec.batch``, letting the loop run between chunks."""
    name, pipeline, batch = JOB_NAME, spec.pipeline, spec.batch
    left = share
    while left > 0:
        n = min(batch, left)
        left -= n
        msgs = [Message(name, payload, pipeline) for _ in range(n)]
        if spec.push == "batch":
            await jobs.push_batch(msgs)
        else:
            for m in msgs:
                await jobs.push(m)
        del msgs  # as a producer drops what it pushed, before the consumers run
        await asyncio.sleep(0)


# -- the runtime phase ------------------------------------------------------------------------


def runtime_config(spec: BenchSpec) -> Config:
    """The configuration of the runtime phase: ``spec.config`` with only the
    bench pipeline, consumed, and ``spec.workers`` workers."""
    data = {k: v for k, v in spec.config.items() if k != "jobs"}
    jobs = dict(spec.config.get("jobs") or {})
    pipelines = jobs.get("pipelines") or {}
    pcfg = dict(pipelines.get(spec.pipeline) or {})
    pcfg["driver"] = spec.driver
    pcfg["config"] = dict(spec.options)
    jobs["pipelines"] = {spec.pipeline: pcfg}
    jobs["consume"] = [spec.pipeline]
    pool = dict(jobs.get("pool") or {})
    pool["num_workers"] = spec.workers
    jobs["pool"] = pool
    data["jobs"] = jobs
    return Config(data, source="rrjobs bench")


async def run_runtime(spec: BenchSpec, *, max_seconds: float,
                      profile: cProfile.Profile | None = None) -> RuntimeResult:
    """Push ``spec.jobs`` jobs through a runtime and time them to the last ack.

    Raises :class:`BenchError` if the jobs are not all acknowledged within
    ``max_seconds``.
    """
    app = App("rrjobs-bench")
    loop = asyncio.get_running_loop()
    all_handled: asyncio.Future[None] = loop.create_future()
    total = spec.jobs
    handled = 0
    # The hashes of the ids seen, counted after the clock stopped. An array of
    # machine integers costs the handler an append, keeps no id alive and is
    # never walked by the garbage collector (a set of ids would cost a hash
    # table insert per job and be walked by every full collection, so the bench
    # would time its own bookkeeping). Two of 200,000 distinct ids share a
    # 64-bit hash with a probability near 1e-9.
    hashes = array("q")
    record = hashes.append

    @app.handler(JOB_NAME)
    async def noop(job: Any) -> None:
        nonlocal handled
        handled += 1
        record(hash(job.id))
        if handled == total and not all_handled.done():
            all_handled.set_result(None)

    payload = spec.payload()
    jobs = Jobs(runtime_config(spec), app)
    await jobs.start()
    try:
        _collect(spec.gc_freeze)
        if profile is not None:
            profile.enable()
        start, cpu = time.perf_counter(), time.process_time()
        producers = [loop.create_task(_produce_messages(spec, jobs, s, payload))
                     for s in spec.shares()]
        try:
            async with asyncio.timeout(max_seconds):
                await all_handled
                await asyncio.gather(*producers)
                counters = await _wait_acked(jobs, spec.pipeline, total)
        except TimeoutError:
            raise BenchError(
                f"{handled} of {total} jobs handled after {max_seconds:g}s; giving up"
            ) from None
        finally:
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            if profile is not None:
                profile.disable()
            for p in producers:
                p.cancel()
    finally:
        gc.unfreeze()
        await jobs.stop()
    unique = len(set(hashes))
    return RuntimeResult(PhaseResult(elapsed, counters["ok"], cpu), handled, unique, counters)


def _collect(freeze: bool) -> None:
    """Start a phase with a clean heap (and, if asked, a frozen one)."""
    gc.unfreeze()
    gc.collect()
    if freeze:
        gc.freeze()


async def _wait_acked(jobs: Jobs, pipeline: str, total: int) -> dict[str, int]:
    """Wait until the pipeline's ``ok`` counter reaches ``total`` (the last ack)."""
    spins = 0
    while True:
        for stat in await jobs.stat():
            if stat.state.pipeline == pipeline and stat.counters.ok >= total:
                return stat.counters.as_dict()
        spins += 1
        # Acks of an in-process driver land within a few loop turns; a broker's
        # may take a round trip: stop spinning then.
        await asyncio.sleep(0 if spins < 100 else 0.001)


# -- the priority-queue microbenchmark ---------------------------------------------------------


class _Item:
    """What the queue holds in the microbenchmark (a job's queue-relevant fields)."""

    __slots__ = ("pipeline", "priority")

    def __init__(self, priority: int, pipeline: str = "pq") -> None:
        self.priority = priority
        self.pipeline = pipeline


def _pq_fill_drain(items: Sequence[_Item]) -> tuple[float, list[_Item]]:
    q = PriorityQueue(len(items) + 1)
    insert, extract = q.insert_nowait, q.extract_nowait
    out: list[_Item] = []
    append = out.append
    start = time.perf_counter()
    for it in items:
        insert(it)  # type: ignore[arg-type]
    for _ in range(len(items)):
        append(extract())  # type: ignore[arg-type]
    return time.perf_counter() - start, out


def _heapq_fill_drain(items: Sequence[_Item]) -> tuple[float, list[_Item]]:
    heap: list[tuple[int, int, _Item]] = []
    seq = count()
    push, pop = heapq.heappush, heapq.heappop
    out: list[_Item] = []
    append = out.append
    start = time.perf_counter()
    for it in items:
        push(heap, (it.priority, next(seq), it))
    for _ in range(len(items)):
        append(pop(heap)[2])
    return time.perf_counter() - start, out


def _pq_steady(items: Sequence[_Item], depth: int) -> float:
    q = PriorityQueue(len(items) + depth + 1)
    insert, extract = q.insert_nowait, q.extract_nowait
    for it in items[:depth]:
        insert(it)  # type: ignore[arg-type]
    start = time.perf_counter()
    for it in items:
        insert(it)  # type: ignore[arg-type]
        extract()
    return time.perf_counter() - start


def _heapq_steady(items: Sequence[_Item], depth: int) -> float:
    heap: list[tuple[int, int, _Item]] = []
    seq = count()
    push, pop = heapq.heappush, heapq.heappop
    for it in items[:depth]:
        push(heap, (it.priority, next(seq), it))
    start = time.perf_counter()
    for it in items:
        push(heap, (it.priority, next(seq), it))
        pop(heap)
    return time.perf_counter() - start


def pq_bench(n: int, *, priorities: Sequence[int] = (1, 10, 1_000_000), depth: int = 1000,
             repeat: int = 3, seed: int = 1, queued: int = 500_000) -> dict[str, Any]:
    """Time PriorityQueue against heapq; ops/s count inserts and extracts alike.

    For each number of distinct priorities (drawn at random; 1,000,000 makes
    nearly every item's priority distinct, the queue's worst case): *fill-drain*
    inserts ``n`` items then extracts them all; *steady* keeps ``depth`` items queued and does ``n``
    insert+extract pairs. Best of ``repeat``. Raises :class:`BenchError` if the
    two orders differ (the queue must be heapq order: priority, then FIFO).
    Then :func:`pq_pipeline_bench` with ``queued`` jobs.
    """
    rng = random.Random(seed)
    cases: list[dict[str, Any]] = []
    for k in priorities:
        items = [_Item(rng.randint(1, k)) for _ in range(n)]
        _, got = _pq_fill_drain(items)
        _, want = _heapq_fill_drain(items)
        if any(a is not b for a, b in zip(got, want, strict=True)):
            raise BenchError(f"PriorityQueue order differs from heapq with {k} priorities")
        for shape in ("fill-drain", "steady"):
            gc.collect()
            gc_was_enabled = gc.isenabled()
            gc.disable()  # as timeit does: time the data structures, not the collector
            try:
                if shape == "fill-drain":
                    pq_s = min(_pq_fill_drain(items)[0] for _ in range(repeat))
                    hq_s = min(_heapq_fill_drain(items)[0] for _ in range(repeat))
                else:
                    pq_s = min(_pq_steady(items, depth) for _ in range(repeat))
                    hq_s = min(_heapq_steady(items, depth) for _ in range(repeat))
            finally:
                if gc_was_enabled:
                    gc.enable()
            ops = 2 * n
            cases.append({
                "shape": shape,
                "priorities": k,
                "items": n,
                "depth": depth if shape == "steady" else None,
                "pq_ops_per_s": round(ops / pq_s),
                "heapq_ops_per_s": round(ops / hq_s),
                "ratio": round(hq_s / pq_s, 3),
            })
    return {"bench": "priority-queue", "repeat": repeat, "cases": cases,
            **pq_pipeline_bench(queued, repeat=repeat, seed=seed), **machine()}


def _filled(items: Iterable[_Item], size: int) -> PriorityQueue:
    q = PriorityQueue(size)
    for it in items:
        q.insert_nowait(it)  # type: ignore[arg-type]
    return q


def pq_pipeline_bench(jobs: int = 500_000, pipelines: int = 10, *,
                      priorities: Sequence[int] = (1, 5, 10), repeat: int = 3,
                      seed: int = 1) -> dict[str, Any]:
    """Time ``count`` and ``remove`` of one pipeline with ``jobs`` jobs of
    ``pipelines`` pipelines queued (their jobs interleaved, priorities drawn
    from ``priorities``): ``count_us`` is one ``count`` call, ``remove_us_per_job``
    one ``remove`` divided by the jobs it removed (the other pipelines' jobs
    still queued). Best of ``repeat``."""
    rng = random.Random(seed)
    names = [f"p{i}" for i in range(pipelines)]
    items = [_Item(rng.choice(priorities), names[i % pipelines]) for i in range(jobs)]
    target = names[pipelines // 2]
    q = _filled(items, jobs)
    calls = 10_000
    best_count = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(calls):
            q.count(target)
        best_count = min(best_count, (time.perf_counter() - start) / calls)
    best_remove, removed = float("inf"), 0
    for _ in range(repeat):
        q = _filled(items, jobs)
        gc.collect()
        start = time.perf_counter()
        removed = len(q.remove(target))
        best_remove = min(best_remove, time.perf_counter() - start)
        if len(q) != jobs - removed or q.count(target):
            raise BenchError("PriorityQueue.remove left jobs of the pipeline behind")
    return {
        "pipelines_case": {"jobs": jobs, "pipelines": pipelines,
                           "priorities": list(priorities), "removed": removed},
        "count_us": round(best_count * 1e6, 3),
        "remove_us_per_job": round(best_remove * 1e6 / max(removed, 1), 4),
    }


# -- reporting ----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    """Where and when the numbers were taken."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "rrjobs": __version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


async def run_bench(spec: BenchSpec, *, repeat: int = 1, max_seconds: float = 600.0,
                    profile: cProfile.Profile | None = None) -> dict[str, Any]:
    """Run the baseline and the runtime phase ``repeat`` times each, alternately.

    The figures are medians over the repeats (``*_best``: the fastest run).
    ``profile``, when given, records the runtime phase of the last repeat.
    """
    baseline = baseline_for(spec.driver)
    runs: list[dict[str, Any]] = []
    results: list[RuntimeResult] = []
    for i in range(repeat):
        base: PhaseResult | None = None
        if baseline is not None:
            _collect(spec.gc_freeze)
            try:
                base = await baseline(spec)
            finally:
                gc.unfreeze()
            if base.processed != spec.jobs:
                raise BenchError(f"the baseline handled {base.processed} of {spec.jobs} items")
        res = await run_runtime(spec, max_seconds=max_seconds,
                                profile=profile if i == repeat - 1 else None)
        results.append(res)
        runs.append({
            "seconds": round(res.phase.seconds, 4),
            "jobs_per_s": round(res.phase.jobs_per_s),
            "baseline_seconds": None if base is None else round(base.seconds, 4),
            "baseline_jobs_per_s": None if base is None else round(base.jobs_per_s),
            "ratio": None if base is None else round(res.phase.jobs_per_s / base.jobs_per_s, 4),
            "jobs_per_cpu_s": round(res.phase.jobs_per_cpu_s),
            "baseline_jobs_per_cpu_s": None if base is None else round(base.jobs_per_cpu_s),
        })
    rates = [r["jobs_per_s"] for r in runs]
    base_rates = [r["baseline_jobs_per_s"] for r in runs if r["baseline_jobs_per_s"] is not None]
    jobs_per_s = statistics.median(rates)
    baseline_jobs_per_s = statistics.median(base_rates) if base_rates else None
    worst = min(results, key=lambda r: (r.unique, -r.processed))
    return {
        "driver": spec.driver,
        "pipeline": spec.pipeline,
        "jobs": spec.jobs,
        "processed": worst.processed,
        "duplicates": worst.processed - worst.unique,
        "lost": spec.jobs - worst.unique,
        "counters": worst.counters,
        "workers": spec.workers,
        "producers": spec.producers,
        "push": spec.push,
        "batch": spec.batch,
        "payload_size": spec.payload_size,
        "gc_freeze": spec.gc_freeze,
        "repeat": repeat,
        "seconds": round(spec.jobs / jobs_per_s, 4) if jobs_per_s else None,
        "jobs_per_s": round(jobs_per_s),
        "jobs_per_s_best": max(rates),
        "baseline": describe(baseline),
        "baseline_jobs_per_s": None if baseline_jobs_per_s is None else round(baseline_jobs_per_s),
        "baseline_jobs_per_s_best": max(base_rates) if base_rates else None,
        "ratio": round(jobs_per_s / baseline_jobs_per_s, 4) if baseline_jobs_per_s else None,
        **({"raw_client_jobs_per_s": round(baseline_jobs_per_s)}
           if baseline_jobs_per_s is not None and _is_raw_client(spec.driver) else {}),
        "jobs_per_cpu_s": statistics.median(r["jobs_per_cpu_s"] for r in runs),
        "baseline_jobs_per_cpu_s": (
            statistics.median(r["baseline_jobs_per_cpu_s"] for r in runs) if base_rates else None),
        "runs": runs,
        **machine(),
    }


def _is_raw_client(driver: str) -> bool:
    entry = driver_bench(driver)
    return entry is not None and entry.raw_client


def exactly_once(result: Mapping[str, Any]) -> bool:
    """Every job handled once: none lost, none twice, all acknowledged."""
    return bool(
        result["processed"] == result["jobs"]
        and result["duplicates"] == 0
        and result["lost"] == 0
        and result["counters"].get("ok") == result["jobs"]
    )


def summary(result: Mapping[str, Any]) -> str:
    """The readable form of a :func:`run_bench` result."""
    lines = [
        f"rrjobs bench: driver={result['driver']} jobs={result['jobs']} "
        f"workers={result['workers']} producers={result['producers']} "
        f"push={result['push']} batch={result['batch']} repeat={result['repeat']}"
        + (" gc-freeze" if result["gc_freeze"] else ""),
        f"  rrjobs    {result['jobs_per_s']:>12,} jobs/s  (best {result['jobs_per_s_best']:,})",
    ]
    if result["baseline"] is None:
        lines += ["  baseline  none: this driver is measured against its peers "
                  "(docs/performance.md)",
                  f"  per CPU second: rrjobs {result['jobs_per_cpu_s']:,} jobs "
                  "(this process's CPU time)"]
    else:
        lines += [
            f"  baseline  {result['baseline_jobs_per_s']:>12,} items/s (best "
            f"{result['baseline_jobs_per_s_best']:,}): {result['baseline']}",
            f"  ratio     {result['ratio']:>12.3f}",
            f"  per CPU second: rrjobs {result['jobs_per_cpu_s']:,} jobs, baseline "
            f"{result['baseline_jobs_per_cpu_s']:,} items (this process's CPU time)",
        ]
    lines += [
        f"  processed {result['processed']:,}, duplicates {result['duplicates']}, "
        f"lost {result['lost']}",
        f"  Python {result['python']} ({result['implementation']}), "
        f"{result['cpu_count']} CPUs, {result['platform']}",
    ]
    return "\n".join(lines)


def pq_summary(result: Mapping[str, Any]) -> str:
    """The readable form of a :func:`pq_bench` result."""
    lines = ["priority queue vs heapq (ops = inserts + extracts, best of "
             f"{result['repeat']}):"]
    for c in result["cases"]:
        lines.append(
            f"  {c['shape']:<10} priorities={c['priorities']:<8} "
            f"PriorityQueue {c['pq_ops_per_s']:>12,} ops/s   heapq {c['heapq_ops_per_s']:>12,} "
            f"ops/s   ratio {c['ratio']:.3f}"
        )
    case = result["pipelines_case"]
    lines.append(
        f"  with {case['jobs']:,} jobs of {case['pipelines']} pipelines queued: "
        f"count {result['count_us']} us, remove {result['remove_us_per_job']} us per job "
        f"removed ({case['removed']:,} removed)"
    )
    return "\n".join(lines)


# -- the command ----------------------------------------------------------------------------------


def parse_options(values: Sequence[str]) -> dict[str, Any]:
    """``k=v`` pairs → a dict; values are read as YAML scalars (``10`` is an int)."""
    out: dict[str, Any] = {}
    for raw in values:
        key, sep, value = raw.partition("=")
        key = key.strip()
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {raw!r}", param_hint="--option")
        try:
            out[key] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key] = value
    return out


def spec_from_cli(*, driver: str | None, config_path: str | None, pipeline: str | None,
                  options: dict[str, Any], jobs: int, workers: int | None, batch: int,
                  producers: int, push: PushMode, payload_size: int,
                  gc_freeze: bool = False) -> BenchSpec:
    """Build the :class:`BenchSpec` from the command's options (``--config`` or ``--driver``)."""
    if config_path is not None:
        config = Config.load(config_path)
        names = list(config.jobs.pipelines)
        if pipeline is None:
            if len(names) != 1:
                raise click.UsageError(
                    f"{config_path} has {len(names)} pipelines ({', '.join(names) or 'none'}); "
                    "choose one with --pipeline")
            pipeline = names[0]
        if pipeline not in config.jobs.pipelines:
            raise click.UsageError(f"{config_path} has no pipeline {pipeline!r}")
        pcfg = config.jobs.pipelines[pipeline]
        if driver is not None and driver != pcfg.driver:
            raise click.UsageError(
                f"--driver {driver} disagrees with the config's driver {pcfg.driver!r}")
        driver = pcfg.driver
        merged = {**pcfg.config, **options}
        data = config.data
        nworkers = workers if workers is not None else config.jobs.pool.num_workers
    else:
        if driver is None:
            raise click.UsageError("give --driver or --config")
        pipeline = pipeline or DEFAULT_PIPELINE
        sections, defaults = driver_defaults(driver)
        merged = {**defaults, **options}
        data = {**sections, "jobs": {}}
        nworkers = workers if workers is not None else (os.cpu_count() or 1)
    return BenchSpec(driver=driver, pipeline=pipeline, jobs=jobs, workers=nworkers,
                     batch=batch, producers=producers, push=push,
                     payload_size=payload_size, options=merged, config=data,
                     gc_freeze=gc_freeze)


@click.command("bench")
@click.option("--driver", help="The driver to benchmark (one with a baseline).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="Take the pipeline (driver, options, pool settings) from this .rr.yaml.")
@click.option("--pipeline", help="The pipeline of --config to use [default: its only one].")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A driver option (jobs.pipelines.<p>.config); repeatable.")
@click.option("--jobs", "jobs", type=click.IntRange(min=1), default=100_000, show_default=True,
              help="Jobs to push and consume (with --pq: items).")
@click.option("--workers", type=click.IntRange(min=1),
              help="Worker tasks [default: pool.num_workers of --config, else the CPU count].")
@click.option("--batch", type=click.IntRange(min=1), default=1000, show_default=True,
              help="Messages per push_batch call (per loop yield with --push single).")
@click.option("--producers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Concurrent producer tasks.")
@click.option("--push", "push", type=click.Choice(["batch", "single"]), default="batch",
              show_default=True, help="push_batch per chunk, or one push per job.")
@click.option("--payload-size", type=click.IntRange(min=0), default=0, show_default=True,
              help="Payload bytes per job.")
@click.option("--gc-freeze", is_flag=True,
              help="gc.freeze() the start-up heap before each timed phase (as a server may).")
@click.option("--repeat", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs of baseline + rrjobs; figures are medians.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=600.0,
              show_default=True, help="Seconds the runtime phase may take before failing.")
@click.option("--profile", "profile_path", type=click.Path(dir_okay=False),
              help="Write a cProfile of the (last) runtime phase to this file (pstats).")
@click.option("--pq", is_flag=True, help="Run the priority-queue microbenchmark instead.")
@click.option("--pq-queued", type=click.IntRange(min=10), default=500_000, show_default=True,
              help="With --pq: jobs of 10 pipelines queued while count and remove are timed.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def bench_command(driver: str | None, config_path: str | None, pipeline: str | None,
                  options: tuple[str, ...], jobs: int, workers: int | None, batch: int,
                  producers: int, push: PushMode, payload_size: int, gc_freeze: bool,
                  repeat: int, timeout: float, profile_path: str | None, pq: bool,
                  pq_queued: int, as_json: bool) -> None:
    """Measure end-to-end jobs/s of a driver through the runtime, and its baseline.

    Uses the CPU for as long as it runs; exits 1 if any job was lost or
    handled twice.
    """
    if pq:
        pq_result = pq_bench(jobs, repeat=max(5, repeat), queued=pq_queued)
        click.echo(json.dumps(pq_result, indent=2) if as_json else pq_summary(pq_result))
        return
    profile = cProfile.Profile() if profile_path else None
    try:
        spec = spec_from_cli(driver=driver, config_path=config_path, pipeline=pipeline,
                             options=parse_options(options), jobs=jobs, workers=workers,
                             batch=batch, producers=producers, push=push,
                             payload_size=payload_size, gc_freeze=gc_freeze)
        baseline_for(spec.driver)  # fail before building anything
        result = asyncio.run(run_bench(spec, repeat=repeat, max_seconds=timeout,
                                       profile=profile))
    except RRJobsError as exc:
        raise click.ClickException(f"{type(exc).__name__}: {exc}") from None
    if profile is not None and profile_path is not None:
        profile.dump_stats(Path(profile_path))
    click.echo(json.dumps(result, indent=2) if as_json else summary(result))
    if not exactly_once(result):
        click.echo(f"jobs were not handled exactly once: processed={result['processed']} "
                   f"duplicates={result['duplicates']} lost={result['lost']}", err=True)
        sys.exit(1)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m rrjobs.bench``: the command without the ``rrjobs`` group."""
    bench_command.main(args=list(argv) if argv is not None else None, prog_name="rrjobs bench")


if __name__ == "__main__":
    main()
