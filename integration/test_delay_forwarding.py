"""Kafka and NATS delayed jobs reach their topic or stream with no rrjobs consumer: forwarded
by a runtime that declares the pipeline (consuming nothing, or paused) and by ``rrjobs
forward`` as a subprocess, read back with the broker's own client as RoadRunner reads them,
never before their delay (docs/roadrunner.md, "Delayed jobs")."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml
from aiokafka import AIOKafkaConsumer  # type: ignore[import-untyped]

from integration.kafka_helpers import GROUP
from rrjobs.config import Config
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.drivers.kafka import KafkaConstructor
from rrjobs.drivers.nats import NATSConstructor
from rrjobs.runtime.app import App
from rrjobs.runtime.jobs import Jobs

pytestmark = pytest.mark.timeout(120)

DELAY = 2.0
#: a forwarder joins its group or binds its consumer first: "on time" is within this
SLACK = 15.0
#: how long duplicates are waited for once every job arrived
QUIET = 2.0

Arrival = tuple[float, bytes, dict[str, bytes]]  # seconds after the push, body, headers


class Broker:
    """One broker: a pipeline's config and a RoadRunner-side reader of its topic or stream."""

    kind = ""

    def config(self, name: str, consume: bool = False) -> dict[str, Any]:
        raise NotImplementedError

    async def arrival(self, name: str, pushed: float) -> Arrival:
        raise NotImplementedError

    async def ids(self, name: str, want: int) -> list[str]:
        """The ids of the jobs in the topic or stream once ``want`` arrived, and
        :data:`QUIET` seconds later (duplicates arrive too)."""
        raise NotImplementedError

    async def cleanup(self, name: str) -> None:
        """Remove what the test left on the broker."""

    def check_layout(self, name: str, msg: Message, body: bytes,
                     headers: dict[str, bytes]) -> None:
        raise NotImplementedError


class Kafka(Broker):
    kind = "kafka"

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap

    def config(self, name: str, consume: bool = False) -> dict[str, Any]:
        options = {"auto_create_topics_enable": True, "consumer_options": {"topics": [name]},
                   "group_options": {"group_id": name, **GROUP}}
        return {"kafka": {"brokers": [self.bootstrap]},
                "jobs": {"consume": [name] if consume else [],
                         "pipelines": {name: {"driver": "kafka", "config": options}}}}

    async def arrival(self, name: str, pushed: float) -> Arrival:
        consumer = AIOKafkaConsumer(name, bootstrap_servers=self.bootstrap,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        try:
            async with asyncio.timeout(DELAY + SLACK):
                record = await consumer.getone()
            seen = time.time() - pushed
        finally:
            await consumer.stop()
        # the record's own time: when the forwarder produced it
        assert record.timestamp / 1000 - pushed >= DELAY - 0.002
        return seen, record.value, {k: v for k, v in record.headers}

    async def ids(self, name: str, want: int) -> list[str]:
        consumer = AIOKafkaConsumer(name, bootstrap_servers=self.bootstrap,
                                    auto_offset_reset="earliest", enable_auto_commit=False)
        await consumer.start()
        got: list[str] = []
        try:
            async with asyncio.timeout(DELAY + SLACK):
                while len(got) < want:
                    got += await self._keys(consumer)
            quiet = time.monotonic() + QUIET
            while time.monotonic() < quiet:
                got += await self._keys(consumer)
        finally:
            await consumer.stop()
        return got

    @staticmethod
    async def _keys(consumer: Any) -> list[str]:
        batch = await consumer.getmany(timeout_ms=200)
        return [r.key.decode() for records in batch.values() for r in records]

    def check_layout(self, name: str, msg: Message, body: bytes,
                     headers: dict[str, bytes]) -> None:
        assert body == msg.payload
        assert headers["rr_job"] == msg.name.encode()
        assert headers["rr_pipeline"] == name.encode()
        assert headers["origin"] == b"php"
        assert not {"rr_due", "rr_target_topic"} & set(headers)


class Nats(Broker):
    kind = "nats"

    def __init__(self, url: str) -> None:
        self.url = url

    def config(self, name: str, consume: bool = False) -> dict[str, Any]:
        return {"nats": {"addr": self.url},
                "jobs": {"consume": [name] if consume else [], "pipelines": {
                    name: {"driver": "nats",
                           "config": {"stream": name, "subject": f"{name}.jobs"}}}}}

    async def arrival(self, name: str, pushed: float) -> Arrival:
        nc = await nats.connect(self.url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            js = nc.jetstream()
            async with asyncio.timeout(DELAY + SLACK):
                while True:
                    if (await js.stream_info(name)).state.messages:
                        break
                    await asyncio.sleep(0.02)
            seen = time.time() - pushed
            stored = await js.get_msg(name, 1)
        finally:
            await nc.close()
        return seen, stored.data or b"", {k: v.encode() for k, v in (stored.headers or {}).items()}

    async def ids(self, name: str, want: int) -> list[str]:
        nc = await nats.connect(self.url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            js = nc.jetstream()
            async with asyncio.timeout(DELAY + SLACK):
                while True:
                    if (await js.stream_info(name)).state.messages >= want:
                        break
                    await asyncio.sleep(0.05)
            await asyncio.sleep(QUIET)
            count = (await js.stream_info(name)).state.messages
            return [json.loads((await js.get_msg(name, seq)).data or b"{}")["id"]
                    for seq in range(1, count + 1)]
        finally:
            await nc.close()

    def check_layout(self, name: str, msg: Message, body: bytes,
                     headers: dict[str, bytes]) -> None:
        assert json.loads(body) == {
            "job": msg.name, "id": msg.id, "payload": base64.b64encode(msg.payload).decode(),
            "options": {"priority": 10, "pipeline": name, "auto_ack": False, "Queue": ""}}
        assert headers["origin"] == b"php"
        assert "rr_due" not in headers

    async def cleanup(self, name: str) -> None:
        nc = await nats.connect(self.url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            js = nc.jetstream()
            for stream in (name, f"{name}-rrjobs-delayed"):
                with contextlib.suppress(Exception):
                    await js.delete_stream(stream)
        finally:
            await nc.close()


@pytest.fixture(params=[pytest.param("kafka", marks=pytest.mark.kafka),
                        pytest.param("nats", marks=pytest.mark.nats)])
async def broker(request: pytest.FixtureRequest, unique_name: str) -> AsyncIterator[Broker]:
    made: Broker = (Kafka(request.getfixturevalue("kafka_bootstrap"))
                    if request.param == "kafka" else Nats(request.getfixturevalue("nats_url")))
    try:
        yield made
    finally:
        await made.cleanup(unique_name)


def delayed(name: str) -> Message:
    return Message("app.Later", b"due later", name, delay=DELAY, headers={"origin": ["php"]})


async def check_forwarded(broker: Broker, name: str, push: Callable[[Message], Awaitable[Any]],
                          ) -> None:
    """``push`` a delayed job: it reaches the topic or stream after its delay, in RR's layout."""
    msg = delayed(name)
    pushed = time.time()
    await push(msg)
    seen, body, headers = await broker.arrival(name, pushed)
    assert DELAY <= seen <= DELAY + SLACK
    broker.check_layout(name, msg, body, headers)


@contextlib.asynccontextmanager
async def runtime(config: dict[str, Any]) -> AsyncIterator[Jobs]:
    jobs = Jobs(Config(config, source="test"), App("forwarding"))
    await jobs.start()
    try:
        yield jobs
    finally:
        await jobs.stop()


async def test_a_server_that_consumes_nothing_forwards(broker: Broker, unique_name: str) -> None:
    async with runtime(broker.config(unique_name)) as jobs:
        await check_forwarded(broker, unique_name, jobs.push)


async def test_a_paused_pipeline_keeps_forwarding(broker: Broker, unique_name: str) -> None:
    async with runtime(broker.config(unique_name, consume=True)) as jobs:
        await jobs.pause([unique_name])
        await check_forwarded(broker, unique_name, jobs.push)


async def test_rrjobs_forward_forwards_what_a_bare_producer_pushed(
        broker: Broker, unique_name: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """A producer that never forwards (a driver built without a runtime) warns once; ``rrjobs
    forward`` in another process moves its delayed job when it is due."""
    name = unique_name
    config = broker.config(name)
    path = tmp_path / "rr.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    log = tmp_path / "forward.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "rrjobs.cli", "forward", "-c", str(path), "--pipeline", name,
            stdout=out, stderr=asyncio.subprocess.STDOUT)
    try:
        async with asyncio.timeout(30):
            while b"rrjobs forwarding delayed jobs of 1 pipelines" not in log.read_bytes():
                assert proc.returncode is None, log.read_text(errors="replace")
                await asyncio.sleep(0.1)
        ctor = (KafkaConstructor if broker.kind == "kafka" else NATSConstructor)(
            Config(config, source="test"))
        pipe = Pipeline(name=name, driver=broker.kind,
                        config=dict(config["jobs"]["pipelines"][name]["config"]))
        driver = await ctor.driver_from_config(f"jobs.pipelines.{name}.config",
                                               PriorityQueue(), pipe)
        try:
            with caplog.at_level(logging.WARNING, logger=f"rrjobs.drivers.{broker.kind}"):
                await check_forwarded(broker, name, driver.push)
                await driver.push(delayed(name))  # warned once only
            warned = [r.getMessage() for r in caplog.records if "rrjobs forward" in r.getMessage()]
            assert len(warned) == 1 and "this one does not" in warned[0]
        finally:
            await driver.stop()
    finally:
        if proc.returncode is None:
            proc.terminate()
        async with asyncio.timeout(30):
            assert await proc.wait() == 0, log.read_text(errors="replace")


async def test_two_servers_forward_each_job_once(broker: Broker, unique_name: str) -> None:
    """Two servers declaring the pipeline (neither consuming it) share the forwarding: every
    delayed job reaches the topic or stream once."""
    config = broker.config(unique_name)
    async with runtime(config) as first, runtime(config) as second:
        msgs = [delayed(unique_name) for _ in range(20)]
        pushed = time.time()
        await first.push_batch(msgs[:10])
        await second.push_batch(msgs[10:])
        ids = await broker.ids(unique_name, len(msgs))
        assert time.time() - pushed >= DELAY + QUIET
    assert sorted(ids) == sorted(m.id for m in msgs)
