"""Calm logs and honest readiness while a broker is down, on every broker driver.

Each test starts a broker of its own (the harness's launch plan, on a data directory and
ports that survive a restart), runs a runtime consuming one pipeline on it while jobs
flow, stops the broker, waits, starts it again, and checks what an operator sees:

* the records of rrjobs' loggers from the stop until the pipeline is ready again: one
  WARNING when the outage starts, naming the retry policy ("retrying every 0.1-5 s, the
  pipeline is restarted after 60 s of failures"), one INFO when it ends ("... works again
  after ..."), nothing else at INFO or above, no traceback (``exc_info``) on any record,
  and nothing from asyncio (a task or generator that failed on the way);
* ``Jobs.stat`` and the metrics' ``rr_jobs_pipeline_ready`` gauge: not ready during the
  outage, ready after it;
* no job lost: every job whose push was accepted is handled after the recovery;
* then a stop of the runtime while the broker is down again: within ``STOP_WITHIN``
  seconds, with nothing at ERROR and no traceback (rrjobs' or asyncio's).

RabbitMQ, Kafka and NATS are killed (SIGKILL) and started again on the same data; ElasticMQ
is stopped (SIGTERM: its H2 store keeps the messages only through a clean stop); the
Pub/Sub emulator keeps nothing across a restart, so its outage is a frozen process
(SIGSTOP, then SIGCONT): connections stay open and every call times out.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from integration.brokers.amqp import AmqpSpec
from integration.brokers.base import (
    BrokerSpec,
    LocalPlan,
    descendants,
    group_members,
    log_tail,
    wait_ready,
)
from integration.brokers.kafka import KafkaSpec
from integration.brokers.nats import NatsSpec
from integration.brokers.pubsub import PubSubSpec, project_id
from integration.brokers.sqs import ACCESS_KEY, REGION, SECRET_KEY, SqsElasticMqSpec
from integration.missing import unavailable
from integration.test_sqs_own_broker import OwnElasticMQ
from integration.waiting import eventually
from rrjobs.config import Config
from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.drivers.pubsub import driver as pubsub_driver
from rrjobs.metrics import new_registry
from rrjobs.runtime.app import App
from rrjobs.runtime.jobs import Jobs

pytestmark = [pytest.mark.timeout(240)]

#: How long each broker stays down.
OUTAGE = 3.0
#: The longest stop of a runtime while its broker is down (jobs.timeout is 10 s here).
STOP_WITHIN = 25.0
#: What the outage's WARNING says happens next (``rrjobs.core.outage``).
POLICY = re.compile(r"; (retrying|redialling|reconnecting) every [\d.]+(-[\d.]+)? s, the "
                    r"pipeline is restarted after ")


# -- brokers of our own ---------------------------------------------------------------------------


class OwnBroker:
    """One broker from the harness's launch plan, stopped and started on the same data
    directory and ports. ``how`` is the outage: ``"kill"`` (SIGKILL the process group and
    every descendant) or ``"freeze"`` (SIGSTOP, resumed by :meth:`start`)."""

    def __init__(self, spec: BrokerSpec, root: Path, how: str = "kill") -> None:
        self.spec, self.root, self.how = spec, root, how
        self.plan: LocalPlan = spec.plan_local(root)
        self.endpoint = self.plan.endpoint
        self.log_path = root / f"{spec.name}.log"
        self.popen: subprocess.Popen[bytes] | None = None
        self.frozen: list[int] = []
        if self.plan.prepare is not None:
            self.plan.prepare(self.log_path)

    def start(self) -> None:
        if self.frozen:
            for pid in self.frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGCONT)
            self.frozen = []
            return
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(self.plan.argv, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, cwd=self.root,
                                          env={**os.environ, **self.plan.env},
                                          start_new_session=True)
        proc = self.popen
        probe = self.plan.probe or (lambda: self.spec.probe(self.endpoint))
        wait_ready(f"{self.spec.title} (own)", probe, 120.0, alive=lambda: proc.poll() is None,
                   log_path=self.log_path)

    def _members(self) -> list[int]:
        assert self.popen is not None
        pgid = self.popen.pid
        return sorted(set(group_members(pgid)) | set(descendants([pgid])))

    def stop(self) -> None:
        """The outage: kill, or freeze."""
        assert self.popen is not None
        if self.how == "freeze":
            self.frozen = self._members()
            for pid in self.frozen:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGSTOP)
            return
        self.kill()

    def kill(self) -> None:
        if self.popen is None:
            return
        victims = self._members()
        for pid in victims:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.popen.wait(10)
        self.popen = None
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in victims) and \
                time.monotonic() < deadline:
            time.sleep(0.05)


@contextlib.contextmanager
def own(spec: BrokerSpec, how: str = "kill") -> Iterator[OwnBroker]:
    why = spec.local_unavailable()
    if why is not None:
        unavailable(f"this test starts its own {spec.title}: {why}")
    root = Path(tempfile.mkdtemp(prefix=f"rrjobs-outage-{spec.name}-"))
    broker = OwnBroker(spec, root, how)
    try:
        broker.start()
        yield broker
    except BaseException:
        print(log_tail(broker.log_path, 60))
        raise
    finally:
        if broker.frozen:  # resumed first: a stopped process cannot die before SIGCONT
            broker.start()
        broker.kill()
        shutil.rmtree(root, ignore_errors=True)


class ElasticMQ(OwnElasticMQ):
    """ElasticMQ with its persistent store; its outage is a clean stop."""

    @property
    def endpoint(self) -> str:
        return self.url


@contextlib.contextmanager
def own_elasticmq() -> Iterator[ElasticMQ]:
    why = SqsElasticMqSpec().local_unavailable()
    if why is not None:
        unavailable(why)
    with tempfile.TemporaryDirectory(prefix="rrjobs-outage-elasticmq-") as tmp:
        broker = ElasticMQ(Path(tmp))
        broker.start()
        try:
            yield broker
        finally:
            broker.stop()


# -- what the outage is checked with ---------------------------------------------------------


class Records(logging.Handler):
    """Every record of rrjobs' loggers, from INFO up."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@contextlib.contextmanager
def recording() -> Iterator[Records]:
    """rrjobs' records from INFO up, and asyncio's (a task or generator left failing)."""
    handler = Records()
    loggers = [logging.getLogger("rrjobs"), logging.getLogger("asyncio")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
    loggers[0].setLevel(logging.INFO)
    try:
        yield handler
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def shown(records: list[logging.LogRecord]) -> str:
    return "\n".join(f"  {r.levelname} {r.name}: {r.getMessage()}"
                     + (" [with traceback]" if r.exc_info else "") for r in records)


@dataclass
class Flow:
    """Jobs pushed by id, and the ids handled."""

    pushed: set[str] = field(default_factory=set)
    handled: set[str] = field(default_factory=set)


async def ready(jobs: Jobs) -> bool:
    (stat,) = await jobs.stat(state_timeout=2.0)
    return stat.state.ready


def ready_gauge(jobs: Jobs, registry: Any) -> float | None:
    return registry.get_sample_value(
        "rr_jobs_pipeline_ready", {"pipeline": PIPELINE, "driver": jobs.entries()[0]
                                  .pipeline.driver()})


PIPELINE = "outage"


async def check_outage(config: Config, broker: Any, *, total: int = 300) -> None:
    """The outage, and every check of the module's docstring."""
    flow = Flow()
    app = App("outage")

    @app.handler("outage.job")
    async def work(job: Job) -> None:
        await asyncio.sleep(0.005)  # jobs are still flowing when the broker goes
        flow.handled.add(job.id)

    async def push(count: int, tag: str) -> None:
        msgs = [Message("outage.job", f"{tag}{i}".encode(), PIPELINE) for i in range(count)]
        for start in range(0, count, 50):
            chunk = msgs[start:start + 50]
            await jobs.push_batch(chunk)
            flow.pushed.update(m.id for m in chunk)

    jobs = Jobs(config, app)
    registry, collector = new_registry(jobs, process=False)

    async def gauge() -> float | None:
        collector.set_states(await jobs.stat(state_timeout=2.0))
        return ready_gauge(jobs, registry)

    await jobs.start()
    try:
        assert await ready(jobs) and await gauge() == 1.0
        await push(total, "before-")
        await eventually(lambda: len(flow.handled) >= total // 10, 60, "jobs flowing")
        with recording() as log:
            await asyncio.to_thread(broker.stop)
            stopped = time.monotonic()
            await eventually(lambda: not_ready(jobs), 30, "stat not ready in the outage")
            assert await gauge() == 0.0, "the metrics say ready in the outage"
            await asyncio.sleep(max(0.0, OUTAGE - (time.monotonic() - stopped)))
            assert not await ready(jobs), "stat ready again while the broker is down"
            await asyncio.to_thread(broker.start)
            await eventually(lambda: ready(jobs), 90, "stat ready after the outage")
            assert await gauge() == 1.0, "the metrics say not ready after the outage"
            await push(total // 3, "after-")
            await eventually(lambda: flow.pushed <= flow.handled, 90,
                             "every accepted job handled after the outage")
            await asyncio.sleep(0.5)  # what the recovery still logs
        check_calm(log.records)
        print(f"\noutage of {OUTAGE:.0f}s: {len(flow.pushed)} jobs, all handled\n"
              f"{shown(log.records)}")

        # Stopping while the broker is down: bounded, and no ERROR, no traceback.
        await push(total // 3, "last-")
        await asyncio.to_thread(broker.stop)
        await eventually(lambda: not_ready(jobs), 30, "stat not ready in the second outage")
        with recording() as log:
            began = time.monotonic()
            await jobs.stop()
            took = time.monotonic() - began
            gc.collect()  # an async generator left suspended is finalised (and logs) now
            await asyncio.sleep(0.1)
        loud = [r for r in log.records if r.levelno >= logging.ERROR or r.exc_info]
        assert not loud, f"the stop in an outage was loud:\n{shown(log.records)}"
        assert took < STOP_WITHIN, f"the stop in an outage took {took:.1f}s"
        print(f"stop in an outage: {took:.1f}s\n{shown(log.records)}")
    finally:
        await jobs.stop()


def check_calm(got: list[logging.LogRecord]) -> None:
    """One WARNING with the retry policy, one INFO on recovery, no traceback, nothing
    from asyncio."""
    every = shown(got)
    records = [r for r in got if r.name.startswith("rrjobs")]
    assert not [r for r in got if r.name.startswith("asyncio")
                and r.levelno >= logging.WARNING], f"asyncio logged:\n{every}"
    assert not [r for r in records if r.exc_info], f"a traceback was logged:\n{every}"
    warnings = [r for r in records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, f"expected one WARNING:\n{every}"
    assert warnings[0].levelno == logging.WARNING, every
    assert POLICY.search(warnings[0].getMessage()), every
    infos = [r for r in records if r.levelno == logging.INFO]
    assert len(infos) == 1 and " again after " in infos[0].getMessage(), \
        f"expected one INFO on recovery:\n{every}"
    assert records.index(warnings[0]) < records.index(infos[0]), every


async def not_ready(jobs: Jobs) -> bool:
    return not await ready(jobs)


# -- per broker --------------------------------------------------------------------------------


@pytest.mark.amqp
async def test_amqp_outage_is_calm_and_honest() -> None:
    with own(AmqpSpec()) as broker:
        await check_outage(Config({
            "amqp": {"addr": broker.endpoint},
            "jobs": {"consume": [PIPELINE], "timeout": 10,
                     "pool": {"num_workers": 8, "destroy_timeout": 2},
                     "pipelines": {PIPELINE: {"driver": "amqp", "config": {
                         "queue": PIPELINE, "routing_key": PIPELINE, "durable": True,
                         "exchange_durable": True, "exchange": "rrjobs.outage",
                         "prefetch": 50}}}},
        }, source="test"), broker)


@pytest.mark.kafka
async def test_kafka_outage_is_calm_and_honest() -> None:
    with own(KafkaSpec()) as broker:
        await check_outage(Config({
            "kafka": {"brokers": [broker.endpoint]},
            "jobs": {"consume": [PIPELINE], "timeout": 10,
                     "pool": {"num_workers": 8, "destroy_timeout": 2},
                     "pipelines": {PIPELINE: {"driver": "kafka", "config": {
                         "auto_create_topics_enable": True,
                         "consumer_options": {"topics": [PIPELINE]},
                         "group_options": {"group_id": PIPELINE, "session_timeout": "6s",
                                           "heartbeat_interval": "500ms",
                                           "commit_interval": "100ms"},
                         "prefetch": 50}}}},
        }, source="test"), broker)


@pytest.mark.nats
async def test_nats_outage_is_calm_and_honest() -> None:
    with own(NatsSpec()) as broker:
        await check_outage(Config({
            "nats": {"addr": broker.endpoint},
            "jobs": {"consume": [PIPELINE], "timeout": 10,
                     "pool": {"num_workers": 8, "destroy_timeout": 2},
                     "pipelines": {PIPELINE: {"driver": "nats", "config": {
                         "stream": PIPELINE, "subject": f"{PIPELINE}.jobs", "prefetch": 50,
                         "ack_wait": "3s", "delete_after_ack": True}}}},
        }, source="test"), broker)


@pytest.mark.sqs
async def test_sqs_outage_is_calm_and_honest() -> None:
    with own_elasticmq() as broker:
        await check_outage(Config({
            "sqs": {"key": ACCESS_KEY, "secret": SECRET_KEY, "region": REGION,
                    "endpoint": broker.url},
            "jobs": {"consume": [PIPELINE], "timeout": 10,
                     "pool": {"num_workers": 8, "destroy_timeout": 2},
                     "pipelines": {PIPELINE: {"driver": "sqs", "config": {
                         "queue": PIPELINE, "prefetch": 10, "max_messages_in_flight": 50,
                         "wait_time_seconds": 1, "visibility_timeout": 5}}}},
        }, source="test"), broker)


@pytest.mark.pubsub
async def test_pubsub_outage_is_calm_and_honest(monkeypatch: pytest.MonkeyPatch) -> None:
    # A frozen emulator answers no call: each one waits for its deadline, 30 s in the
    # driver; 2 s here, so that the outage shows within seconds.
    monkeypatch.setattr(pubsub_driver, "CALL_TIMEOUT", 2.0)
    with own(PubSubSpec(), how="freeze") as broker:
        await check_outage(Config({
            "google_pub_sub": {"endpoint": broker.endpoint, "insecure": True},
            "jobs": {"consume": [PIPELINE], "timeout": 10,
                     "pool": {"num_workers": 8, "destroy_timeout": 2},
                     "pipelines": {PIPELINE: {"driver": "google_pub_sub", "config": {
                         "project_id": project_id(), "topic": PIPELINE, "ack_deadline": 10,
                         "prefetch": 50}}}},
        }, source="test"), broker)
