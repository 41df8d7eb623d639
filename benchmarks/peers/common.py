"""What every peer runner shares: arguments, payloads, the handled-job recorder and the JSON
line. Standard library only: each runner imports it from its own venv's python.

Clocks (the same for every system):

- ``enqueue``: from the first push to the last one accepted (with publisher confirms on,
  the last confirm received);
- ``consume``: from the first job handled to the last, over ``jobs - 1`` intervals (a
  worker's start-up, in-process or not, is outside it);
- ``end to end``: produce-then-consume: ``jobs / (enqueue + consume)``; concurrent: from the
  first push to the last job handled;
- ``latency``: push to handler entry, ``time.monotonic`` (CLOCK_MONOTONIC, one clock for every
  process of the machine), at a fixed offered load.

Client CPU is ``time.process_time`` (all threads of the process) over the timed sections, plus
the worker process's own when the system consumes in a separate process (Celery).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

PAD = "x" * 64


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--url", default="amqp://guest:guest@127.0.0.1:5672/")
    p.add_argument("--jobs", type=int, default=20_000)
    p.add_argument("--mode", choices=["ptc", "concurrent", "latency"], default="ptc")
    p.add_argument("--guarantees", choices=["default", "equal"], default="equal")
    p.add_argument("--rate", type=float, default=2000.0, help="offered load of --mode latency")
    p.add_argument("--prefetch", type=int, default=100)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--batch", type=int, default=1000, help="pushes in flight per chunk")
    p.add_argument("--variant", default="", help="a runner-specific variant")
    p.add_argument("--dir", default="/tmp", help="where local systems keep their files")
    return p.parse_args(argv)


def queue_name(system: str) -> str:
    return f"peers-{system}-{uuid.uuid4().hex[:8]}"


def begin(system: str) -> tuple[argparse.Namespace, Recorder, str]:
    """A run's arguments, its recorder and a fresh queue name."""
    args = parse()
    return args, Recorder(args.jobs), queue_name(system)


def payload(i: int) -> dict[str, Any]:
    """About 100 bytes of JSON: the index, the push time and padding."""
    return {"i": i, "t": time.monotonic(), "pad": PAD}


def payload_bytes(i: int) -> bytes:
    return json.dumps(payload(i)).encode()


class Recorder:
    """Counts handled jobs (thread-safe), keeps their latencies and the first/last times."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs
        self.handled = 0
        self.first = 0.0
        self.last = 0.0
        self.latencies: list[float] = []
        self.seen: set[int] = set()
        self.done = threading.Event()
        self.cpu_first = 0.0
        self.cpu_last = 0.0
        self._lock = threading.Lock()
        self.on_done: Callable[[], None] | None = None

    def handle(self, body: dict[str, Any]) -> None:
        now = time.monotonic()
        with self._lock:
            if self.handled == 0:
                self.first = now
                self.cpu_first = time.process_time()
            self.handled += 1
            self.seen.add(body["i"])
            self.latencies.append(now - body["t"])
            if self.handled == self.jobs:
                self.last = now
                self.cpu_last = time.process_time()
                self.done.set()
                if self.on_done is not None:
                    self.on_done()

    def handle_bytes(self, raw: bytes | str) -> None:
        self.handle(json.loads(raw))

    def wait(self, timeout: float = 600.0) -> None:
        if not self.done.wait(timeout):
            raise SystemExit(f"{self.handled} of {self.jobs} handled after {timeout:g}s")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def offer(jobs: int, rate: float, push: Callable[[int], Awaitable[Any]]) -> None:
    """Push ``jobs`` at ``rate`` per second, each as its own task (a push waiting for its
    confirm does not hold the next one back); every millisecond, the pushes then due."""
    start, sent, tasks = time.monotonic(), 0, []
    while sent < jobs:
        due = min(jobs, int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            tasks.append(asyncio.ensure_future(push(sent)))
            sent += 1
        await asyncio.sleep(0.001)
    await asyncio.gather(*tasks)


def offer_sync(jobs: int, rate: float, push: Callable[[int], Any]) -> None:
    """:func:`offer` for a blocking client: the pushes due, one after another."""
    start, sent = time.monotonic(), 0
    while sent < jobs:
        due = min(jobs, int((time.monotonic() - start) * rate) + 1)
        while sent < due:
            push(sent)
            sent += 1
        time.sleep(0.001)


def result(args: argparse.Namespace, system: str, *, broker: str, enqueue: Produced,
           rec: Recorder, settings: dict[str, Any], cpu: float | None = None) -> dict[str, Any]:
    """The JSON line of one run; ``cpu``: the client's CPU-seconds over the timed sections
    when the producer's process is not the only client."""
    if cpu is None:
        cpu = enqueue.client_cpu(args.mode, rec)
    jobs = args.jobs
    enq_s = enqueue.end - enqueue.start
    cons_s = rec.last - rec.first
    if args.mode == "ptc":
        e2e_s = enq_s + cons_s * jobs / max(1, jobs - 1)
    else:
        e2e_s = rec.last - enqueue.start
    line: dict[str, Any] = {
        "system": system, "variant": args.variant, "broker": broker, "mode": args.mode,
        "guarantees": args.guarantees, "jobs": jobs, "handled": rec.handled,
        "unique": len(rec.seen), "prefetch": args.prefetch, "concurrency": args.concurrency,
        "enqueue_s": enq_s, "consume_s": cons_s, "end_to_end_s": e2e_s,
        "enqueue_jobs_per_s": jobs / enq_s if enq_s > 0 else 0.0,
        "consume_jobs_per_s": (jobs - 1) / cons_s if cons_s > 0 else 0.0,
        "end_to_end_jobs_per_s": jobs / e2e_s if e2e_s > 0 else 0.0,
        "client_cpu_s": cpu,
        "client_cpu_s_per_1000": cpu * 1000 / jobs,
        # the producer's process over the enqueue alone (all its threads)
        "enqueue_cpu_s_per_1000": enqueue.cpu * 1000 / jobs,
        "settings": settings,
        "python": sys.version.split()[0],
    }
    if args.mode == "latency":
        line["offered_jobs_per_s"] = args.rate
        line["latency_p50_ms"] = percentile(rec.latencies, 0.50) * 1000
        line["latency_p99_ms"] = percentile(rec.latencies, 0.99) * 1000
        line["latency_mean_ms"] = statistics.fmean(rec.latencies) * 1000
    return line


@dataclass
class Produced:
    """The producer's clock (monotonic) and CPU (process time) around the enqueue."""

    start: float
    end: float
    cpu0: float
    cpu: float

    def client_cpu(self, mode: str, rec: Recorder) -> float:
        """CPU-seconds of the timed sections: the enqueue, then the first to the last job
        handled (produce-then-consume), or the first push to the last job handled."""
        if mode == "ptc":
            return self.cpu + rec.cpu_last - rec.cpu_first
        return rec.cpu_last - self.cpu0


def awaitable(rec: Recorder) -> asyncio.Future[None]:
    """A future of the running loop, set once ``rec`` has handled every job."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()

    def finish() -> None:
        loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

    rec.on_done = finish
    return done


async def produce(args: argparse.Namespace, send: Callable[[int], Awaitable[Any]]) -> Produced:
    """``args.jobs`` sends: at ``args.rate`` (latency mode), else ``args.batch`` in flight."""
    cpu0, start = time.process_time(), time.monotonic()
    if args.mode == "latency":
        await offer(args.jobs, args.rate, send)
    else:
        for first in range(0, args.jobs, args.batch):
            await asyncio.gather(*(send(i)
                                   for i in range(first, min(args.jobs, first + args.batch))))
    return Produced(start, time.monotonic(), cpu0, time.process_time() - cpu0)


def produce_sync(args: argparse.Namespace, send: Callable[[int], Any]) -> Produced:
    """:func:`produce` for a blocking client: one send at a time."""
    cpu0, start = time.process_time(), time.monotonic()
    if args.mode == "latency":
        offer_sync(args.jobs, args.rate, send)
    else:
        for i in range(args.jobs):
            send(i)
    return Produced(start, time.monotonic(), cpu0, time.process_time() - cpu0)


async def delete_queue(url: str, name: str) -> None:
    """Delete the run's queue (with aio-pika: the runners of aio-pika-based peers only)."""
    import aio_pika

    conn = await aio_pika.connect(url)
    async with conn:
        channel = await conn.channel()
        await channel.queue_delete(name)


def emit(line: dict[str, Any]) -> None:
    if line["handled"] != line["jobs"] or line["unique"] != line["jobs"]:
        raise SystemExit(f"{line['system']}: handled {line['handled']}, unique {line['unique']}"
                         f" of {line['jobs']}")
    print(json.dumps(line, sort_keys=True), flush=True)
