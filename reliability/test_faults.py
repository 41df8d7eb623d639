"""Fault scenarios on every driver they apply to (docs/reliability.md, section Faults).

Each test pushes a stream of jobs with known ids, faults the broker or the serve process in
the middle, and counts from the ledger: every pushed id must be handled (lost == 0);
duplicates, the recovery time and the rates before, during and after are recorded in a row.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from integration.brokers import Broker
from integration.brokers.base import LocalHandle
from integration.kafka_helpers import create_topic
from reliability import workload
from reliability.workload import DURABLE, Fleet, Outcome, Producer, lease_options, pipe
from rrjobs import Client

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

BROKER_DRIVERS = ("amqp", "kafka", "nats", "sqs", "beanstalk", "redis", "postgres")
DURABLE_DRIVERS = [d for d in workload.DRIVERS if d in DURABLE]
#: The lease of the drivers that have one, in these tests: a job held by a killed consumer
#: comes back after it.
LEASE = 5.0


def stream() -> tuple[int, float]:
    """(jobs, push rate in jobs/s) of a fault test: ~2 s of pushing in the short form, ~12 s
    in the full run."""
    return workload.counts(400, 6_000), workload.counts(200.0, 500.0)


def record(scenario: str, driver: str, outcome: Outcome, **extra: object) -> None:
    workload.write_row(
        workload.row(
            "faults",
            driver,
            scenario,
            outcome.tally,
            **outcome.rates.as_dict(),
            extra={k: v for k, v in extra.items() if v is not None},
        )
    )


async def broker_killed(
    handle: LocalHandle,
    p: workload.Pipe,
    directory: Path,
    *,
    count: int = 1,
    within: float = 120.0,
    none_lost: bool = True,
    then: int = 0,
) -> tuple[Outcome, list[workload.Handled], dict[str, float]]:
    """A stream through ``count`` serves of ``p`` with the broker SIGKILLed and restarted in
    the middle; the outcome, the ledger's lines and the confirmed pushes. With ``none_lost``
    it asserts that nothing was lost and that every serve outlived its broker. ``then``
    more jobs are pushed once all is over, and must all be handled."""
    jobs, push_rate = stream()
    async with Fleet(p, directory, count=count) as fleet, Producer(p) as producer:
        outcome = await workload.fault_mid_stream(
            fleet,
            producer,
            workload.ids(jobs),
            rate=push_rate,
            fault=lambda: asyncio.to_thread(handle.kill),
            recover=lambda: asyncio.to_thread(handle.restart),
            within=within,
        )
        if none_lost:
            assert outcome.tally.lost == 0, outcome.lost_message(producer, fleet)
        assert all(s.running for s in fleet.serves), f"a serve died with its broker\n{fleet.logs()}"
        if then:
            later = workload.ids(then, "then")
            await producer.push(later, batch=20)
            tally = await fleet.ledger.wait(later, within)
            assert tally.lost == 0, f"{tally.lost} of {then} jobs pushed after the recovery lost"
        return outcome, fleet.ledger.read(), producer.pushed


# --------------------------------------------------------------------------- 1: broker kill
@pytest.mark.parametrize(
    "driver", workload.matrix(BROKER_DRIVERS, short=("nats", "beanstalk", "redis", "postgres"))
)
async def test_broker_killed_and_restarted(
    driver: str,
    own_broker: Callable[[str], LocalHandle],
    unique_name: str,
    tmp_path: Path,
) -> None:
    handle = own_broker(driver)
    p = pipe(driver, unique_name, handle.broker, tmp_path, options=lease_options(driver, LEASE))
    outcome, _, _ = await broker_killed(handle, p, tmp_path / "run")
    record(
        "broker-kill",
        driver,
        outcome,
        broker_restart_s=round(outcome.recovered, 1),
        push_retries=outcome.push_retries,
        note=f"broker back in {outcome.recovered:.1f} s; {outcome.push_retries} push retries",
    )


# --------------------------------------------------------------------------- 2: serve kill
@pytest.mark.parametrize("driver", workload.matrix(DURABLE_DRIVERS, short=("sqlite",)))
async def test_serve_killed_and_restarted(
    driver: str,
    broker_of: Callable[[str], Broker | None],
    unique_name: str,
    tmp_path: Path,
) -> None:
    jobs, push_rate = stream()
    p = pipe(driver, unique_name, broker_of(driver), tmp_path, options=lease_options(driver, LEASE))
    async with Fleet(p, tmp_path / "run") as fleet, Producer(p) as producer:
        serve = fleet.serves[0]
        outcome = await workload.fault_mid_stream(
            fleet,
            producer,
            workload.ids(jobs),
            rate=push_rate,
            fault=lambda: asyncio.to_thread(serve.kill),
            recover=lambda: serve.start_ready(p.name, within=120),
            down=0.5,
            settle=LEASE,
        )
        assert outcome.tally.lost == 0, outcome.lost_message(producer, fleet)
    lease = f"; lease {LEASE:g} s" if lease_options(driver, LEASE) else ""
    record(
        "serve-kill",
        driver,
        outcome,
        serve_ready_s=round(outcome.recovered, 1),
        note=f"serve consuming again {outcome.recovered:.1f} s after its restart{lease}",
    )


# --------------------------------------------------------------------------- 4: graceful stop
IN_FLIGHT = 1000


@pytest.mark.parametrize("driver", workload.matrix(DURABLE_DRIVERS, short=("nats",)))
async def test_graceful_stop_with_jobs_in_flight(
    driver: str,
    broker_of: Callable[[str], Broker | None],
    unique_name: str,
    tmp_path: Path,
) -> None:
    """SIGTERM while the serve holds 1,000 jobs (its prefetch window, full: the backlog is
    larger): the handlers running finish, the rest go back to the broker; a restarted serve
    handles them; nothing is lost."""
    jobs = workload.counts(2 * IN_FLIGHT, 3 * IN_FLIGHT)
    options = {**lease_options(driver, LEASE), **workload.inflight_options(driver, IN_FLIGHT)}
    p = pipe(driver, unique_name, broker_of(driver), tmp_path, options=options)
    # 8 handlers of 50 ms: ~160 jobs/s, slower than the push: the backlog fills the window
    async with (
        Fleet(p, tmp_path / "run", sleep=0.05, destroy_timeout=10) as fleet,
        Producer(p) as producer,
    ):
        serve = fleet.serves[0]
        held: list[int] = []
        stopped: list[tuple[int, float]] = []

        def backlog() -> int:
            return len(producer.pushed) - len(fleet.ledger.handled_ids())

        async def stop() -> None:
            deadline = time.monotonic() + 30
            while backlog() < IN_FLIGHT and len(producer.pushed) < jobs:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            held.append(backlog())
            began = time.monotonic()
            code = await serve.terminate(within=60)
            stopped.append((code, time.monotonic() - began))

        outcome = await workload.fault_mid_stream(
            fleet,
            producer,
            workload.ids(jobs),
            rate=None,
            batch=200,
            at=0.1,
            fault=stop,
            recover=lambda: serve.start_ready(p.name, within=120),
            down=0.5,
            settle=LEASE,
        )
        assert outcome.tally.lost == 0, outcome.lost_message(producer, fleet)
    code, took = stopped[0]
    assert code == 0, f"rrjobs serve exited {code} on SIGTERM\n{fleet.logs()}"
    record(
        "graceful-stop",
        driver,
        outcome,
        backlog_at_stop=held[0],
        prefetch=IN_FLIGHT,
        stop_s=round(took, 2),
        note=f"backlog {held[0]:,} at SIGTERM, prefetch {IN_FLIGHT:,}; exit 0 after {took:.1f} s",
    )


def steady(times: list[float], start: float) -> dict[str, object]:
    """The row's rate fields for a run without a fault: the whole run's rate as ``during``."""
    end = times[-1] if times else start
    return {
        "rate_before": None,
        "rate_during": None if end <= start else round(len(times) / (end - start), 2),
        "rate_after": None,
        "recovery_s": None,
    }


# --------------------------------------------------------------------------- 5: slow handler
#: The drivers with a lease the worker pool extends (``lease_extension``).
LEASED = ("sqlite", "nats", "sqs", "google_pub_sub", "beanstalk", "postgres")
SHORT_LEASE = 2.0


@pytest.mark.parametrize("driver", workload.matrix(LEASED, short=("sqlite",)))
async def test_handler_slower_than_the_lease(
    driver: str,
    broker_of: Callable[[str], Broker | None],
    unique_name: str,
    tmp_path: Path,
) -> None:
    """Each handler takes three leases: the pool's lease extension must keep every job from
    being delivered again (a redelivery would show as a duplicate)."""
    workers = 16
    jobs = workload.counts(workers, 4 * workers)
    sleep = 3 * SHORT_LEASE
    options = {**lease_options(driver, SHORT_LEASE), **workload.inflight_options(driver, workers)}
    p = pipe(driver, unique_name, broker_of(driver), tmp_path, options=options)
    job_ids = workload.ids(jobs)
    async with (
        Fleet(p, tmp_path / "run", sleep=sleep, workers=workers) as fleet,
        Producer(p) as producer,
    ):
        started = time.time()
        await producer.push(job_ids, batch=workers)
        tally = await fleet.ledger.wait(
            job_ids, within=60 + jobs / workers * sleep * 2, settle=sleep
        )
        assert tally.lost == 0, f"{tally.lost} lost, e.g. {tally.lost_ids}\n{fleet.logs()}"
        assert tally.duplicated == 0, (
            f"{tally.duplicated} jobs delivered again although their lease was extended\n"
            f"{fleet.logs()}"
        )
    workload.write_row(
        workload.row(
            "faults",
            driver,
            "slow-handler",
            tally,
            **steady(fleet.ledger.times(), started),
            extra={
                "handler_s": sleep,
                "lease_s": SHORT_LEASE,
                "workers": workers,
                "note": f"handler {sleep:g} s, lease {SHORT_LEASE:g} s, {workers} workers",
            },
        )
    )


# --------------------------------------------------------------------------- 6: poison job
MAX_ATTEMPTS = 3


@pytest.mark.parametrize("driver", workload.DRIVERS)
async def test_poison_job_dead_lettered_while_the_pipeline_flows(
    driver: str,
    broker_of: Callable[[str], Broker | None],
    unique_name: str,
    tmp_path: Path,
) -> None:
    """Poison jobs among good ones: each poison job runs ``MAX_ATTEMPTS`` times, then lands in
    the dead-letter pipeline; every good job is handled meanwhile."""
    jobs, push_rate = stream()
    poison = workload.ids(workload.counts(5, 20), "poison")
    dead = f"{unique_name}-dead"
    p = pipe(
        driver,
        unique_name,
        broker_of(driver),
        tmp_path,
        options=lease_options(driver, LEASE),
        retry={
            "max_attempts": MAX_ATTEMPTS,
            "backoff": "200ms",
            "multiplier": 1,
            "dead_letter": dead,
        },
        extra_pipelines={dead: {"driver": "memory"}},
    )
    good = workload.ids(jobs)
    # the poison jobs spread through the stream
    stride = max(1, jobs // (len(poison) + 1))
    mixed = [*good]
    for n, bad in enumerate(poison, 1):
        mixed.insert(n * stride + n - 1, bad)
    async with (
        Fleet(p, tmp_path / "run") as fleet,
        Producer(p, address=fleet.address) as producer,
    ):
        started = time.time()
        await producer.push(mixed, rate=push_rate, batch=20, poison=poison)
        tally = await fleet.ledger.wait(good, within=120)
        assert tally.lost == 0, f"{tally.lost} lost, e.g. {tally.lost_ids}\n{fleet.logs()}"
        lettered = await dead_letters(fleet.address, dead, len(poison), within=30)
        attempts = Counter(r.id for r in fleet.ledger.read() if r.poison)
    assert lettered == len(poison), f"{lettered} of {len(poison)} poison jobs dead-lettered"
    assert sorted(attempts) == sorted(poison)
    assert set(attempts.values()) == {MAX_ATTEMPTS}, f"attempts per poison job: {attempts}"
    workload.write_row(
        workload.row(
            "faults",
            driver,
            "poison",
            tally,
            **steady(fleet.ledger.times(), started),
            extra={
                "poison": len(poison),
                "dead_lettered": lettered,
                "attempts": MAX_ATTEMPTS,
                "note": f"{len(poison)} poison jobs, each run {MAX_ATTEMPTS} times, "
                f"all dead-lettered; the good ones flowed",
            },
        )
    )


async def dead_letters(address: str, pipeline: str, want: int, within: float) -> int:
    """Jobs waiting in the (unconsumed, memory) dead-letter ``pipeline`` of the serve."""
    deadline = time.monotonic() + within
    got = 0
    async with Client(address, timeout=5.0) as client:
        while time.monotonic() < deadline:
            for stat in await client.stat():
                if stat.state.pipeline == pipeline:
                    got = stat.state.active
            if got >= want:
                break
            await asyncio.sleep(0.2)
    return got


# --------------------------------------------------------------------------- 7: kafka group
async def test_kafka_broker_killed_under_a_two_process_group(
    own_broker: Callable[[str], LocalHandle], unique_name: str, tmp_path: Path
) -> None:
    """Two serves in one consumer group on a topic of 4 partitions; the broker is SIGKILLed
    and restarted: the group forms again (a rebalance) and every job is handled."""
    handle = own_broker("kafka")
    await create_topic(handle.broker.endpoint, unique_name, 4)
    p = pipe("kafka", unique_name, handle.broker, tmp_path)
    outcome, records, _ = await broker_killed(handle, p, tmp_path / "run", count=2)
    by_process = Counter(r.pid for r in records)
    after = Counter(r.pid for r in records if r.handled_at >= outcome.fault_end)
    assert len(by_process) == 2, f"one process handled everything: {by_process}"
    record(
        "kafka-group-kill",
        "kafka",
        outcome,
        broker_restart_s=round(outcome.recovered, 1),
        per_process=sorted(by_process.values()),
        per_process_after=sorted(after.values()),
        note=f"2 processes, 4 partitions; broker back in {outcome.recovered:.1f} s; "
        f"handled per process {sorted(by_process.values())} "
        f"({sorted(after.values())} after the restart)",
    )


# --------------------------------------------------------------------------- 8: emulator
async def test_pubsub_emulator_restarted(
    own_broker: Callable[[str], LocalHandle], unique_name: str, tmp_path: Path
) -> None:
    """The Pub/Sub emulator SIGKILLed and started again mid-stream. It keeps everything in
    memory: it comes back without the topic, the subscription or the messages it held. The
    driver must make the topic and subscription again and go on; the jobs the emulator held
    at the kill die with it (counted, and nothing else may be lost)."""
    handle = own_broker("google_pub_sub")
    p = pipe("google_pub_sub", unique_name, handle.broker, tmp_path)
    outcome, records, pushed = await broker_killed(
        handle, p, tmp_path / "run", within=workload.counts(45, 120), none_lost=False, then=50
    )
    handled = {r.id for r in records}
    lost = set(pushed) - handled
    held = {i for i, at in pushed.items() if at < outcome.fault_at} - {
        r.id for r in records if r.handled_at < outcome.fault_at
    }
    # Consuming again: the subscription exists once more. A job published before that, to a
    # topic made again (by either side) without its subscription yet, is dropped by Pub/Sub.
    resumed = min(r.handled_at for r in records if r.handled_at >= outcome.fault_end)
    gap = {i for i, at in pushed.items() if outcome.fault_at <= at < resumed}
    after = {i for i, at in pushed.items() if at >= resumed}
    assert after, "nothing was pushed after the pipeline consumed again"
    assert lost <= held | gap, (
        f"{len(lost - held - gap)} jobs lost that were pushed after the pipeline consumed "
        f"again, e.g. {sorted(lost - held - gap)[:10]}\n(see the serve log in the tmp dir)"
    )
    lost_held, lost_gap = len(lost & held), len(lost - held)
    record(
        "emulator-restart",
        "google_pub_sub",
        outcome,
        emulator_restart_s=round(outcome.recovered, 1),
        held_at_kill=len(held),
        lost_held_at_kill=lost_held,
        lost_before_resubscribed=lost_gap,
        note=f"emulator back in {outcome.recovered:.1f} s, empty (it keeps nothing on disk): "
        f"{lost_held} lost of the {len(held)} it held at the kill; {lost_gap} lost that were "
        f"published to the topic made again before its subscription was; none lost of the "
        f"{len(after):,} pushed once the pipeline consumed again",
    )
