"""``rrjobs serve --processes 2`` as a user runs it (the CLI as a subprocess) on a real
broker and on one sqlite file: both runtime processes consume the pipeline, a SIGKILLed
one is started again and the jobs it held are delivered again (none lost), ``rrjobs stat``
through the supervisor sums what the processes counted, and SIGTERM to the supervisor
drains every process (the jobs in their handlers finish, none comes again). A pipeline
declared through the supervisor reaches every process, a restarted one too."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable
from pathlib import Path

import pytest

from integration.brokers import Broker
from reliability import workload
from reliability.workload import Fleet, Producer, lease_options, pipe
from rrjobs import Client
from rrjobs.rpc.client import RPCClient
from rrjobs.runtime.stats import PipelineStat
from tests.conftest import wait_for

pytestmark = [pytest.mark.timeout(300)]

DRIVERS = ("sqlite", "amqp")


def children(pid: int | None) -> list[int]:
    """The child processes of ``pid`` (Linux)."""
    assert pid is not None
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def stat_when(
    client: Client, name: str, check: Callable[[PipelineStat], bool], within: float = 60.0
) -> PipelineStat:
    """``name``'s stat through the supervisor, once ``check`` holds of it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        (stat,) = [s for s in await client.stat() if s.state.pipeline == name]
        if check(stat) or loop.time() > deadline:
            assert check(stat), stat
            return stat
        await asyncio.sleep(0.05)


def declare_options(name: str) -> dict[str, str]:
    return {
        "name": name,
        "driver": "amqp",
        "queue": name,
        "routing_key": name,
        "exchange": "rrjobs.reliability",
        "exchange_durable": "true",
        "durable": "true",
        "prefetch": "10",
    }


@pytest.mark.parametrize("driver", DRIVERS)
async def test_two_processes_share_a_pipeline_and_a_killed_one_comes_back(
    driver: str,
    broker_of: Callable[[str], Broker | None],
    unique_name: str,
    tmp_path: Path,
) -> None:
    options = {"prefetch": 20, **lease_options(driver, 3.0)}
    p = pipe(driver, unique_name, broker_of(driver), tmp_path, options=options)
    total = 3000
    job_ids = workload.ids(total)
    async with Fleet(p, tmp_path / "run", processes=2, sleep=0.005, workers=4) as fleet:
        (serve,) = fleet.serves
        first = children(serve.pid)
        assert len(first) == 2, serve.log()
        declared = f"{p.name}-d"
        if driver == "amqp":  # a pipeline declared at run time reaches every process
            async with RPCClient(serve.address, timeout=30.0) as rpc:
                await rpc.declare(declare_options(declared))
                await rpc.resume([declared])
        async with Producer(p) as producer:
            pushing = producer.spawn(job_ids, batch=100)
            assert await fleet.ledger.wait_count(total // 5, within=120) >= total // 5
            os.kill(first[0], signal.SIGKILL)
            await wait_for(
                lambda: first[0] not in children(serve.pid) and len(children(serve.pid)) == 2,
                60,
                "a new process",
            )
            await pushing
            tally = await fleet.ledger.wait(job_ids, within=180, settle=1.0)
        assert tally.lost == 0, f"{tally.lost} lost, e.g. {tally.lost_ids}\n{serve.log()}"
        now = children(serve.pid)
        assert first[1] in now and first[0] not in now
        assert "killed by SIGKILL" in serve.log(200) and "restarting it in" in serve.log(200)
        by_pid: dict[int, int] = {}
        for record in fleet.ledger.read():
            by_pid[record.pid] = by_pid.get(record.pid, 0) + 1
        assert by_pid.get(first[0], 0) > 0 and by_pid.get(first[1], 0) > 0, by_pid
        async with Client(serve.address, timeout=30.0) as client:
            stat = await stat_when(client, p.name, lambda s: s.state.ready)
            if driver == "amqp":  # the new process declared and resumed it too
                await stat_when(client, declared, lambda s: s.state.ready)
        # each process counts its own jobs: the two alive now, summed (the dead one's are gone)
        assert stat.counters.ok == sum(by_pid.get(pid, 0) for pid in now), (stat, by_pid)


@pytest.mark.parametrize("driver", DRIVERS)
async def test_sigterm_to_the_supervisor_drains_every_process(
    driver: str,
    broker_of: Callable[[str], Broker | None],
    unique_name: str,
    tmp_path: Path,
) -> None:
    p = pipe(driver, unique_name, broker_of(driver), tmp_path, options={"prefetch": 4})
    job_ids = workload.ids(8)
    async with Fleet(p, tmp_path / "run", processes=2, sleep=1.5, workers=4) as fleet:
        (serve,) = fleet.serves
        async with Producer(p) as producer, Client(serve.address, timeout=30.0) as client:
            await producer.push(job_ids)
            # each process holds 4 (its prefetch), all in handlers
            await stat_when(client, p.name, lambda s: s.state.reserved >= len(job_ids), 30)
            assert not fleet.ledger.handled_ids()  # none finished yet
        code = await serve.terminate(within=60)
        assert code == 0, serve.log()
        tally = fleet.ledger.tally(job_ids)
        assert (tally.handled, tally.duplicated) == (len(job_ids), 0), serve.log()
        assert len({r.pid for r in fleet.ledger.read()}) == 2
