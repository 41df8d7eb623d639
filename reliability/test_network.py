"""Scenario 3: network faults between a process and its broker, through toxiproxy.

For each broker driver, on the producer's connection and on the consumer's connection
separately: a cut in both directions (a blackhole, then the cut connections closed), 500 ms
of latency, a 64 KB/s bandwidth limit each way, and ``reset_peer`` (each connection that
carries data is reset) for the fault's duration. The producer pushes jobs with known ids at
a steady rate through one proxy while an ``rrjobs serve`` consumes them through another;
the fault goes on the one side's proxy after ``BEFORE`` seconds and comes off ``hold``
seconds later. Every pushed id must be handled (lost = 0); duplicates, the recovery time
and the rates before, during and after are recorded (section ``network``).

memory and sqlite have no network: the table says n/a. The short form (CI) runs two
scenarios per broker, one on each side, with short faults; ``RRJOBS_RELIABILITY=full`` runs
all 8 per broker with 10 s faults and writes ``reliability/results/network-<driver>.jsonl``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from integration.brokers import Broker, BrokerHandle, require_brokers
from integration.brokers.base import LOOPBACK, free_ports
from integration.brokers.kafka import KafkaProxiedSpec
from integration.brokers.toxiproxy import Proxy, Toxiproxy
from reliability.workload import Fleet, Pipe, Producer, ids, mode, pipe, rates, row, write_row

pytestmark = pytest.mark.toxiproxy

#: The drivers with a network between them and their broker.
NETWORKED: tuple[str, ...] = ("amqp", "kafka", "nats", "sqs", "google_pub_sub", "beanstalk")
SIDES: tuple[str, ...] = ("producer", "consumer")
FULL = mode() == "full"

#: Seconds of steady flow before the fault and after it; the rate (jobs/s) of the producer.
BEFORE = 5.0 if FULL else 2.0
AFTER = 10.0 if FULL else 2.0
RATE = 100.0 if FULL else 50.0


@dataclass(frozen=True)
class Fault:
    """A fault on a proxy: ``apply`` puts its toxics on, ``heal`` takes them off (after
    ``hold`` seconds), closing the proxy's connections first when ``reconnect``."""

    kind: str
    slug: str
    hold: float
    apply: Callable[[Proxy], Awaitable[list[str]]]
    reconnect: bool
    toxics: str  # what it is, for the row's extra


CUT_HOLD = 10.0 if FULL else 3.0
HOLD = 10.0 if FULL else 3.0
FAULTS: dict[str, Fault] = {
    "cut": Fault(
        "cut",
        f"cut-{CUT_HOLD:.0f}s",
        CUT_HOLD,
        Proxy.blackhole,
        True,
        "timeout(0) both ways, then the proxy's connections closed",
    ),
    "latency": Fault(
        "latency",
        "latency-500ms",
        HOLD,
        lambda p: p.latency(500),
        False,
        "latency 500 ms each way",
    ),
    "bandwidth": Fault(
        "bandwidth",
        "bandwidth-64kbs",
        HOLD,
        lambda p: p.bandwidth(64),
        False,
        "bandwidth 64 KB/s each way",
    ),
    "reset": Fault(
        "reset",
        "reset-peer",
        HOLD,
        Proxy.reset_peer,
        False,
        "reset_peer(0) both ways: each connection that carries data is reset",
    ),
}

#: The short form: one fault per connection on every broker, every fault kind on both sides.
SHORT: dict[str, tuple[tuple[str, str], ...]] = {
    "amqp": (("cut", "consumer"), ("reset", "producer")),
    "kafka": (("reset", "consumer"), ("cut", "producer")),
    "nats": (("cut", "consumer"), ("latency", "producer")),
    "sqs": (("bandwidth", "consumer"), ("cut", "producer")),
    "google_pub_sub": (("latency", "consumer"), ("bandwidth", "producer")),
}


def scenarios() -> list[tuple[str, str, str]]:
    if FULL:
        return [(d, f, s) for d in NETWORKED for f in FAULTS for s in SIDES]
    return [(d, f, s) for d, pairs in SHORT.items() for f, s in pairs]


def scenario_slug(fault: str, side: str) -> str:
    return f"{FAULTS[fault].slug}-{side}"


# --------------------------------------------------------------------------- Kafka
@dataclass(frozen=True)
class ProxiedKafka:
    """A Kafka of this module's own with a listener per side (``listen`` port, advertised at
    the side's proxy port), so every connection of that side goes through its proxy."""

    broker: Broker
    listeners: dict[str, tuple[int, int]]


@pytest.fixture(scope="module")
def proxied_kafka() -> Iterator[ProxiedKafka]:
    ports = free_ports(2 * len(SIDES))
    listeners = {side: (ports[2 * i], ports[2 * i + 1]) for i, side in enumerate(SIDES)}
    spec = KafkaProxiedSpec({side.upper(): pair for side, pair in listeners.items()})
    why = spec.local_unavailable()
    if why is not None:
        if require_brokers():
            pytest.fail(f"RRJOBS_REQUIRE_BROKERS=1 and {why}", pytrace=False)
        pytest.skip(why)
    handle: BrokerHandle = spec.start_local()
    try:
        yield ProxiedKafka(handle.broker, listeners)
    finally:
        handle.stop()


@dataclass
class Wiring:
    """The pipeline, and the proxy of each side (the addresses the producer and the serve
    are given)."""

    pipe: Pipe
    proxies: dict[str, Proxy]

    def endpoint(self, side: str) -> str:
        proxy = self.proxies[side]
        if self.pipe.driver == "kafka":
            return proxy.listen
        return proxy.address(self.pipe.endpoint)


@pytest.fixture
async def wiring(
    request: pytest.FixtureRequest,
    toxiproxy: Toxiproxy,
    unique_name: str,
    tmp_path: Path,
    broker_of: Callable[[str], Broker | None],
) -> AsyncIterator[Wiring]:
    driver: str = request.node.callspec.params["driver"]
    if driver == "kafka":
        kafka: ProxiedKafka = request.getfixturevalue("proxied_kafka")
        the_pipe = pipe(driver, unique_name, kafka.broker, tmp_path)
        proxies = {
            side: await toxiproxy.create_at(f"{LOOPBACK}:{listen}", f"{LOOPBACK}:{advertised}")
            for side, (listen, advertised) in kafka.listeners.items()
        }
    else:
        the_pipe = pipe(driver, unique_name, broker_of(driver), tmp_path)
        proxies = {side: await toxiproxy.create(the_pipe.endpoint) for side in SIDES}
    yield Wiring(the_pipe, proxies)


# --------------------------------------------------------------------------- the scenario
@pytest.mark.timeout(360)
@pytest.mark.parametrize(("driver", "fault", "side"), scenarios())
async def test_network_fault(
    driver: str, fault: str, side: str, wiring: Wiring, tmp_path: Path
) -> None:
    spec = FAULTS[fault]
    proxy = wiring.proxies[side]
    total = BEFORE + spec.hold + AFTER
    job_ids = ids(int(total * RATE), prefix=f"{fault[:3]}{side[0]}")
    fleet = Fleet(wiring.pipe, tmp_path / "run", endpoint=wiring.endpoint("consumer"))
    async with fleet, Producer(wiring.pipe, endpoint=wiring.endpoint("producer")) as producer:
        start = time.time()
        pushing = producer.spawn(job_ids, rate=RATE, batch=10)
        await asyncio.sleep(BEFORE)
        fault_at = time.time()
        await spec.apply(proxy)
        assert len(await proxy.listed()) == 2  # both directions
        await asyncio.sleep(spec.hold)
        await proxy.heal(reconnect=spec.reconnect)
        fault_end = time.time()
        try:
            await asyncio.wait_for(pushing, timeout=180)
        except TimeoutError:
            pytest.fail(
                f"{driver}: the producer was still pushing 180 s after the {fault} on the "
                f"{side} ended ({len(producer.pushed)}/{len(job_ids)} confirmed; "
                f"errors: {producer.errors[-3:]})"
            )
        tally = await fleet.ledger.wait(job_ids, 180, settle=1.0)
        times = fleet.ledger.times()
        logs = fleet.logs()
        starts = sum(s.starts for s in fleet.serves)
        alive = all(s.running for s in fleet.serves)

    measured = rates(times, start, fault_at, fault_end)
    kinds = sorted({e.split(":")[0] for e in producer.errors})
    note = f"{producer.retries} push batches retried ({', '.join(kinds)})" if kinds else ""
    result = row(
        "network",
        driver,
        scenario_slug(fault, side),
        tally,
        **measured.as_dict(),
        extra={
            "side": side,
            "fault": spec.toxics,
            "hold_s": spec.hold,
            "rate": RATE,
            "producer_retries": producer.retries,
            "producer_errors": kinds[:5],
            "note": note,
        },
    )
    write_row(result)
    assert len(producer.pushed) == len(job_ids)
    assert tally.lost == 0, (
        f"{driver} {fault} on the {side}: {tally.lost} of {tally.pushed} lost "
        f"(first: {list(tally.lost_ids)})\n{logs}"
    )
    assert alive and starts == 1, f"the serve died during the {fault}:\n{logs}"
