"""The ``google_pub_sub`` driver's own guarantees against Google's Pub/Sub emulator:
RoadRunner's attribute layout, RoadRunner's ``rr_delay``, delays beyond the 600 s
ack-deadline limit, unreadable messages, auto_ack on stop, existing subscriptions,
dead-lettering (explicit and the native policy), and what
happens when the subscription disappears (the emulator restarted: it keeps nothing)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped,unused-ignore]
import pytest
from google.api_core import exceptions as gexc
from google.pubsub_v1 import PublisherAsyncClient, PubsubMessage, SubscriberAsyncClient
from google.pubsub_v1.services.publisher.transports import PublisherGrpcAsyncIOTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcAsyncIOTransport
from google.pubsub_v1.types import ReceivedMessage

from integration.brokers.base import LOOPBACK, free_ports, stop_process_group, wait_ready
from integration.brokers.pubsub import find_emulator, root_ok
from integration.missing import unavailable
from rrjobs.config import Config
from rrjobs.core.errors import ConfigError
from rrjobs.core.headers import RR_ERROR, UNREADABLE
from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.drivers.pubsub import PubSubConstructor, PubSubDriver, PubSubJob, codec
from rrjobs.drivers.pubsub.codec import attributes
from rrjobs.drivers.pubsub.driver import FORGET_AFTER

pytestmark = [pytest.mark.pubsub, pytest.mark.timeout(120)]


class Admin:
    """Raw GAPIC clients on the emulator, for what the test does from outside."""

    def __init__(self, host: str, project: str) -> None:
        self.project = project
        self.channel = grpc.aio.insecure_channel(host)
        self.pub = PublisherAsyncClient(
            transport=PublisherGrpcAsyncIOTransport(channel=self.channel))
        self.sub = SubscriberAsyncClient(
            transport=SubscriberGrpcAsyncIOTransport(channel=self.channel))

    def topic(self, name: str) -> str:
        return f"projects/{self.project}/topics/{name}"

    def subscription(self, name: str) -> str:
        return f"projects/{self.project}/subscriptions/{name}"

    async def tap(self, topic: str, name: str) -> str:
        """A subscription of its own on ``topic``: it sees every message published."""
        path = self.subscription(name)
        await self.sub.create_subscription(name=path, topic=self.topic(topic),
                                           ack_deadline_seconds=60)
        return path

    async def pull(self, subscription: str, n: int = 1, within: float = 15.0
                   ) -> list[ReceivedMessage]:
        got: list[ReceivedMessage] = []
        async with asyncio.timeout(within):
            while len(got) < n:
                with contextlib.suppress(gexc.DeadlineExceeded):
                    response = await self.sub.pull(subscription=subscription,
                                                   max_messages=n - len(got), timeout=2)
                    got += response.received_messages
        await self.sub.acknowledge(subscription=subscription, ack_ids=[r.ack_id for r in got])
        return got

    async def publish(self, topic: str, data: bytes, attrs: dict[str, str]) -> None:
        await self.pub.publish(topic=self.topic(topic),
                               messages=[PubsubMessage(data=data, attributes=attrs)])


class Node:
    def __init__(self, driver: PubSubDriver, queue: PriorityQueue) -> None:
        self.driver = driver
        self.queue = queue

    async def take(self, within: float = 15.0) -> PubSubJob:
        async with asyncio.timeout(within):
            job = await self.queue.extract_min()
        assert isinstance(job, PubSubJob)
        return job

    async def nothing(self, within: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                job: Job = await self.queue.extract_min()
                raise AssertionError(f"unexpected job {job!r}")


@pytest.fixture
async def admin(pubsub_emulator_host: str, pubsub_project: str) -> AsyncIterator[Admin]:
    a = Admin(pubsub_emulator_host, pubsub_project)
    yield a
    await a.channel.close()


@pytest.fixture
async def nodes(pubsub_emulator_host: str, pubsub_project: str
                ) -> AsyncIterator[Callable[..., Any]]:
    made: list[PubSubDriver] = []

    async def make(name: str, *, run: bool = True, host: str = pubsub_emulator_host,
                   **options: Any) -> Node:
        config = Config({"google_pub_sub": {"endpoint": host, "insecure": True}, "jobs": {}},
                        source="test")
        queue = PriorityQueue()
        pipeline = Pipeline(name=name, driver="google_pub_sub",
                            config={"project_id": pubsub_project, "topic": name, **options})
        driver = await PubSubConstructor(config).driver_from_pipeline(pipeline, queue)
        made.append(driver)
        if run:
            await driver.run(pipeline)
        return Node(driver, queue)

    yield make
    for driver in reversed(made):
        await driver.stop()
    # The emulator keeps everything in memory: delete what the tests made.
    admin = Admin(pubsub_emulator_host, pubsub_project)
    try:
        for path in await _made_by(admin, {d.options.topic for d in made}):
            with contextlib.suppress(gexc.GoogleAPICallError):
                if "/subscriptions/" in path:
                    await admin.sub.delete_subscription(subscription=path)
                else:
                    await admin.pub.delete_topic(topic=path)
    finally:
        await admin.channel.close()


async def _made_by(admin: Admin, topics: set[str]) -> list[str]:
    """The subscriptions, then the topics, whose id starts with one of ``topics``."""
    project = f"projects/{admin.project}"
    subs = [s.name async for s in await admin.sub.list_subscriptions(project=project)]
    tops = [t.name async for t in await admin.pub.list_topics(project=project)]
    return [p for p in subs + tops if any(p.rsplit("/", 1)[1].startswith(t) for t in topics)]


# -- RoadRunner's wire format --------------------------------------------------------------


async def test_push_writes_roadrunners_attribute_layout(nodes: Callable[..., Any], admin: Admin,
                                                        unique_name: str) -> None:
    node = await nodes(unique_name, run=False)
    tap = await admin.tap(unique_name, f"{unique_name}-tap")
    msg = Message("app.Job", b"\x00body\xff", unique_name, id="job-1", priority=4,
                  headers={"a": ["1", "2"], "trace": ["t"]}, delay=1.5)
    await node.driver.push(msg)
    (got,) = await admin.pull(tap)
    assert got.message.data == b"\x00body\xff"
    attrs = dict(got.message.attributes)
    assert json.loads(attrs.pop("rr_headers")) == {"a": ["1", "2"], "trace": ["t"]}
    assert attrs == {"rr_id": "job-1", "rr_job": "app.Job", "rr_delay": "2",
                     "rr_priority": "4", "rr_auto_ack": "false"}


async def test_roadrunners_rr_delay_is_honoured_from_the_publish_time(
        nodes: Callable[..., Any], admin: Admin, unique_name: str) -> None:
    node = await nodes(unique_name)
    start = time.monotonic()
    await admin.publish(unique_name, b"from-rr",
                        attributes("rr-1", "php.Job", {}, 10, 2, False))
    job = await node.take(within=10)
    assert time.monotonic() - start >= 2 - 0.05
    assert (job.id, job.name, job.payload) == ("rr-1", "php.Job", b"from-rr")
    await job.ack()


# -- delays ------------------------------------------------------------------------------------


def count_pulled(driver: PubSubDriver) -> list[str]:
    """Record the ``rr_id`` of every message the driver's loop pulls."""
    pulled: list[str] = []
    pull = driver._pull

    async def counting(max_messages: int) -> Any:
        response = await pull(max_messages)
        pulled.extend(r.message.attributes.get("rr_id", "") for r in response.received_messages)
        return response

    driver._pull = counting  # type: ignore[method-assign]
    return pulled


async def test_a_delay_beyond_600s_is_parked_for_600s_not_republished(
        nodes: Callable[..., Any], admin: Admin, unique_name: str) -> None:
    """Pulled early with more than the 600 s deadline limit left, the job's ack
    deadline is set to 600 s: it is pulled once, not copied, and not seen again
    (no pull/republish loop for the length of the delay)."""
    node = await nodes(unique_name, run=False)
    tap = await admin.tap(unique_name, f"{unique_name}-tap")
    pulled = count_pulled(node.driver)
    await node.driver.push(Message("long", b"later", unique_name, id="long-1", delay=3600))
    await node.driver.run(node.driver.pipeline)
    (original,) = await admin.pull(tap, 1)
    assert original.message.attributes["rr_delay"] == "3600"
    await node.nothing(1.5)
    assert pulled == ["long-1"]
    with pytest.raises(TimeoutError):  # no copy was published
        await admin.pull(tap, 1, within=1.0)
    state = await node.driver.state()
    assert (state.delayed, state.active, state.reserved) == (1, 0, 0)


async def test_a_long_delay_near_max_delivery_attempts_is_republished_with_the_time_left(
        nodes: Callable[..., Any], admin: Admin, unique_name: str) -> None:
    """With a native dead-letter policy, a parked job whose delivery attempt nears
    ``max_delivery_attempts`` is published again with the remaining delay (its
    attempts start over) and the original acknowledged."""
    node = await nodes(unique_name, run=False, dead_letter_topic=f"{unique_name}-dlq",
                       max_delivery_attempts=5)
    tap = await admin.tap(unique_name, f"{unique_name}-tap")
    await node.driver.push(Message("long", b"later", unique_name, delay=3600))
    sub = admin.subscription(unique_name)
    for attempt in (1, 2, 3):  # three deliveries nobody kept
        async with asyncio.timeout(15):
            received: list[ReceivedMessage] = []
            while not received:
                received = list((await admin.sub.pull(subscription=sub, max_messages=1,
                                                      timeout=2)).received_messages)
        assert received[0].delivery_attempt == attempt
        await admin.sub.modify_ack_deadline(subscription=sub, ack_ids=[received[0].ack_id],
                                            ack_deadline_seconds=0)
    await node.driver.run(node.driver.pipeline)  # pulls attempt 4 of 5
    original, copy = await admin.pull(tap, 2)
    assert original.message.attributes["rr_delay"] == "3600"
    assert copy.message.attributes["rr_id"] == original.message.attributes["rr_id"]
    assert 3590 <= int(copy.message.attributes["rr_delay"]) <= 3600
    assert copy.message.data == b"later"
    state = await node.driver.state()
    assert (state.delayed, state.active, state.reserved) == (1, 0, 0)
    await node.nothing(0.5)


async def test_stale_delayed_entries_are_pruned_without_state(
        nodes: Callable[..., Any], unique_name: str) -> None:
    node = await nodes(unique_name, run=False)
    node.driver._prune_at = 10
    stale = time.time() - 2 * FORGET_AFTER
    node.driver._delayed.update({f"old-{i}": stale for i in range(20)})
    await node.driver.push(Message("later", b"x", unique_name, id="new-1", delay=60))
    assert list(node.driver._delayed) == ["new-1"]


# -- robustness ---------------------------------------------------------------------------------


async def test_an_unreadable_message_is_a_failed_job_and_the_loop_goes_on(
        nodes: Callable[..., Any], admin: Admin, unique_name: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A 400-digit ``rr_delay`` is clamped; a message whose decoding fails anyway is
    delivered as a failed job (``rrjobs.unreadable``, ``rr_error``, the raw data) whose
    nack acknowledges it (no dead_letter_topic); the loop goes on with the next ones."""
    decode = codec.decode

    def failing(attrs: Any, priority: int) -> codec.Decoded:
        if "boom" in attrs:
            raise RuntimeError("unreadable")
        return decode(attrs, priority)

    monkeypatch.setattr(codec, "decode", failing)
    node = await nodes(unique_name)
    await admin.publish(unique_name, b"huge", {**attributes("huge-1", "j", {}, 10, 0, False),
                                               "rr_delay": "9" * 400})
    await admin.publish(unique_name, b"boom", {"boom": "1"})
    await admin.publish(unique_name, b"fine", attributes("fine-1", "j", {}, 10, 0, False))
    got: dict[bytes, Job] = {}
    for _ in range(2):
        async with asyncio.timeout(15):
            job = await node.queue.extract_min()
        got[job.payload] = job
    bad, fine = got[b"boom"], got[b"fine"]
    assert bad.name == UNREADABLE and "RuntimeError: unreadable" in bad.headers[RR_ERROR][0]
    await fine.ack()
    await bad.nack()
    await node.driver.push(Message("j", b"after", unique_name))
    job = await node.take()
    assert job.payload == b"after"
    await job.ack()
    assert node.driver.supervisor.running("fetch") and node.driver.ready
    assert "huge-1" in node.driver._delayed  # parked, clamped to codec.MAX_DELAY


# -- auto_ack ---------------------------------------------------------------------------------


async def test_auto_ack_jobs_not_handed_out_go_back_to_the_broker_on_stop(
        nodes: Callable[..., Any], unique_name: str) -> None:
    """An auto_ack job is acknowledged when a handler takes it (the worker pool
    acks it first), not when pulled: stop gives a queued one back."""
    first = await nodes(unique_name)
    await first.driver.push(Message("auto", b"a", unique_name, id="auto-1", auto_ack=True))
    for _ in range(750):  # pulled into the priority queue, no handler took it
        if first.queue.count(unique_name):
            break
        await asyncio.sleep(0.02)
    assert first.queue.count(unique_name) == 1
    await first.driver.stop()
    second = await nodes(unique_name)
    job = await second.take()
    assert (job.id, job.auto_ack) == ("auto-1", True)
    await job.ack()


# -- existing subscriptions -----------------------------------------------------------------


async def test_an_existing_subscription_is_checked_against_options_set_explicitly(
        nodes: Callable[..., Any], unique_name: str) -> None:
    """An existing subscription is never modified: an ack_deadline or a dead-letter
    policy set explicitly that it does not have is refused, naming the key."""
    await nodes(unique_name, run=False, ack_deadline=60)
    await nodes(unique_name, run=False)  # nothing set: reused as it is
    await nodes(unique_name, run=False, ack_deadline=60)
    with pytest.raises(ConfigError) as info:
        await nodes(unique_name, run=False, ack_deadline=30)
    assert info.value.path == f"declare.{unique_name}.ack_deadline"
    dlt = f"{unique_name}-dlq"
    with pytest.raises(ConfigError) as info:
        await nodes(unique_name, run=False, dead_letter_topic=dlt, max_delivery_attempts=5)
    assert info.value.path == f"declare.{unique_name}.max_delivery_attempts"
    with pytest.raises(ConfigError) as info:  # the default policy (10) is not there either
        await nodes(unique_name, run=False, dead_letter_topic=dlt)
    assert info.value.path == f"declare.{unique_name}.max_delivery_attempts"
    await nodes(unique_name, run=False, dead_letter_topic=dlt, max_delivery_attempts=0)

    other = f"{unique_name}-p"
    node = await nodes(other, run=False, dead_letter_topic=dlt, max_delivery_attempts=7)
    assert node.driver.max_attempts == 7
    again = await nodes(other, run=False)
    assert again.driver.max_attempts == 7  # read from the subscription
    with pytest.raises(ConfigError) as info:
        await nodes(other, run=False, dead_letter_topic=dlt, max_delivery_attempts=9)
    assert info.value.path == f"declare.{other}.max_delivery_attempts"
    with pytest.raises(ConfigError) as info:
        await nodes(other, run=False, dead_letter_topic=f"{unique_name}-dl2",
                    max_delivery_attempts=7)
    assert info.value.path == f"declare.{other}.dead_letter_topic"


# -- dead letters ------------------------------------------------------------------------------


async def test_nack_publishes_to_the_dead_letter_topic_with_the_job_attributes(
        nodes: Callable[..., Any], admin: Admin, unique_name: str) -> None:
    dlt = f"{unique_name}-dlq"
    node = await nodes(unique_name, dead_letter_topic=dlt)
    await node.driver.push(Message("bad", b"poison", unique_name, id="p-1",
                                   headers={"h": ["v"]}))
    job = await node.take()
    await job.nack()
    (dead,) = await admin.pull(admin.subscription(dlt))
    assert dead.message.data == b"poison"
    attrs = dict(dead.message.attributes)
    assert (attrs["rr_id"], attrs["rr_job"], json.loads(attrs["rr_headers"])) == (
        "p-1", "bad", {"h": ["v"]})
    # the dead-letter headers are attributes of their own (1024 bytes each)
    assert (attrs["rr_attempts"], attrs["rr_original_pipeline"]) == ("1", unique_name)
    assert attrs["rr_failed_at"].endswith("Z")
    await node.nothing(1.0)


async def test_native_dead_letter_policy_after_max_delivery_attempts(
        nodes: Callable[..., Any], admin: Admin, unique_name: str) -> None:
    """Supported by the emulator: after 5 deliveries (nack with requeue each time),
    Pub/Sub itself moves the message to the dead-letter topic."""
    dlt = f"{unique_name}-dlq"
    node = await nodes(unique_name, dead_letter_topic=dlt, max_delivery_attempts=5)
    await node.driver.push(Message("retry", b"again", unique_name))
    attempts = []
    for _ in range(5):
        job = await node.take()
        attempts.append(job.delivery_attempt)
        await job.nack(requeue=True)
    assert attempts == [1, 2, 3, 4, 5]
    (dead,) = await admin.pull(admin.subscription(dlt))
    assert dead.message.data == b"again"
    await node.nothing(1.0)


# -- losing the subscription -------------------------------------------------------------------


async def test_a_deleted_subscription_asks_the_runtime_to_restart(
        nodes: Callable[..., Any], admin: Admin, unique_name: str) -> None:
    node = await nodes(unique_name)
    asked: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
    node.driver.command_handler = lambda pipeline, cmd: asked.put_nowait((pipeline, cmd))
    await admin.sub.delete_subscription(subscription=admin.subscription(unique_name))
    assert await asyncio.wait_for(asked.get(), 10) == (unique_name, "restart")
    # What the runtime's restart does: a new driver declares the subscription again.
    again = await nodes(unique_name)
    await again.driver.push(Message("after", b"x", unique_name))
    job = await again.take()
    assert job.payload == b"x"
    await job.ack()


class OwnEmulator:
    """A Pub/Sub emulator of this test's own, restartable on the same port."""

    def __init__(self, root: Path) -> None:
        launcher = find_emulator()
        if launcher is None:
            unavailable("the Pub/Sub emulator is not installed")
        self.launcher = launcher
        (self.port,) = free_ports(1)
        self.endpoint = f"{LOOPBACK}:{self.port}"
        self.log = root / "emulator.log"
        self.root = root
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.popen = subprocess.Popen(
                [str(self.launcher), f"--host={LOOPBACK}", f"--port={self.port}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                cwd=self.root, start_new_session=True,
                env={**os.environ, "HOME": str(self.root),
                     "JAVA_OPTS": "-Xms32m -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1"})
        proc = self.popen
        wait_ready("own Pub/Sub emulator", lambda: root_ok(self.endpoint), 60.0,
                   alive=lambda: proc.poll() is None, log_path=self.log)

    def stop(self) -> None:
        if self.popen is not None:
            stop_process_group(self.popen.pid, self.popen, grace=5.0)
            self.popen = None


async def test_emulator_restart_mid_stream(nodes: Callable[..., Any], unique_name: str,
                                           pubsub_emulator_host: str) -> None:
    """The emulator keeps nothing across a restart (no data dir), so what a real
    Pub/Sub outage would keep cannot be proven here. What is proven: every job
    pushed before the outage is processed; while the emulator is down the consumer
    keeps retrying (no restart asked); once it is back without the subscription the
    driver asks the runtime to restart, and the rebuilt pipeline consumes again."""
    with tempfile.TemporaryDirectory(prefix="rrjobs-pubsub-") as tmp:
        emulator = OwnEmulator(Path(tmp))
        emulator.start()
        try:
            node = await nodes(unique_name, host=emulator.endpoint)
            asked: asyncio.Queue[str] = asyncio.Queue()
            node.driver.command_handler = lambda _p, cmd: asked.put_nowait(cmd)
            await node.driver.push_batch([Message("j", f"{i}".encode(), unique_name)
                                          for i in range(20)])
            seen = set()
            for _ in range(20):
                job = await node.take()
                seen.add(job.payload)
                await job.ack()
            assert len(seen) == 20
            await asyncio.sleep(0.2)  # the batched acks reach the emulator
            await asyncio.to_thread(emulator.stop)
            await asyncio.sleep(0.5)  # a few failing pulls
            assert asked.empty(), "an unreachable broker alone must not restart at once"
            await asyncio.to_thread(emulator.start)
            assert await asyncio.wait_for(asked.get(), 30) == "restart"
            again = await nodes(unique_name, host=emulator.endpoint)
            await again.driver.push(Message("j", b"after", unique_name))
            job = await again.take()
            assert job.payload == b"after"
            await job.ack()
            await again.nothing(1.0)
            await again.driver.stop()
            await node.driver.stop()
        finally:
            await asyncio.to_thread(emulator.stop)
