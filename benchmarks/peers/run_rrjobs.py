"""rrjobs: the amqp, sqlite or memory driver through a ``Jobs`` runtime (``--variant
amqp|sqlite|memory``, then ``-single`` for one ``await push()`` per job from one task, or
``-concurrent`` for one ``await push()`` per job from ``CONCURRENT_PRODUCERS`` tasks, instead
of ``push_batch`` of ``--batch``; sqlite runs ``synchronous: full`` unless the variant ends in
``-normal``, or in ``-journal``: ``synchronous: normal`` with ``push_journal: true``). Runs
in the project's venv. Publisher confirms and acks after the handler are what the amqp driver
always does, so its defaults are the equal guarantees."""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common

from rrjobs.config import Config
from rrjobs.core.message import Message
from rrjobs.runtime.app import App
from rrjobs.runtime.jobs import Jobs

JOB = "peers.job"
#: Producer tasks of a ``-concurrent`` variant, each awaiting one push at a time.
CONCURRENT_PRODUCERS = 100


def pipeline_options(args: Any, driver: str, name: str, synchronous: str = "full"
                     ) -> tuple[dict[str, Any], dict[str, Any]]:
    if driver == "amqp":
        return {"amqp": {"addr": args.url}}, {
            "queue": name, "routing_key": name, "exchange": "rrjobs.peers",
            "exchange_durable": True, "durable": True, "prefetch": args.prefetch,
            "delete_queue_on_stop": True}
    if driver == "sqlite":
        path = os.path.join(args.dir, f"{name}.db")
        return {}, {"file": path, "synchronous": synchronous, "prefetch": args.prefetch}
    return {}, {}


async def bare_queue(args: Any) -> float:
    """End-to-end jobs/s of a bare ``asyncio.Queue`` loop doing the memory run's work: the same
    payloads built and pushed in chunks of ``--batch`` (the loop runs between chunks),
    ``--concurrency`` consumer tasks, the same handler (:meth:`common.Recorder.handle_bytes`),
    no rrjobs code. The memory variant runs it after rrjobs, in the same process."""
    rec = common.Recorder(args.jobs)
    done = common.awaitable(rec)
    queue: asyncio.Queue[bytes] = asyncio.Queue()

    async def consume() -> None:
        while True:
            rec.handle_bytes(await queue.get())

    consumers = [asyncio.create_task(consume()) for _ in range(args.concurrency)]
    start = time.monotonic()
    for first in range(0, args.jobs, args.batch):
        for i in range(first, min(args.jobs, first + args.batch)):
            queue.put_nowait(common.payload_bytes(i))
        await asyncio.sleep(0)
    await asyncio.wait_for(done, 600)
    seconds = rec.last - start
    for c in consumers:
        c.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)
    return args.jobs / seconds


async def main() -> None:
    args = common.parse()
    driver, *flags = (args.variant or "amqp").split("-")
    push = next((f for f in flags if f in ("single", "concurrent")), "batch")
    journal = "journal" in flags  # push_journal: true (with synchronous: normal)
    synchronous = "normal" if "normal" in flags or journal else "full"
    name = common.queue_name("rrjobs").replace("-", "_")
    sections, options = pipeline_options(args, driver, name, synchronous)
    if journal:
        options["push_journal"] = True
    data: dict[str, Any] = dict(sections)
    data["jobs"] = {"pipelines": {name: {"driver": driver, "config": options}},
                    "consume": [] if args.mode == "ptc" else [name],
                    "pool": {"num_workers": args.concurrency}}
    rec = common.Recorder(args.jobs)
    done = common.awaitable(rec)
    app = App("peers")

    @app.handler(JOB)
    async def handle(job: Any) -> None:
        rec.handle_bytes(job.payload)

    jobs = Jobs(Config(data, source="peers"), app)
    await jobs.start()
    try:
        cpu0 = time.process_time()
        start = time.monotonic()
        if args.mode == "latency":
            await common.offer(args.jobs, args.rate,
                               lambda i: jobs.push(Message(JOB, common.payload_bytes(i), name)))
        elif push == "concurrent":
            async def producer(k: int) -> None:
                for i in range(k, args.jobs, CONCURRENT_PRODUCERS):
                    await jobs.push(Message(JOB, common.payload_bytes(i), name))

            await asyncio.gather(*(producer(k) for k in range(CONCURRENT_PRODUCERS)))
        else:
            for first in range(0, args.jobs, args.batch):
                chunk = [Message(JOB, common.payload_bytes(i), name)
                         for i in range(first, min(args.jobs, first + args.batch))]
                if push == "single":
                    for m in chunk:
                        await jobs.push(m)
                else:
                    await jobs.push_batch(chunk)
        produced = common.Produced(start, time.monotonic(), cpu0, time.process_time() - cpu0)
        if args.mode == "ptc":
            await jobs.resume([name])
        await asyncio.wait_for(done, 600)
    finally:
        await jobs.stop()
        if driver == "sqlite":
            for suffix in ("", "-wal", "-shm"):
                Path(options["file"] + suffix).unlink(missing_ok=True)  # noqa: ASYNC240
    pushes = {"single": "await push() x1 task",
              "concurrent": f"await push() x{CONCURRENT_PRODUCERS} tasks"}
    settings = {"driver": driver, "push": pushes.get(push, f"push_batch({args.batch})"),
                "publisher_confirms": driver == "amqp", "ack": "after handler",
                "persistent": driver != "memory"}
    if driver == "sqlite":
        settings.update(journal_mode="wal", synchronous=synchronous, push_journal=journal)
    broker = {"amqp": "rabbitmq", "sqlite": "sqlite", "memory": "in-process"}[driver]
    line = common.result(args, "rrjobs", broker=broker, enqueue=produced, rec=rec,
                         settings=settings)
    if driver == "memory":  # the ratio to a bare asyncio.Queue loop, measured in this run
        bare = await bare_queue(args)
        line["bare_queue_jobs_per_s"] = bare
        line["bare_queue_ratio"] = line["end_to_end_jobs_per_s"] / bare
    common.emit(line)


if __name__ == "__main__":
    asyncio.run(main())
