"""Fault scenarios on every driver they apply to (docs/reliability.md, section Faults).

Each test pushes a stream of jobs with known ids, faults the broker or the serve process in
the middle, and counts from the ledger: every pushed id must be handled (lost == 0);
duplicates, the recovery time and the rates before, during and after are recorded in a row.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from integration.brokers import Broker
from integration.brokers.base import LocalHandle
from reliability import workload
from reliability.workload import DURABLE, Fleet, Outcome, Producer, lease_options, pipe

pytestmark = [pytest.mark.reliability, pytest.mark.timeout(900)]

BROKER_DRIVERS = ("amqp", "kafka", "nats", "sqs")
#: The lease of the drivers that have one, in these tests: a job held by a killed consumer
#: comes back after it.
LEASE = 5.0


def stream() -> tuple[int, float]:
    """(jobs, push rate in jobs/s) of a fault test: ~2 s of pushing in the short form, ~20 s
    in the full run."""
    return workload.counts(400, 10_000), workload.counts(200.0, 500.0)


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


# --------------------------------------------------------------------------- 1: broker kill
@pytest.mark.parametrize("driver", BROKER_DRIVERS)
async def test_broker_killed_and_restarted(
    driver: str,
    own_broker: Callable[[str], LocalHandle],
    unique_name: str,
    tmp_path: Path,
) -> None:
    handle = own_broker(driver)
    jobs, push_rate = stream()
    p = pipe(driver, unique_name, handle.broker, tmp_path, options=lease_options(driver, LEASE))
    async with Fleet(p, tmp_path / "run") as fleet, Producer(p) as producer:
        outcome = await workload.fault_mid_stream(
            fleet,
            producer,
            workload.ids(jobs),
            rate=push_rate,
            fault=lambda: asyncio.to_thread(handle.kill),
            recover=lambda: asyncio.to_thread(handle.restart),
        )
        assert outcome.tally.lost == 0, outcome.lost_message(producer, fleet)
        assert all(s.running for s in fleet.serves), f"a serve died with its broker\n{fleet.logs()}"
    record(
        "broker-kill",
        driver,
        outcome,
        broker_restart_s=round(outcome.recovered, 1),
        push_retries=outcome.push_retries,
        note=f"broker back in {outcome.recovered:.1f} s; {outcome.push_retries} push retries",
    )


# --------------------------------------------------------------------------- 2: serve kill
@pytest.mark.parametrize("driver", sorted(DURABLE, key=workload.DRIVERS.index))
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
