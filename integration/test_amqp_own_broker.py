"""The ``amqp`` driver against a RabbitMQ this module starts and kills itself.

* A user without the configure permission, for ``declare: false``.
* The outage test: 5,000 jobs pushed while consuming, RabbitMQ SIGKILLed
  halfway and restarted on the same port and data directory; the driver
  reconnects by itself and every job is processed at least once. A second
  pipeline with a short ``redial_timeout`` is restarted by the runtime.

The broker runs from Debian's ``rabbitmq-server`` (``integration/install.sh``);
without it these tests skip, or fail with ``RRJOBS_REQUIRE_BROKERS=1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import aio_pika
import pytest

from integration.brokers import BrokerUnavailable, acquire_own
from integration.brokers.amqp import RABBITMQ_HOME
from integration.brokers.base import LocalHandle, log_tail
from integration.missing import unavailable
from integration.waiting import eventually, take
from rrjobs.config import Config
from rrjobs.core.errors import ConfigError
from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.drivers.amqp import AMQPConstructor, AMQPDriver
from rrjobs.runtime.app import App
from rrjobs.runtime.jobs import Jobs

pytestmark = [pytest.mark.amqp, pytest.mark.timeout(300)]

RO_USER, RO_PASSWORD = "rrjobs-ro", "rrjobs-ro-password"


class OwnRabbit:
    """A RabbitMQ of this module's own (``acquire_own``): ``kill`` and ``start`` again keep
    its ports, data dir, durable queues and persistent messages."""

    def __init__(self, handle: LocalHandle) -> None:
        self.handle = handle
        self.url = handle.broker.endpoint
        self.log_path = handle.broker.log_path

    def start(self) -> float:
        """Start the broker again (after ``kill``); the seconds until it accepts AMQP."""
        return self.handle.restart()

    def kill(self) -> None:
        """SIGKILL the broker and everything it started, at once (no clean shutdown)."""
        self.handle.kill()

    def stop(self) -> None:
        self.handle.stop()

    def ctl(self, *args: str) -> str:
        plan = self.handle.plan
        assert plan is not None
        result = subprocess.run([str(RABBITMQ_HOME / "bin" / "rabbitmqctl"), "-n",
                                 plan.env["RABBITMQ_NODENAME"], *args],
                                env={**os.environ, **plan.env}, capture_output=True, text=True,
                                timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)}: {result.stderr or result.stdout}")
        return result.stdout


@pytest.fixture(scope="module")
def rabbit() -> Iterator[OwnRabbit]:
    reason: str | None = None
    try:
        handle = acquire_own("amqp")
    except BrokerUnavailable as exc:
        reason = str(exc)
    if reason is not None:
        unavailable(f"these tests start their own RabbitMQ: {reason}")
    broker = OwnRabbit(handle)
    try:
        broker.ctl("add_user", RO_USER, RO_PASSWORD)
        broker.ctl("set_permissions", "-p", "/", RO_USER, "", ".*", ".*")
        yield broker
    except BaseException:
        print(log_tail(broker.log_path, 80))
        raise
    finally:
        broker.stop()


async def make_driver(section: dict[str, Any], name: str, options: dict[str, Any],
                      queue: PriorityQueue) -> AMQPDriver:
    cfg = Config({"amqp": section,
                  "jobs": {"pipelines": {name: {"driver": "amqp", "config": options}}}})
    return await AMQPConstructor(cfg).driver_from_config(
        f"jobs.pipelines.{name}.config", queue, Pipeline(name=name, driver="amqp",
                                                         config=dict(options)))


def options(name: str, **extra: Any) -> dict[str, Any]:
    return {"queue": name, "routing_key": name, "exchange": "rrjobs.own", **extra}


# -- a user without the configure permission ----------------------------------------------


async def test_declare_false_works_for_a_read_write_only_user(rabbit: OwnRabbit,
                                                              unique_name: str) -> None:
    admin_q = PriorityQueue()
    admin = await make_driver({"addr": rabbit.url}, unique_name,
                              options(unique_name, durable=True), admin_q)  # declares
    ro_url = rabbit.url.replace("guest:guest", f"{RO_USER}:{RO_PASSWORD}")
    try:
        with pytest.raises(ConfigError, match="refused"):
            await make_driver({"addr": ro_url}, unique_name, options(unique_name, durable=True),
                              PriorityQueue())
        q = PriorityQueue()
        ro = await make_driver({"addr": ro_url}, unique_name, {
            "version": 2, "exchange": {"name": "rrjobs.own", "declare": False},
            "queue": {"name": unique_name, "routing_key": unique_name, "declare": False}}, q)
        try:
            await ro.run(ro.pipeline)
            await ro.push(Message("ro.job", b"no-configure", unique_name))
            (job,) = await take(q)
            assert job.payload == b"no-configure"
            await job.ack()
            state = await ro.state()
            assert (state.active, state.ready) == (0, True)
        finally:
            await ro.stop()
    finally:
        await admin.stop()
        connection = await aio_pika.connect(rabbit.url)
        async with connection:
            channel = await connection.channel()
            raw = await channel.get_underlay_channel()
            await raw.queue_delete(unique_name)


# -- the outage ---------------------------------------------------------------------------------


async def test_outage_every_confirmed_job_is_processed(rabbit: OwnRabbit, unique_name: str,
                                                       record_property: Any) -> None:
    total, batch = 5000, 50
    main, fragile = f"{unique_name}-main", f"{unique_name}-fragile"
    handled: list[str] = []
    fragile_handled: list[str] = []
    app = App("outage")

    @app.handler("outage.job")
    async def work(job: Job) -> None:
        handled.append(job.id)

    @app.handler("fragile.job")
    async def work_fragile(job: Job) -> None:
        fragile_handled.append(job.id)

    config = Config({
        "amqp": {"addr": rabbit.url},
        "jobs": {
            "consume": [main, fragile],
            "pool": {"num_workers": 8},
            "pipelines": {
                main: {"driver": "amqp", "config": options(
                    main, durable=True, exchange_durable=True, prefetch=100,
                    exchange="rrjobs.own.durable", redial_timeout=120)},
                fragile: {"driver": "amqp", "config": options(
                    fragile, durable=True, exchange_durable=True, redial_timeout=1,
                    exchange="rrjobs.own.durable")},
            },
        },
    })
    jobs = Jobs(config, app)
    await jobs.start()
    loop = asyncio.get_running_loop()
    restarted: asyncio.Future[float] | None = None
    try:
        driver = jobs._pipelines[main].driver
        fragile_driver = jobs._pipelines[fragile].driver
        assert isinstance(driver, AMQPDriver) and isinstance(fragile_driver, AMQPDriver)
        pushed: list[str] = []
        killed_at = 0
        started = time.monotonic()
        for i in range(0, total, batch):
            msgs = [Message("outage.job", f"{i + k}".encode(), main) for k in range(batch)]
            await jobs.push_batch(msgs)  # returns once RabbitMQ confirmed every job
            pushed.extend(m.id for m in msgs)
            if restarted is None and len(pushed) >= total // 2:
                killed_at = len(handled)
                rabbit.kill()
                # Restart in a thread; pushes meanwhile wait for the reconnection.
                restarted = loop.run_in_executor(None, rabbit.start)
        assert restarted is not None
        restart_seconds = await restarted
        await eventually(lambda: set(pushed) <= set(handled), within=180,
                         what="every confirmed job handled")
        elapsed = time.monotonic() - started
        duplicates = len(handled) - len(set(handled))
        lost = len(set(pushed) - set(handled))
        record_property("outage_processed", len(set(handled)))
        record_property("outage_duplicates", duplicates)
        record_property("outage_lost", lost)
        print(f"\noutage: pushed={len(pushed)} processed={len(set(handled))} "
              f"lost={lost} duplicates={duplicates} handled-before-kill={killed_at} "
              f"restart={restart_seconds:.1f}s total={elapsed:.1f}s "
              f"reconnects={driver.link.reconnects}")
        assert lost == 0
        assert len(pushed) == total and len(set(pushed)) == total
        # The main pipeline reconnected by itself: same driver, no restart asked.
        assert jobs._pipelines[main].driver is driver
        assert driver.link.reconnects >= 1 and not driver.restart_requested
        # The fragile one (redial_timeout 1 s) gave up and the runtime rebuilt it.
        assert fragile_driver.restart_requested
        await eventually(lambda: jobs._pipelines[fragile].driver is not fragile_driver
                         and not jobs._restarts, within=90, what="fragile pipeline rebuilt")
        await jobs.push(Message("fragile.job", b"after", fragile))
        await eventually(lambda: len(fragile_handled) == 1, within=30,
                         what="fragile pipeline consuming again")
        stats = {s.state.pipeline: s.state for s in await jobs.stat()}
        assert stats[main].ready and stats[fragile].ready
    finally:
        if restarted is not None and not restarted.done():
            with contextlib.suppress(Exception):
                await restarted
        await jobs.stop()
