"""One soak run in a process of its own: ``python -m reliability.soak --driver D --jobs N``.

The process is the consumer: a :class:`~rrjobs.Jobs` runtime consuming one
pipeline of driver ``D`` with a no-op handler. A producer task in the same
process pushes ``N`` jobs with known ids (``soak-<n>``) in batches, keeping at
most ``--backlog`` jobs pushed but not yet handled, so the queue never grows
and cannot pass for a leak. Each payload carries the wall-clock time of its
push (``<n>:<time_ns>``); the handler records ``time_ns() - pushed`` in a
:class:`~reliability.rss.LatencyHistogram` and counts the id in a byte per job,
both allocated before the run. An :class:`~reliability.rss.RssSampler` reads
the process's RSS every ``--interval`` seconds with the number of jobs handled.

The broker pipelines take the driver's bench settings
(:func:`rrjobs.bench.driver_defaults`: the endpoint from ``RRJOBS_AMQP_URL``,
``RRJOBS_KAFKA_BROKERS``, ``RRJOBS_NATS_URL``, ``RRJOBS_SQS_ENDPOINT``,
``RRJOBS_PUBSUB_EMULATOR_HOST``, a fresh queue/topic/stream name); sqlite takes
``--file``. The run ends when every id was handled (or after ``--max-seconds``),
the runtime stops gracefully, and the result (a JSON object: counts, rate,
percentiles, samples, plateau) goes to ``--out``. With ``--tracemalloc`` the
top allocation growth between the 25% mark and the end is added to it.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

from reliability.rss import REFERENCE_AT, LatencyHistogram, RssSampler, plateau
from rrjobs.bench import driver_defaults
from rrjobs.config import Config
from rrjobs.core.message import Message
from rrjobs.runtime.app import App
from rrjobs.runtime.jobs import Jobs

JOB_NAME = "reliability.soak"
PIPELINE = "soak"
ID_PREFIX = "soak-"


def pipeline_config(driver: str, *, file: str | None, workers: int) -> Config:
    """The runtime's configuration: one pipeline of ``driver``, consumed."""
    sections, options = driver_defaults(driver)
    if driver == "sqlite":
        if not file:
            raise SystemExit("--file is needed for the sqlite driver")
        options = {"file": file, **options}
    data: dict[str, Any] = dict(sections)
    data["jobs"] = {"pipelines": {PIPELINE: {"driver": driver, "config": options}},
                    "consume": [PIPELINE], "pool": {"num_workers": workers}}
    return Config(data, source="reliability soak")


class Soak:
    """The counters of one run; the handler and producer share them."""

    def __init__(self, total: int, backlog: int, batch: int) -> None:
        self.total = total
        self.backlog = backlog
        self.batch = min(batch, backlog)
        self.seen = bytearray(total)  # deliveries per id (saturates at 255)
        self.handled = 0
        self.distinct = 0
        self.foreign = 0
        self.pushed = 0
        self.latency = LatencyHistogram()
        self.room = asyncio.Event()
        self.all_seen = asyncio.Event()
        self.snap_at = int(REFERENCE_AT * total)
        self.snapshot: tracemalloc.Snapshot | None = None

    def handle(self, job_id: str, payload: bytes) -> None:
        now = time.time_ns()
        self.handled += 1
        if not job_id.startswith(ID_PREFIX):
            self.foreign += 1
            return
        n = int(job_id[len(ID_PREFIX):])
        count = self.seen[n]
        if count == 0:
            self.distinct += 1
            if self.distinct == self.total:
                self.all_seen.set()
            elif self.distinct == self.snap_at and tracemalloc.is_tracing():
                self.snapshot = tracemalloc.take_snapshot()
        if count < 255:
            self.seen[n] = count + 1
        self.latency.record(now - int(payload.partition(b":")[2]))
        if self.pushed - self.distinct <= self.backlog - self.batch:
            self.room.set()

    async def produce(self, jobs: Jobs) -> None:
        total, batch, backlog = self.total, self.batch, self.backlog
        while self.pushed < total:
            while self.pushed - self.distinct > backlog - batch:
                self.room.clear()
                await self.room.wait()
            start = self.pushed
            end = min(total, start + batch)
            msgs = [Message(JOB_NAME, f"{n}:{time.time_ns()}".encode(), PIPELINE,
                            id=f"{ID_PREFIX}{n}") for n in range(start, end)]
            self.pushed = end
            await jobs.push_batch(msgs)
            del msgs
            await asyncio.sleep(0)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    soak = Soak(args.jobs, args.backlog, args.batch)
    app = App("reliability-soak")

    @app.handler(JOB_NAME)
    async def noop(job: Any) -> None:
        soak.handle(job.id, job.payload)

    jobs = Jobs(pipeline_config(args.driver, file=args.file, workers=args.workers), app)
    await jobs.start()
    if args.tracemalloc:
        tracemalloc.start(args.tracemalloc)
    gc.collect()
    sampler = RssSampler(lambda: soak.distinct, interval=args.interval).start()
    start = time.perf_counter()
    loop = asyncio.get_running_loop()
    producer = loop.create_task(soak.produce(jobs))
    reporter = loop.create_task(report(soak, sampler, args.progress)) if args.progress else None
    finished = True
    try:
        async with asyncio.timeout(args.max_seconds):
            await soak.all_seen.wait()
            await producer
    except TimeoutError:
        finished = False
    finally:
        elapsed = time.perf_counter() - start
        producer.cancel()
        if reporter is not None:
            reporter.cancel()
    samples = sampler.stop()
    top: list[str] = []
    if args.tracemalloc and soak.snapshot is not None:
        diff = tracemalloc.take_snapshot().compare_to(soak.snapshot, "lineno")
        top = [str(d) for d in diff[:15]]
        tracemalloc.stop()
    await jobs.stop()
    lost = soak.seen.count(0)
    result: dict[str, Any] = {
        "driver": args.driver, "jobs": args.jobs, "finished": finished,
        "pushed": soak.pushed, "handled": soak.handled, "distinct": soak.distinct,
        "lost": lost, "duplicated": soak.handled - soak.foreign - soak.distinct,
        "foreign": soak.foreign, "seconds": round(elapsed, 3),
        "jobs_per_s": round(soak.distinct / elapsed, 1) if elapsed > 0 else 0.0,
        "backlog": soak.backlog, "batch": soak.batch, "workers": args.workers,
        "interval_s": args.interval,
        "samples": [[round(s.t, 3), s.rss, s.done] for s in samples],
    }
    if soak.latency.total:
        result["p50_ms"] = round(soak.latency.percentile(50), 3)
        result["p99_ms"] = round(soak.latency.percentile(99), 3)
        result["max_ms"] = round(soak.latency.max_ns / 1e6, 3)
    try:
        p = plateau(samples, args.jobs)
    except ValueError as exc:
        result["plateau_error"] = str(exc)
    else:
        result.update(rss_mb_25pct=round(p.reference_mb, 1), rss_mb_final=round(p.final_mb, 1),
                      rss_growth=round(p.growth, 4), plateau_ok=p.ok)
    if top:
        result["tracemalloc_top"] = top
    return result


async def report(soak: Soak, sampler: RssSampler, every: float) -> None:
    """Print the run's progress to stderr every ``every`` seconds."""
    while True:
        await asyncio.sleep(every)
        last = sampler.samples[-1]
        print(f"{last.t:8.1f}s pushed {soak.pushed} handled {soak.distinct} "
              f"(+{soak.handled - soak.distinct} again) rss {last.rss_mb:.1f} MB",
              file=sys.stderr, flush=True)


def parse(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m reliability.soak", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--driver", required=True)
    ap.add_argument("--jobs", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--file", help="the sqlite file")
    ap.add_argument("--backlog", type=int, default=2000,
                    help="most jobs pushed and not yet handled")
    ap.add_argument("--batch", type=int, default=500, help="jobs per push_batch")
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between RSS samples")
    ap.add_argument("--progress", type=float, default=0.0, metavar="SECONDS",
                    help="print the progress to stderr this often")
    ap.add_argument("--max-seconds", type=float, default=3600.0)
    ap.add_argument("--tracemalloc", type=int, default=0, metavar="FRAMES",
                    help="trace allocations with this many frames; report the top growth")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    result = asyncio.run(run(args))
    args.out.write_text(json.dumps(result) + "\n")
    return 0 if result["finished"] and result["lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
