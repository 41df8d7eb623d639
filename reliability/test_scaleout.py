"""Scale-out: 1, 2 and 4 ``rrjobs serve`` processes on one queue, topic, subscription or
stream of each broker (one sqlite file shared by the processes), and NATS's recovery after a
SIGKILL of its consumer (docs/reliability.md, sections Scale-out and Recovery).

Throughput is measured on a backlog: the processes start, pause the pipeline, the producer
pushes every job, then all of them resume at once; jobs/s is the jobs handled over the time
from the resume to the last one handled (the median of the rounds, which alternate between
the process counts). Every pushed id must be handled (lost == 0). The short form (CI) runs
2 processes on a few hundred jobs; the full run 1, 2 and 4 processes, 3 rounds each.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from integration.brokers import Broker
from integration.kafka_helpers import create_topic
from reliability import workload
from reliability.workload import Fleet, Producer, lease_options, pipe
from rrjobs import Client

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(1800)]

#: The drivers that can run several processes on one pipeline (memory is in-process).
SCALE_DRIVERS = ("sqlite", "amqp", "kafka", "nats", "sqs", "google_pub_sub")
#: Kafka's topic: one partition per process of the largest fleet.
KAFKA_PARTITIONS = 4


def processes() -> tuple[int, ...]:
    return (1, 2, 4) if workload.mode() == "full" else (2,)


def backlog(driver: str) -> int:
    """Jobs per round: the slow emulators (ElasticMQ, Pub/Sub) get fewer in the full run."""
    return workload.counts(300, 3000 if driver in ("sqs", "google_pub_sub") else 8000)


async def round_trip(fleet: Fleet, producer: Producer, job_ids: list[str]) -> float:
    """Pause every process, push ``job_ids``, resume them all at once, wait until every id is
    handled; jobs/s from the resume to the last handled."""
    name = fleet.pipe.name
    clients = [Client(s.address, timeout=30.0) for s in fleet.serves]
    try:
        await asyncio.gather(*(c.pause(name) for c in clients))
        await producer.push(job_ids, batch=500)
        started = time.time()
        await asyncio.gather(*(c.resume(name) for c in clients))
    finally:
        await asyncio.gather(*(c.close() for c in clients))
    tally = await fleet.ledger.wait(job_ids, within=600)
    assert tally.lost == 0, f"{tally.lost} lost, e.g. {tally.lost_ids}\n{fleet.logs()}"
    wanted = set(job_ids)
    last = max(r.handled_at for r in fleet.ledger.read() if r.id in wanted)
    return len(job_ids) / max(last - started, 1e-6)


@pytest.mark.parametrize("driver", SCALE_DRIVERS)
async def test_scale_out(
    driver: str,
    broker_of: Callable[[str], Broker | None],
    unique_names: Callable[[str], str],
    tmp_path: Path,
) -> None:
    """Every fleet (1, 2, 4 processes, each on a pipeline of its own) runs at once, paused
    between rounds, and the rounds alternate between them: the machine's load (shared, and
    noisy) is about the same for every process count."""
    broker = broker_of(driver)
    rounds, jobs = workload.counts(1, 3), backlog(driver)
    fleets: dict[int, tuple[Fleet, Producer]] = {}
    measured: dict[int, list[float]] = {count: [] for count in processes()}
    async with contextlib.AsyncExitStack() as stack:
        for count in processes():
            name = unique_names(f"x{count}")
            if driver == "kafka":
                assert broker is not None
                await create_topic(broker.endpoint, name, KAFKA_PARTITIONS)
            where = tmp_path / f"p{count}"
            where.mkdir()
            p = pipe(driver, name, broker, where)
            fleet = await stack.enter_async_context(Fleet(p, where / "run", count=count))
            fleets[count] = (fleet, await stack.enter_async_context(Producer(p)))
        for n in range(rounds):
            for count, (fleet, producer) in fleets.items():
                job_ids = workload.ids(jobs, f"r{n}")
                measured[count].append(await round_trip(fleet, producer, job_ids))
        await asyncio.sleep(1.0)  # late duplicates
        for count, (fleet, _) in fleets.items():
            runs = measured[count]
            tally = fleet.ledger.tally(
                id for n in range(rounds) for id in workload.ids(jobs, f"r{n}")
            )
            per_process = sorted(
                sum(1 for r in fleet.ledger.read() if r.pid == s.pid) for s in fleet.serves
            )
            assert tally.lost == 0
            extra: dict[str, Any] = {
                "runs": [round(r, 1) for r in runs],
                "handled_per_process": per_process,
            }
            if driver == "kafka":
                extra["partitions"] = KAFKA_PARTITIONS
            note = f"runs {'/'.join(f'{r:.0f}' for r in runs)} jobs/s"
            if 1 in measured and count != 1:
                ratio = statistics.median(runs) / statistics.median(measured[1])
                extra["vs_1"] = round(ratio, 2)
                note = f"{ratio:.2f}x 1 process; {note}"
            extra["note"] = f"{note}; per process {'/'.join(map(str, per_process))}"
            workload.write_row(
                workload.row(
                    "scaleout",
                    driver,
                    "backlog",
                    tally,
                    processes=count,
                    jobs=jobs,
                    jobs_per_s=round(statistics.median(runs), 1),
                    extra=extra,
                )
            )
            if workload.mode() == "full":  # a short backlog may fit in one process's prefetch
                assert all(per_process), f"a process handled nothing: {per_process}"


async def test_memory_scale_out_is_in_process() -> None:
    """memory: its queue lives in one process, so several processes cannot share it."""
    workload.write_row(
        workload.row(
            "scaleout",
            "memory",
            "backlog",
            None,
            processes=1,
            jobs_per_s=None,
            extra={"note": "n/a: the memory queue lives in the serve process, not shareable"},
        )
    )


async def test_nats_recovers_after_its_consumer_is_killed(
    broker_of: Callable[[str], Broker | None], unique_name: str, tmp_path: Path
) -> None:
    """A stream pushed at a steady rate (handlers of 10 ms, 8 workers, so jobs are in flight);
    the only consumer SIGKILLed mid-stream and restarted.
    Recorded: the rate before, how long after the restart the rate is back to it (1 s
    windows at >= 80 % of it), when the jobs the dead process held were handled again."""
    full = workload.mode() == "full"
    ack_wait, push_rate = (20.0, 600.0) if full else (2.0, 300.0)
    total = workload.counts(1500, 12000)
    p = pipe(
        "nats", unique_name, broker_of("nats"), tmp_path, options=lease_options("nats", ack_wait)
    )
    job_ids = workload.ids(total)
    async with Fleet(p, tmp_path / "run", sleep=0.01) as fleet, Producer(p) as producer:
        started = time.time()
        pushing = producer.spawn(job_ids, rate=push_rate, batch=20)
        got = await fleet.ledger.wait_count(total // 3, within=120)
        assert got >= total // 3, fleet.logs()
        killed_at = time.time()
        fleet.serves[0].kill()
        pushed_before = set(producer.pushed)
        handled_before = fleet.ledger.handled_ids()
        held = pushed_before - handled_before  # queued, in handlers or not yet fetched
        await fleet.serves[0].start_ready(p.name)
        restarted_at = time.time()
        await pushing
        tally = await fleet.ledger.wait(producer.pushed, within=300, settle=1.0)
        assert tally.lost == 0, f"{tally.lost} lost, e.g. {tally.lost_ids}\n{fleet.logs()}"
        times = fleet.ledger.times()
        before = workload.rate(times, started + 1.0, killed_at)
        back = workload.recovery_time(times, restarted_at, restarted_at, before, share=0.8)
        last_held = max(
            (r.handled_at for r in fleet.ledger.read() if r.id in held), default=killed_at
        )
        measured = workload.rates(times, started + 1.0, killed_at, restarted_at)
        after = workload.rate(times, restarted_at, restarted_at + 2.0)
    workload.write_row(
        workload.row(
            "recovery",
            "nats",
            "consumer-sigkill",
            tally,
            **measured.as_dict(),
            extra={
                "note": (
                    f"ack_wait {ack_wait:g} s; restart took {restarted_at - killed_at:.1f} s; "
                    f"rate back {'-' if back is None else f'{back:.1f} s'} after the restart; "
                    f"jobs held at the kill all handled {last_held - killed_at:.1f} s after it"
                ),
                "ack_wait_s": ack_wait,
                "restart_s": round(restarted_at - killed_at, 2),
                "back_to_rate_after_restart_s": None if back is None else round(back, 2),
                "rate_2s_after_restart": None if after is None else round(after, 1),
                "held_at_kill": len(held),
                "held_handled_after_kill_s": round(last_held - killed_at, 2),
                "push_rate": push_rate,
            },
        )
    )
