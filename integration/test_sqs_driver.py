"""The sqs driver's own guarantees against ElasticMQ and moto: RoadRunner's attribute
layout, long delays in hops, lost receipt handles, retain_failed_jobs, FIFO, config keys."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiobotocore.session import get_session  # type: ignore[import-untyped,unused-ignore]

from integration.pytest_plugin import SqsEndpoint
from rrjobs.config import Config
from rrjobs.core.errors import AckLostError, ConfigError, UnsupportedFeatureError
from rrjobs.core.headers import RR_ERROR, UNREADABLE
from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.resilience import FailureWindow
from rrjobs.drivers.sqs import SQSConstructor, SQSDriver, codec

pytestmark = [pytest.mark.sqs, pytest.mark.timeout(120)]


class Node:
    """One driver on its own priority queue (the test is the consumer)."""

    def __init__(self, driver: SQSDriver, queue: PriorityQueue) -> None:
        self.driver = driver
        self.queue = queue

    async def take(self, within: float = 10.0) -> Job:
        async with asyncio.timeout(within):
            return await self.queue.extract_min()

    async def nothing(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                job = await self.queue.extract_min()
                raise AssertionError(f"unexpected job {job!r}")


def config(endpoint: SqsEndpoint) -> Config:
    return Config({"sqs": {"key": endpoint.access_key, "secret": endpoint.secret_key,
                           "region": endpoint.region, "endpoint": endpoint.url},
                   "jobs": {}}, source="test")


@pytest.fixture
async def client(sqs_endpoint: SqsEndpoint) -> AsyncIterator[Any]:
    async with get_session().create_client("sqs", **sqs_endpoint.client_kwargs()) as c:
        yield c


@pytest.fixture
async def nodes(sqs_endpoint: SqsEndpoint, client: Any) -> AsyncIterator[Callable[..., Any]]:
    """Drivers built as ``Declare`` builds them; stopped and their queues deleted at the end."""
    made: list[SQSDriver] = []

    async def make(name: str, *, run: bool = True, **options: Any) -> Node:
        queue = PriorityQueue()
        opts = {"queue": name, "prefetch": 10, "max_messages_in_flight": 50,
                "wait_time_seconds": 1, **options}
        pipeline = Pipeline(name=name, driver="sqs", config=opts)
        driver = await SQSConstructor(config(sqs_endpoint)).driver_from_pipeline(pipeline, queue)
        made.append(driver)
        if run:
            await driver.run(pipeline)
        return Node(driver, queue)

    yield make
    for driver in made:
        await driver.stop()
    for driver in made:
        with contextlib.suppress(Exception):
            await client.delete_queue(QueueUrl=driver.queue_url)


async def test_pushed_message_has_roadrunners_attribute_layout(nodes: Callable[..., Any],
                                                               client: Any,
                                                               unique_name: str) -> None:
    node = await nodes(unique_name, run=False)
    await node.driver.push(Message("app.Job", b"text body", unique_name, id="id-1",
                                   headers={"h": ["1", "2"]}, priority=3))
    reply = await client.receive_message(QueueUrl=node.driver.queue_url, WaitTimeSeconds=5,
                                         MessageAttributeNames=["All"])
    (msg,) = reply["Messages"]
    assert msg["Body"] == "text body"
    a = msg["MessageAttributes"]
    assert {k: v["DataType"] for k, v in a.items()} == {
        "rr_id": "String", "rr_job": "String", "rr_delay": "String", "rr_auto_ack": "String",
        "rr_priority": "Number", "rr_headers": "Binary"}
    assert (a["rr_id"]["StringValue"], a["rr_job"]["StringValue"],
            a["rr_priority"]["StringValue"], a["rr_auto_ack"]["StringValue"]) == (
        "id-1", "app.Job", "3", "false")
    assert json.loads(a["rr_headers"]["BinaryValue"]) == {"h": ["1", "2"]}


async def test_system_attributes_become_headers(nodes: Callable[..., Any],
                                                unique_name: str) -> None:
    node = await nodes(unique_name, retain_failed_jobs=True)
    await node.driver.push(Message("j", b"x", unique_name))
    job = await node.take()
    assert job.headers["ApproximateReceiveCount"] == ["1"]
    assert "SentTimestamp" in job.headers
    await job.nack(requeue=True)  # retain_failed_jobs: the same message, visible again
    again = await node.take()
    assert (again.id, again.headers["ApproximateReceiveCount"]) == (job.id, ["2"])
    await again.ack()


async def test_long_delay_travels_in_hops(nodes: Callable[..., Any], client: Any,
                                          unique_name: str) -> None:
    """A push of 2000 s is DelaySeconds=900 plus 1100 s remaining; a hop received with
    time remaining is re-sent, not delivered, and arrives after the rest of its delay."""
    node = await nodes(unique_name, run=False)
    await node.driver.push(Message("j", b"later", unique_name, delay=2000))
    state = await node.driver.state()
    assert state.delayed == 1
    # The driver's hop as SQS would hand it over after its first 900 s: 2 s remain.
    enc = codec.encode(id="hop-1", name="j", payload=b"hop", headers={}, priority=5,
                       delay=902, auto_ack=False, remaining=2)
    await client.send_message(QueueUrl=node.driver.queue_url, MessageBody=enc.body,
                              MessageAttributes=enc.attributes)
    loop = asyncio.get_running_loop()
    start = loop.time()
    await node.driver.run(Pipeline(name=unique_name, driver="sqs"))
    job = await node.take(within=15)
    assert job.id == "hop-1" and job.payload == b"hop"
    assert loop.time() - start >= 2 - 0.05
    await job.ack()
    await node.nothing(0.5)  # the 2000 s job is still delayed


async def test_settling_after_the_visibility_timeout_is_an_ack_lost(
        nodes: Callable[..., Any], unique_name: str) -> None:
    node = await nodes(unique_name, visibility_timeout=2)
    await node.driver.push(Message("j", b"slow", unique_name))
    job = await node.take()
    assert job.lease == 2
    again = await node.take(within=10)  # redelivered: the first receipt is stale
    await again.extend_lease(30)
    assert again.id == job.id
    with pytest.raises(AckLostError):
        await job.extend_lease(5)
    with pytest.raises(AckLostError):
        await job.ack()
    await again.ack()
    await node.nothing(0.5)


async def test_fifo_queue(nodes: Callable[..., Any], unique_name: str) -> None:
    name = f"{unique_name}.fifo"
    node = await nodes(name, message_group_id="g")
    assert node.driver.capabilities.delay is False
    with pytest.raises(UnsupportedFeatureError):
        await node.driver.push(Message("j", b"d", name, delay=1))
    await node.driver.push_batch([Message("j", f"{i}".encode(), name) for i in range(5)])
    got = []
    for _ in range(5):
        job = await node.take()
        got.append(job.payload)
        await job.ack()
    assert got == [f"{i}".encode() for i in range(5)]


async def test_config_keys_are_checked_against_the_queue(nodes: Callable[..., Any],
                                                         unique_name: str) -> None:
    with pytest.raises(ConfigError) as caught:
        await nodes(unique_name, skip_queue_declaration=True)
    assert caught.value.path == f"declare.{unique_name}.queue"
    node = await nodes(unique_name, run=False, attributes={"VisibilityTimeout": "40"})
    assert node.driver.visibility == 40
    with pytest.raises(ConfigError) as caught:
        await nodes(unique_name, attributes={"VisibilityTimeout": "41"})
    assert caught.value.path == f"declare.{unique_name}.attributes.VisibilityTimeout"
    with pytest.raises(ConfigError) as caught:
        await nodes(f"{unique_name}.fifo")
    assert caught.value.path == f"declare.{unique_name}.fifo.message_group_id"
    again = await nodes(unique_name, run=False, skip_queue_declaration=True)
    assert again.driver.queue_url == node.driver.queue_url


async def test_tags_are_checked_against_the_queue(nodes: Callable[..., Any],
                                                  unique_name: str) -> None:
    """Tags of an existing queue are compared (``ListQueueTags``), never silently ignored;
    with ``skip_queue_declaration`` attributes and tags are refused."""
    node = await nodes(unique_name, run=False, tags={"team": "jobs"})
    for tags in ({"team": "other"}, {"team": "jobs", "env": "test"}):
        with pytest.raises(ConfigError) as caught:
            await nodes(unique_name, run=False, tags=tags)
        key = "team" if tags["team"] != "jobs" else "env"
        assert caught.value.path == f"declare.{unique_name}.tags.{key}"
    same = await nodes(unique_name, run=False, tags={"team": "jobs"})
    assert same.driver.queue_url == node.driver.queue_url
    for key, value in (("tags", {"team": "jobs"}), ("attributes", {"DelaySeconds": "0"})):
        with pytest.raises(ConfigError) as caught:
            await nodes(unique_name, run=False, skip_queue_declaration=True, **{key: value})
        assert caught.value.path == f"declare.{unique_name}.{key}"


async def test_a_malformed_message_does_not_stop_the_receive_loop(
        nodes: Callable[..., Any], client: Any, unique_name: str) -> None:
    """A foreign message whose ``rr_priority`` is the String ``"inf"`` once raised
    ``OverflowError`` and ended the receive loop for good."""
    node = await nodes(unique_name, run=False)
    await client.send_message(QueueUrl=node.driver.queue_url, MessageBody="foreign",
                              MessageAttributes={"rr_priority": {"DataType": "String",
                                                                 "StringValue": "inf"}})
    await node.driver.run(Pipeline(name=unique_name, driver="sqs"))
    foreign = await node.take()
    assert (foreign.payload, foreign.priority) == (b"foreign", node.driver.priority)
    await foreign.ack()
    for payload in (b"one", b"two"):
        await node.driver.push(Message("j", payload, unique_name))
        job = await node.take()
        assert job.payload == payload
        await job.ack()
    assert node.driver.supervisor.running("fetch") and node.driver.ready


async def test_a_message_that_cannot_be_decoded_becomes_a_failed_job(
        nodes: Callable[..., Any], client: Any, unique_name: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A message whose decoding fails is delivered as a failed job (``rrjobs.unreadable``,
    ``rr_error``) with its raw body; its nack deletes it (no redrive policy), never a
    redelivery loop, and the receive loop goes on."""
    node = await nodes(unique_name, run=False)
    await node.driver.push(Message("j", b"poison", unique_name))
    await node.driver.push(Message("j", b"good", unique_name))
    real = codec.decode

    def decode(message: Any, default_priority: int) -> codec.Decoded:
        if message.get("Body") == "poison":
            raise RuntimeError("cannot decode")
        return real(message, default_priority)

    monkeypatch.setattr(codec, "decode", decode)
    await node.driver.run(Pipeline(name=unique_name, driver="sqs"))
    got = {}
    for _ in range(2):
        job = await node.take()
        got[job.payload] = job
    bad, good = got[b"poison"], got[b"good"]
    assert bad.name == UNREADABLE and bad.failure is not None
    assert "RuntimeError: cannot decode" in bad.headers[RR_ERROR][0]
    assert bad.lease == node.driver.visibility
    await good.ack()
    await bad.nack()
    await node.nothing(1.5)
    attrs = (await client.get_queue_attributes(
        QueueUrl=node.driver.queue_url, AttributeNames=["All"]))["Attributes"]
    assert attrs["ApproximateNumberOfMessages"] == "0"
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "0"


async def test_a_garbled_message_is_dead_lettered_through_the_redrive_policy(
        nodes: Callable[..., Any], client: Any, unique_name: str) -> None:
    """Unreadable ``rr_headers``: the failed job's nack sends the raw body, with its
    ``rr_error``, to the queue's dead-letter queue."""
    dlq = (await client.create_queue(QueueName=f"{unique_name}-dlq"))["QueueUrl"]
    try:
        arn = (await client.get_queue_attributes(
            QueueUrl=dlq, AttributeNames=["QueueArn"]))["Attributes"]["QueueArn"]
        policy = {"deadLetterTargetArn": arn, "maxReceiveCount": 5}
        node = await nodes(unique_name, attributes={"RedrivePolicy": policy})
        await client.send_message(QueueUrl=node.driver.queue_url, MessageBody="garbled",
                                  MessageAttributes={
                                      "rr_id": {"DataType": "String", "StringValue": "g1"},
                                      "rr_headers": {"DataType": "Binary",
                                                     "BinaryValue": b"{not json"}})
        bad = await node.take()
        assert (bad.name, bad.payload) == (UNREADABLE, b"garbled")
        await bad.nack()
        reply = await client.receive_message(QueueUrl=dlq, WaitTimeSeconds=5,
                                             MessageAttributeNames=["All"])
        (msg,) = reply["Messages"]
        dead = codec.decode(msg, 1)
        assert dead.payload == b"garbled" and dead.name == UNREADABLE
        assert "rr_headers is not JSON" in dead.headers[RR_ERROR][0]
    finally:
        await client.delete_queue(QueueUrl=dlq)


async def test_a_lasting_receive_failure_asks_for_a_restart(
        nodes: Callable[..., Any], client: Any, unique_name: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``skip_queue_declaration`` a deleted queue is not re-created: the receive
    loop fails until its failure window expires and then asks the runtime for a restart."""
    await client.create_queue(QueueName=unique_name)
    node = await nodes(unique_name, run=False, skip_queue_declaration=True,
                       wait_time_seconds=0)
    commands: list[tuple[str, str]] = []
    asked = asyncio.Event()

    def handler(pipeline: str, command: str) -> None:
        commands.append((pipeline, command))
        asked.set()

    node.driver.command_handler = handler
    node.driver.fetch_failures = FailureWindow(1.0)
    await client.delete_queue(QueueUrl=node.driver.queue_url)
    await node.driver.run(Pipeline(name=unique_name, driver="sqs"))
    async with asyncio.timeout(30):
        await asked.wait()
    assert commands == [(unique_name, "restart")]
