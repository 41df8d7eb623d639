"""AMQP end to end through the runtime: push N jobs, then consume them, jobs/s.

The workload of the peers' comparison (``docs/performance.md``): ``--jobs``
jobs (20,000) with ~100-byte JSON payloads, pushed first with ``push_batch``
in batches of ``--batch`` (1,000; persistent, mandatory, publisher confirms),
then consumed by a ``Jobs`` runtime with ``--workers`` handlers (10) at
prefetch ``--prefetch`` (100), each job acked after its handler returned.
``enqueue`` is jobs/s of the push phase, ``consume`` of the consume phase
(resume to the last ack), ``e2e`` is jobs over the sum of both times. Each run
uses a fresh durable queue, deleted afterwards; the broker is
``RRJOBS_AMQP_URL`` (as the integration tests)::

    python benchmarks/amqp_e2e.py --runs 3
    # two source trees against each other, runs alternating, in one invocation:
    python benchmarks/amqp_e2e.py --runs 3 --src before=/tmp/before/src --src after=src
    # with the floor: the same work as a minimal pamqp loop (amqp_floor.py), in turn
    python benchmarks/amqp_e2e.py --runs 3 --floor --broker-pid "$(pgrep -n beam.smp)"

With ``--src``, each run is a fresh process of this interpreter with that
tree first on ``sys.path``; the figures are medians per tree (and the
after/before ratio of the medians). One JSON line per run goes to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/"
JOB = "bench.e2e"


def payload(i: int) -> bytes:
    """A ~100-byte JSON document."""
    return json.dumps({"id": i, "user": "someone@example.com", "action": "send-welcome",
                       "attempt": 1, "pad": "x" * 20}).encode()


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (the broker's, from /proc)."""
    if not pid:
        return 0.0
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def one_run(jobs_n: int, batch: int, workers: int, prefetch: int,
                  broker_pid: int = 0) -> dict[str, Any]:
    from rrjobs.config import Config
    from rrjobs.core.message import Message
    from rrjobs.runtime.app import App
    from rrjobs.runtime.jobs import Jobs

    name = f"e2e-{uuid.uuid4().hex[:8]}"
    config = Config({
        "amqp": {"addr": os.environ.get("RRJOBS_AMQP_URL", DEFAULT_URL)},
        "jobs": {"num_pollers": workers, "pool": {"num_workers": workers},
                 "consume": [],
                 "pipelines": {name: {"driver": "amqp", "config": {
                     "queue": name, "routing_key": name, "exchange": "rrjobs.e2e",
                     "exchange_durable": True, "durable": True, "prefetch": prefetch,
                     "delete_queue_on_stop": True}}}},
    }, source="amqp_e2e")
    app = App("amqp-e2e")
    done = asyncio.get_running_loop().create_future()
    seen: set[str] = set()

    @app.handler(JOB)
    async def handle(job: Any) -> None:
        seen.add(job.id)
        if len(seen) == jobs_n and not done.done():
            done.set_result(None)

    runtime = Jobs(config, app)
    await runtime.start()
    try:
        bodies = [payload(i) for i in range(jobs_n)]
        t0, c0, b0 = time.perf_counter(), time.process_time(), process_cpu(broker_pid)
        for start in range(0, jobs_n, batch):
            await runtime.push_batch([Message(JOB, b, name) for b in bodies[start:start + batch]])
        t1, c1, b1 = time.perf_counter(), time.process_time(), process_cpu(broker_pid)
        await runtime.resume([name])
        async with asyncio.timeout(600):
            await done
            while True:  # the last ack is sent after the handler returned
                stat = next(s for s in await runtime.stat() if s.state.pipeline == name)
                if stat.counters.ok >= jobs_n:
                    break
                await asyncio.sleep(0.001)
        t2, c2, b2 = time.perf_counter(), time.process_time(), process_cpu(broker_pid)
    finally:
        await runtime.stop()
    enqueue_s, consume_s = t1 - t0, t2 - t1
    return {"jobs": jobs_n, "unique": len(seen), "enqueue": jobs_n / enqueue_s,
            "consume": jobs_n / consume_s, "e2e": jobs_n / (enqueue_s + consume_s),
            "cpu_s_per_1k": (c2 - c0) / jobs_n * 1000, "enqueue_cpu_s": c1 - c0,
            "consume_cpu_s": c2 - c1,
            **({"broker_enqueue_cpu_s": b1 - b0, "broker_consume_cpu_s": b2 - b1,
                "broker_cpu_s_per_1k": (b2 - b0) / jobs_n * 1000} if broker_pid else {})}


def summarise(label: str, rows: list[dict[str, Any]]) -> dict[str, float]:
    med = {k: statistics.median(r[k] for r in rows)
           for k in ("enqueue", "consume", "e2e", "cpu_s_per_1k")}
    print(f"{label:>10}: enqueue {med['enqueue']:8.0f}  consume {med['consume']:8.0f}  "
          f"e2e {med['e2e']:8.0f} jobs/s  cpu {med['cpu_s_per_1k']:.3f} s/1k jobs  "
          f"(median of {len(rows)})")
    return med


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=1_000)
    ap.add_argument("--workers", type=int, default=10)
    ap.add_argument("--prefetch", type=int, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--src", action="append", default=[], metavar="LABEL=DIR",
                    help="a source tree to run (repeatable; default: the installed rrjobs)")
    ap.add_argument("--out", type=Path, help="append one JSON line per run")
    ap.add_argument("--broker-pid", type=int, default=0,
                    help="the broker's pid (beam.smp): report its CPU per job too")
    ap.add_argument("--floor", action="store_true",
                    help="also run the minimal pamqp loop (benchmarks/amqp_floor.py) in turn")
    ap.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.once and args.floor:
        from amqp_floor import one_floor_run
        url = os.environ.get("RRJOBS_AMQP_URL", DEFAULT_URL)
        print(json.dumps(asyncio.run(one_floor_run(
            url, [payload(i) for i in range(args.jobs)], args.batch, args.prefetch,
            lambda: process_cpu(args.broker_pid)))))
        return 0
    if args.once:
        print(json.dumps(asyncio.run(one_run(args.jobs, args.batch, args.workers,
                                             args.prefetch, args.broker_pid))))
        return 0
    sides = [tuple(s.split("=", 1)) for s in args.src] or [("installed", "")]
    if args.floor:
        sides.append(("floor", ""))
    rows: dict[str, list[dict[str, Any]]] = {label: [] for label, _ in sides}
    common = ["--jobs", str(args.jobs), "--batch", str(args.batch), "--workers",
              str(args.workers), "--prefetch", str(args.prefetch),
              "--broker-pid", str(args.broker_pid), "--once"]
    for i in range(args.runs):
        for label, src in (sides if i % 2 == 0 else sides[::-1]):
            env = dict(os.environ)
            if src:
                env["PYTHONPATH"] = str(Path(src).resolve())
            extra = ["--floor"] if label == "floor" else []
            out = subprocess.run([sys.executable, __file__, *common, *extra], env=env, check=True,
                                 capture_output=True, text=True).stdout
            row = json.loads(out.strip().splitlines()[-1])
            if row["unique"] != args.jobs:
                print(f"{label}: {row['unique']} of {args.jobs} jobs handled", file=sys.stderr)
                return 1
            row["side"] = label
            rows[label].append(row)
            print(json.dumps(row), file=sys.stderr)
            if args.out:
                with args.out.open("a") as f:
                    f.write(json.dumps(row) + "\n")
    meds = {label: summarise(label, r) for label, r in rows.items()}
    compared = [side for side in sides if side[0] != "floor"]
    if len(compared) == 2:
        (a, _), (b, _) = compared
        print("      " + "  ".join(f"{k} x{meds[b][k] / meds[a][k]:.2f}"
                                   for k in ("enqueue", "consume", "e2e")) + f" ({b}/{a})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
