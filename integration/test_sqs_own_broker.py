"""The ``sqs`` driver against an ElasticMQ this module starts and restarts itself.

ElasticMQ runs with its SQL (H2) message store and a queues file, so that queues
and messages survive a restart. The outage test pushes jobs while a runtime
consumes them, restarts ElasticMQ halfway (on the same port and store), and
checks that every job was processed at least once (duplicates are reported).
A second test deletes the queue under a running pipeline: the driver re-creates it.

Needs Java and ElasticMQ (``integration/install.sh``); without them these tests skip,
or fail with ``RRJOBS_REQUIRE_BROKERS=1``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiobotocore.session import get_session  # type: ignore[import-untyped,unused-ignore]

from integration.brokers.base import LOOPBACK, free_ports, stop_process_group, wait_ready
from integration.brokers.sqs import (
    ACCESS_KEY,
    REGION,
    SECRET_KEY,
    SqsElasticMqSpec,
    elasticmq_lib_dir,
    list_queues,
)
from integration.missing import unavailable
from rrjobs.config import Config
from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.runtime.app import App
from rrjobs.runtime.jobs import Jobs
from rrjobs.testing.harness import poll

pytestmark = [pytest.mark.sqs, pytest.mark.timeout(180)]


def _conf(port: int, store: Path) -> str:
    return f"""\
include classpath("application.conf")
node-address {{ protocol = http, host = "{LOOPBACK}", port = {port}, context-path = "" }}
rest-sqs {{ enabled = true, bind-port = {port}, bind-hostname = "{LOOPBACK}",
            sqs-limits = strict }}
generate-node-address = false
aws {{ region = {REGION}, accountId = "000000000000" }}
queues-storage {{ enabled = true, path = "{store / 'queues.conf'}" }}
messages-storage {{ enabled = true, uri = "jdbc:h2:{store / 'messages'}" }}
"""


class OwnElasticMQ:
    """An ElasticMQ with a persistent store, restartable on the same port."""

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        (self.port,) = free_ports(1)
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.conf = directory / "elasticmq.conf"
        self.conf.write_text(_conf(self.port, directory))
        self.log_path = directory / "elasticmq.log"
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        argv = ["java", "-Xms64m", "-Xmx256m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                f"-Dconfig.file={self.conf}", "-cp", f"{elasticmq_lib_dir()}/*",
                "org.elasticmq.server.Main"]
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, cwd=self.dir,
                                          start_new_session=True)
        proc = self.popen
        wait_ready("ElasticMQ (own)", lambda: list_queues(self.url), 120.0,
                   alive=lambda: proc.poll() is None, log_path=self.log_path)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            stop_process_group(self.popen.pid, self.popen)
        self.popen = None


@pytest.fixture(scope="module")
def elasticmq() -> Iterator[OwnElasticMQ]:
    reason = SqsElasticMqSpec().local_unavailable()
    if reason is not None:
        unavailable(reason)
    with tempfile.TemporaryDirectory(prefix="rrjobs-elasticmq-") as tmp:
        broker = OwnElasticMQ(Path(tmp))
        broker.start()
        try:
            yield broker
        finally:
            broker.stop()


def _config(url: str, name: str, **options: object) -> Config:
    return Config({
        "sqs": {"key": ACCESS_KEY, "secret": SECRET_KEY, "region": REGION, "endpoint": url},
        "jobs": {"pool": {"num_workers": 4},
                 "consume": [name],
                 "pipelines": {name: {"driver": "sqs", "config": {
                     "queue": name, "prefetch": 10, "max_messages_in_flight": 50,
                     "wait_time_seconds": 1, "visibility_timeout": 5, **options}}}},
    }, source="test")


async def test_broker_restart_mid_stream_loses_no_job(elasticmq: OwnElasticMQ,
                                                      unique_name: str) -> None:
    total = 400
    seen: dict[bytes, int] = {}
    done = asyncio.Event()

    app = App()

    @app.handler("outage")
    async def handle(job: Job) -> None:
        seen[job.payload] = seen.get(job.payload, 0) + 1
        if len(seen) >= total:
            done.set()

    jobs = Jobs(_config(elasticmq.url, unique_name), app)
    async with jobs:
        for i in range(0, total // 2, 20):
            await jobs.push_batch([Message("outage", f"{n}".encode(), unique_name)
                                   for n in range(i, i + 20)])
        await asyncio.to_thread(elasticmq.stop)
        await asyncio.to_thread(elasticmq.start)
        for i in range(total // 2, total, 20):
            await jobs.push_batch([Message("outage", f"{n}".encode(), unique_name)
                                   for n in range(i, i + 20)])
        async with asyncio.timeout(90):
            await done.wait()
    assert set(seen) == {f"{n}".encode() for n in range(total)}
    duplicates = sum(c - 1 for c in seen.values())
    print(f"outage: {total} jobs, {duplicates} duplicates")


async def test_deleted_queue_is_recreated(elasticmq: OwnElasticMQ, unique_name: str) -> None:
    got: list[bytes] = []
    arrived = asyncio.Event()
    app = App()

    @app.handler("again")
    async def handle(job: Job) -> None:
        got.append(job.payload)
        arrived.set()

    jobs = Jobs(_config(elasticmq.url, unique_name), app)
    async with jobs:
        session = get_session()
        async with session.create_client(
                "sqs", region_name=REGION, endpoint_url=elasticmq.url,
                aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY) as client:
            url = (await client.get_queue_url(QueueName=unique_name))["QueueUrl"]
            await client.delete_queue(QueueUrl=url)

            async def recreated() -> bool:
                with contextlib.suppress(Exception):
                    await client.get_queue_url(QueueName=unique_name)
                    return True
                return False

            assert await poll(recreated, 30, 0.2), "the driver never re-created the queue"
        await jobs.push(Message("again", b"after", unique_name))
        async with asyncio.timeout(30):
            await arrived.wait()
    assert got == [b"after"]
    assert os.environ.get("RRJOBS_SQS_ENDPOINT") != elasticmq.url
