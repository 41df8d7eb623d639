"""The ``amqp`` driver against a real RabbitMQ: every option, exchange types, quorum
queues, ``declare: false``, RoadRunner's wire layout both ways, multiple_ack, delays."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import struct
from collections.abc import AsyncIterator, Callable
from typing import Any

import aio_pika
import aiormq
import pytest
from pamqp import decode
from pamqp.common import FieldTable

from integration.waiting import eventually, nothing, take
from rrjobs.config import Config
from rrjobs.core.errors import ConfigError, PipelineStateError
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.drivers.amqp import AMQPConstructor, AMQPDriver, AMQPJob, PublishFailedError
from rrjobs.drivers.amqp import driver as amqp_driver
from rrjobs.drivers.amqp.codec import Long, SignedInt
from rrjobs.runtime.app import App
from rrjobs.runtime.jobs import Jobs

pytestmark = [pytest.mark.amqp, pytest.mark.timeout(120)]


# -- helpers -------------------------------------------------------------------------------------


class Built:
    """Drivers built by a test, stopped at its end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.drivers: list[AMQPDriver] = []

    async def config_driver(self, name: str, options: dict[str, Any], *,
                            queue: PriorityQueue | None = None,
                            section: dict[str, Any] | None = None) -> AMQPDriver:
        """A driver from the config file form (``driver_from_config``)."""
        cfg = Config({"amqp": section or {"addr": self.url},
                      "jobs": {"pipelines": {name: {"driver": "amqp", "config": options}}}})
        key = f"jobs.pipelines.{name}.config"
        pipe = Pipeline(name=name, driver="amqp", priority=options.get("priority", 10),
                        config=dict(options))
        pq = queue if queue is not None else PriorityQueue()
        driver = await AMQPConstructor(cfg).driver_from_config(key, pq, pipe)
        self.drivers.append(driver)
        return driver

    async def declared_driver(self, name: str, options: dict[str, str], *,
                              queue: PriorityQueue | None = None) -> AMQPDriver:
        """A driver from a Declare string map (``driver_from_pipeline``)."""
        cfg = Config({"amqp": {"addr": self.url}, "jobs": {}})
        pipe = Pipeline({**options, "name": name, "driver": "amqp"})
        pq = queue if queue is not None else PriorityQueue()
        driver = await AMQPConstructor(cfg).driver_from_pipeline(pipe, pq)
        self.drivers.append(driver)
        return driver

    async def stop(self) -> None:
        for driver in reversed(self.drivers):
            with contextlib.suppress(Exception):
                await driver.stop()


@pytest.fixture
async def built(amqp_url: str) -> AsyncIterator[Built]:
    b = Built(amqp_url)
    try:
        yield b
    finally:
        await b.stop()


class Raw:
    """RabbitMQ through aio-pika, next to the driver: declare, publish, get, inspect."""

    def __init__(self, connection: aio_pika.abc.AbstractConnection) -> None:
        self.connection = connection
        self.queues: list[str] = []
        self.exchanges: list[str] = []

    async def channel(self) -> aiormq.abc.AbstractChannel:
        chan = await self.connection.channel()
        return await chan.get_underlay_channel()

    async def count(self, queue: str) -> int | None:
        """Ready messages in ``queue``, ``None`` when it does not exist."""
        chan = await self.channel()
        try:
            ok = await chan.queue_declare(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None
        await chan.close()
        return int(ok.message_count or 0)

    async def consumers(self, queue: str) -> int:
        chan = await self.channel()
        ok = await chan.queue_declare(queue, passive=True)
        await chan.close()
        return int(ok.consumer_count or 0)

    async def refused(self, call: Callable[[aiormq.abc.AbstractChannel], Any]) -> BaseException:
        """Run ``call`` on a fresh channel; return the channel error it must raise."""
        chan = await self.channel()
        with pytest.raises(aiormq.exceptions.ChannelClosed) as caught:
            await call(chan)
        return caught.value

    async def get(self, queue: str) -> aiormq.abc.DeliveredMessage | None:
        chan = await self.channel()
        try:
            msg = await chan.basic_get(queue, no_ack=True)
        finally:
            await chan.close()
        return None if msg.delivery.__class__.__name__ == "GetEmpty" else msg

    async def cleanup(self) -> None:
        for q in self.queues:
            with contextlib.suppress(Exception):
                chan = await self.channel()
                await chan.queue_delete(q)
        for ex in self.exchanges:
            with contextlib.suppress(Exception):
                chan = await self.channel()
                await chan.exchange_delete(ex)


@pytest.fixture
async def raw(amqp_url: str) -> AsyncIterator[Raw]:
    connection = await aio_pika.connect(amqp_url)
    r = Raw(connection)
    try:
        yield r
    finally:
        await r.cleanup()
        await connection.close()


def opts(name: str, **extra: Any) -> dict[str, Any]:
    """A direct-exchange pipeline consuming queue ``name`` (routing key ``name``)."""
    return {"queue": name, "routing_key": name, "exchange": f"{name}.ex", **extra}


def track(raw: Raw, name: str) -> None:
    raw.queues.append(name)
    raw.exchanges.append(f"{name}.ex")


# -- the wire layout, both ways ------------------------------------------------------------


class FieldTypes:
    """Records the AMQP field type of each header-table key pamqp decodes."""

    def __init__(self) -> None:
        self.seen: list[dict[str, str]] = []
        self._orig = decode.field_table

    def __enter__(self) -> FieldTypes:
        orig, seen = self._orig, self.seen

        def field_table(value: bytes) -> tuple[int, dict[str, Any]]:
            consumed, table = orig(value)
            types: dict[str, str] = {}
            (size,) = struct.unpack(">I", value[:4])
            offset, data = 4, value
            while offset < 4 + size:
                klen = data[offset]
                key = data[offset + 1:offset + 1 + klen].decode()
                offset += 1 + klen
                types[key] = chr(data[offset])
                used, _ = decode.embedded_value(data[offset:])
                offset += used
            seen.append(types)
            return consumed, table

        decode.METHODS["table"] = field_table
        return self

    def __exit__(self, *exc: object) -> None:
        decode.METHODS["table"] = self._orig


async def test_pushed_jobs_have_roadrunner_layout_on_the_wire(built: Built, raw: Raw,
                                                              unique_name: str) -> None:
    track(raw, unique_name)
    driver = await built.config_driver(unique_name, opts(unique_name, durable=True))
    await driver.push(Message("app.Job", b"\x00body\xff", unique_name, id="id-1", priority=7,
                              headers={"h": ["1", "2"], "Traceparent": ["00-abc"]},
                              auto_ack=True))
    with FieldTypes() as types:
        msg = await raw.get(unique_name)
        assert msg is not None
        props = msg.header.properties  # decoded on first use (drivers/amqp/receiver.py)
    assert msg.body == b"\x00body\xff"
    assert props.content_type == "application/octet-stream"
    assert props.delivery_mode == 2
    assert isinstance(props.timestamp, datetime.datetime)
    headers = props.headers
    assert headers is not None
    assert headers["rr_id"] == "id-1"
    assert headers["rr_job"] == "app.Job"
    assert headers["rr_pipeline"] == unique_name
    rr_headers = headers["rr_headers"]
    assert isinstance(rr_headers, bytearray)
    assert json.loads(bytes(rr_headers)) == {"h": ["1", "2"], "Traceparent": ["00-abc"]}
    assert (headers["rr_delay"], headers["rr_priority"], headers["rr_auto_ack"]) == (0, 7, True)
    table_types = next(t for t in types.seen if "rr_id" in t)
    assert table_types == {"rr_id": "S", "rr_job": "S", "rr_pipeline": "S", "rr_headers": "x",
                           "rr_delay": "I", "rr_priority": "l", "rr_auto_ack": "t"}


async def test_roadrunner_layout_and_foreign_headers_are_read(built: Built, raw: Raw,
                                                              unique_name: str) -> None:
    track(raw, unique_name)
    queue = PriorityQueue()
    driver = await built.config_driver(unique_name, opts(unique_name, priority=9), queue=queue)
    await driver.run(driver.pipeline)
    chan = await raw.channel()
    ex = f"{unique_name}.ex"
    rr_headers = {"attempts": ["2"], "Traceparent": ["00-trace"], "x-multi": ["a", "b"]}
    roadrunner: FieldTable = {
        "rr_id": "rr-1", "rr_job": "App\\Jobs\\Mail", "rr_pipeline": "elsewhere",
        "rr_headers": bytearray(json.dumps(rr_headers).encode()),
        "rr_delay": SignedInt(0), "rr_priority": Long(3), "rr_auto_ack": False,
    }
    await chan.basic_publish(b"php", exchange=ex, routing_key=unique_name,
                             properties=aiormq.spec.Basic.Properties(headers=roadrunner))
    # aio-pika's default integer encoding (b) for rr_priority, and auto_ack
    await chan.basic_publish(b"small-int", exchange=ex, routing_key=unique_name,
                             properties=aiormq.spec.Basic.Properties(
                                 headers={"rr_id": "rr-2", "rr_job": "j", "rr_priority": 2,
                                          "rr_auto_ack": True}))
    foreign: FieldTable = {"kind": "raw", "count": 40000, "big": 2**40, "ratio": 0.5, "ok": True,
               "list": ["x", 1], "when": datetime.datetime(2024, 1, 2, 3, 4, 5)}
    await chan.basic_publish(b"foreign", exchange=ex, routing_key=unique_name,
                             properties=aiormq.spec.Basic.Properties(headers=foreign))
    jobs = {j.payload: j for j in await take(queue, 3)}
    php = jobs[b"php"]
    assert (php.id, php.name, php.priority, php.pipeline, php.auto_ack) == (
        "rr-1", "App\\Jobs\\Mail", 3, unique_name, False)
    assert php.headers == rr_headers
    small = jobs[b"small-int"]
    assert (small.id, small.priority, small.auto_ack) == ("rr-2", 2, True)
    other = jobs[b"foreign"]
    assert other.name == "deduced_by_rr" and other.priority == 9
    assert other.headers == {"kind": ["raw"], "count": ["40000"], "big": [str(2**40)],
                             "ratio": ["0.50000"], "ok": ["true"], "list": ["x", "1"],
                             "when": ["2024-01-02T03:04:05Z"]}
    for job in jobs.values():
        await job.ack()


async def test_x_routing_key_routes_one_job_elsewhere(built: Built, raw: Raw,
                                                      unique_name: str) -> None:
    a, b = f"{unique_name}-a", f"{unique_name}-b"
    track(raw, a)
    raw.queues.append(b)
    qa = PriorityQueue()
    pa = await built.config_driver(a, {"queue": a, "routing_key": a, "exchange": f"{a}.ex"},
                                   queue=qa)
    qb = PriorityQueue()
    pb = await built.config_driver(b, {"queue": b, "routing_key": b, "exchange": f"{a}.ex"},
                                   queue=qb)
    await pa.run(pa.pipeline)
    await pb.run(pb.pipeline)
    await pa.push(Message("j", b"to-b", a, headers={"x-routing-key": [b], "k": ["v"]}))
    (job,) = await take(qb)
    assert job.payload == b"to-b"
    assert job.headers == {"k": ["v"]}
    await job.ack()
    await nothing(qa)


async def test_fanout_exchange_copies_to_every_queue(built: Built, raw: Raw,
                                                     unique_name: str) -> None:
    ex = f"{unique_name}.fan"
    raw.exchanges.append(ex)
    queues = []
    for suffix in ("a", "b"):
        name = f"{unique_name}-{suffix}"
        raw.queues.append(name)
        q = PriorityQueue()
        d = await built.config_driver(name, {"queue": name, "exchange": ex,
                                             "exchange_type": "fanout"}, queue=q)
        await d.run(d.pipeline)
        queues.append(q)
    push_only = await built.config_driver(f"{unique_name}-push",
                                          {"exchange": ex, "exchange_type": "fanout"})
    await push_only.push(Message("j", b"everyone", f"{unique_name}-push"))
    for q in queues:
        (job,) = await take(q)
        assert job.payload == b"everyone"
        await job.ack()
    with pytest.raises(PipelineStateError):
        await push_only.run(push_only.pipeline)  # no queue: push-only


async def test_topic_exchange_routes_by_pattern_and_refuses_unroutable(
        built: Built, raw: Raw, unique_name: str) -> None:
    track(raw, unique_name)
    q = PriorityQueue()
    d = await built.config_driver(unique_name, {
        "queue": unique_name, "exchange": f"{unique_name}.ex", "exchange_type": "topic",
        "routing_key": "orders.*"}, queue=q)
    await d.run(d.pipeline)
    await d.push(Message("j", b"created", unique_name,
                         headers={"x-routing-key": ["orders.created"]}))
    (job,) = await take(q)
    assert job.payload == b"created"
    await job.ack()
    with pytest.raises(PublishFailedError, match="no queue is bound"):
        await d.push(Message("j", b"lost?", unique_name,
                             headers={"x-routing-key": ["users.created"]}))
    await nothing(q)


async def test_a_batch_publishes_its_jobs_in_one_write_and_refuses_only_the_unroutable(
        built: Built, raw: Raw, unique_name: str) -> None:
    track(raw, unique_name)
    q = PriorityQueue()
    d = await built.config_driver(unique_name, opts(unique_name), queue=q)
    await d.run(d.pipeline)
    msgs = [Message("j", f"m{i}".encode(), unique_name, headers={"n": [str(i)]})
            for i in range(5)]
    msgs[2].headers["x-routing-key"] = ["nobody"]  # no queue bound: returned
    msgs[3].delay = 0.2  # through the delay queue
    with pytest.raises(PublishFailedError, match="no queue is bound") as info:
        await d.push_batch(msgs)
    assert msgs[2].id in str(info.value)
    assert "1 of the batch's 5 sends failed" in info.value.__notes__
    jobs = await take(q, 4)
    assert sorted(j.payload for j in jobs) == [b"m0", b"m1", b"m3", b"m4"]
    assert {j.id: j.headers["n"] for j in jobs} == {
        m.id: [str(i)] for i, m in enumerate(msgs) if i != 2}
    for job in jobs:
        await job.ack()
    await nothing(q)


class Writes:
    """Counts the writes of publishes (``publish_all``) and the jobs of each."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        orig = amqp_driver.publish_all

        async def counted(channel: Any, items: Any) -> Any:
            self.sizes.append(len(items))
            return await orig(channel, items)

        monkeypatch.setattr(amqp_driver, "publish_all", counted)


async def running(built: Built, raw: Raw, name: str) -> tuple[AMQPDriver, PriorityQueue]:
    """A consuming driver of the pipeline ``name`` and its priority queue."""
    track(raw, name)
    q = PriorityQueue()
    d = await built.config_driver(name, opts(name), queue=q)
    await d.run(d.pipeline)
    return d, q


async def consumed_once(q: PriorityQueue, msgs: list[Message]) -> None:
    """Exactly the jobs of ``msgs`` are delivered, once each (acked as taken: the
    prefetch window holds a few)."""
    seen: list[str] = []
    async with asyncio.timeout(30):
        while len(seen) < len(msgs):
            job = await q.extract_min()
            seen.append(job.id)
            await job.ack()
    assert sorted(seen) == sorted(m.id for m in msgs)
    await nothing(q)


async def test_concurrent_single_pushes_share_writes_and_are_each_consumed_once(
        built: Built, raw: Raw, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    d, q = await running(built, raw, unique_name)
    writes = Writes(monkeypatch)
    msgs = [Message("j", f"m{i}".encode(), unique_name) for i in range(600)]
    assert await asyncio.gather(*(d.push(m) for m in msgs)) == [None] * 600
    assert sum(writes.sizes) == 600
    assert len(writes.sizes) <= 4 and max(writes.sizes) == amqp_driver.PUBLISH_SLICE
    await consumed_once(q, msgs)
    await d.push(Message("j", b"alone", unique_name))  # a lone push: a write of its own
    assert writes.sizes[-1] == 1
    (job,) = await take(q)
    assert job.payload == b"alone"
    await job.ack()


async def test_an_unroutable_job_among_concurrent_pushes_fails_only_its_own_push(
        built: Built, raw: Raw, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    d, q = await running(built, raw, unique_name)
    writes = Writes(monkeypatch)
    msgs = [Message("j", f"m{i}".encode(), unique_name) for i in range(6)]
    msgs[3].headers["x-routing-key"] = ["nobody"]  # no queue bound: returned
    results = await asyncio.gather(*(d.push(m) for m in msgs), return_exceptions=True)
    assert writes.sizes == [6]
    assert [r for i, r in enumerate(results) if i != 3] == [None] * 5
    assert isinstance(results[3], PublishFailedError)
    assert "no queue is bound" in str(results[3]) and msgs[3].id in str(results[3])
    await consumed_once(q, [m for i, m in enumerate(msgs) if i != 3])


async def test_a_nacked_job_among_concurrent_pushes_fails_only_its_own_push(
        built: Built, raw: Raw, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full queue with ``x-overflow: reject-publish`` nacks the publishes beyond it."""
    track(raw, unique_name)
    d = await built.config_driver(unique_name, opts(unique_name, queue_headers={
        "x-max-length": 2, "x-overflow": "reject-publish"}))
    writes = Writes(monkeypatch)
    msgs = [Message("j", f"m{i}".encode(), unique_name) for i in range(5)]
    results = await asyncio.gather(*(d.push(m) for m in msgs), return_exceptions=True)
    assert writes.sizes == [5]
    assert results[:2] == [None, None]
    for msg, result in zip(msgs[2:], results[2:], strict=True):
        assert isinstance(result, PublishFailedError)
        assert "basic.nack" in str(result) and msg.id in str(result)
    assert await raw.count(unique_name) == 2


async def test_single_pushes_whose_write_fails_are_published_again_one_by_one(
        built: Built, raw: Raw, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    d, q = await running(built, raw, unique_name)
    failed: list[int] = []

    async def broken(channel: Any, items: Any) -> Any:
        failed.append(len(items))
        raise aiormq.exceptions.ChannelInvalidStateError("the channel is closed")

    monkeypatch.setattr(amqp_driver, "publish_all", broken)
    msgs = [Message("j", f"m{i}".encode(), unique_name) for i in range(4)]
    assert await asyncio.gather(*(d.push(m) for m in msgs)) == [None] * 4
    assert failed == [4]
    await consumed_once(q, msgs)


async def test_headers_exchange_binds_without_arguments(built: Built, raw: Raw,
                                                        unique_name: str) -> None:
    ex = f"{unique_name}.hdr"
    raw.exchanges.append(ex)
    queues = []
    for suffix in ("a", "b"):
        name = f"{unique_name}-{suffix}"
        raw.queues.append(name)
        q = PriorityQueue()
        d = await built.config_driver(name, {"version": 2,
                                             "exchange": {"name": ex, "type": "headers"},
                                             "queue": {"name": name}}, queue=q)
        await d.run(d.pipeline)
        queues.append((d, q))
    await queues[0][0].push(Message("j", b"matched", queues[0][0].pipeline_name))
    for _, q in queues:
        (job,) = await take(q)
        assert job.payload == b"matched"
        await job.ack()


async def test_quorum_queue(built: Built, raw: Raw, unique_name: str) -> None:
    track(raw, unique_name)
    q = PriorityQueue()
    d = await built.config_driver(unique_name, opts(
        unique_name, durable=True, queue_headers={"x-queue-type": "quorum"}), queue=q)
    assert d.capabilities.durable is True
    await d.run(d.pipeline)
    sent = Message("j", b"quorum", unique_name, headers={"k": ["v"]})
    await d.push(sent)
    (job,) = await take(q)
    await job.nack(requeue=True)
    (again,) = await take(q)
    assert (again.id, again.payload, again.headers["k"]) == (sent.id, b"quorum", ["v"])
    assert isinstance(again, AMQPJob) and again.redelivered
    assert again.headers.get("x-delivery-count") == ["1"]
    await again.ack()
    err = await raw.refused(lambda c: c.queue_declare(unique_name, durable=True))
    assert "x-queue-type" in str(err)


async def test_x_max_priority_orders_in_the_broker(built: Built, raw: Raw,
                                                   unique_name: str) -> None:
    track(raw, unique_name)
    q = PriorityQueue()
    d = await built.config_driver(unique_name, opts(
        unique_name, prefetch=1, queue_headers={"x-max-priority": 10}), queue=q)
    for priority in (9, 1, 5):
        await d.push(Message("j", str(priority).encode(), unique_name, priority=priority))
    msg = await raw.get(unique_name)  # the broker's order: highest AMQP priority first
    assert msg is not None and msg.body == b"1"
    assert msg.header.properties.priority == 9
    await d.run(d.pipeline)
    first, second = [], []
    (job,) = await take(q)
    first.append(job.payload)
    await job.ack()
    (job,) = await take(q)
    second.append(job.payload)
    await job.ack()
    assert first + second == [b"5", b"9"]


async def test_prefetch_limits_unacked_deliveries(built: Built, raw: Raw,
                                                  unique_name: str) -> None:
    track(raw, unique_name)
    q = PriorityQueue()
    d = await built.config_driver(unique_name, opts(unique_name, prefetch=3), queue=q)
    for i in range(10):
        await d.push(Message("j", f"{i}".encode(), unique_name))
    await d.run(d.pipeline)
    await eventually(lambda: len(q) == 3, what="3 deliveries")
    await nothing(PriorityQueue(), 0.3)
    assert len(q) == 3
    state = await d.state()
    assert (state.active, state.reserved, state.ready) == (10, 0, True)
    jobs = await take(q, 3)
    await jobs[0].ack()
    await eventually(lambda: len(q) == 1, what="one more delivery after an ack")
    for job in jobs[1:] + await take(q, 1):
        await job.ack()


async def test_durability_and_auto_delete_flags_are_declared(built: Built, raw: Raw,
                                                             unique_name: str) -> None:
    track(raw, unique_name)
    ex = f"{unique_name}.ex"
    await built.config_driver(unique_name, opts(
        unique_name, durable=True, exchange_durable=True, exchange_auto_delete=False))
    # The same declarations succeed; others are refused as inequivalent.
    chan = await raw.channel()
    await chan.queue_declare(unique_name, durable=True)
    await chan.exchange_declare(ex, exchange_type="direct", durable=True)
    err = await raw.refused(lambda c: c.queue_declare(unique_name, durable=False))
    assert "durable" in str(err)
    err = await raw.refused(lambda c: c.exchange_declare(ex, exchange_type="direct",
                                                         durable=False))
    assert "durable" in str(err)
    err = await raw.refused(lambda c: c.exchange_declare(ex, exchange_type="fanout",
                                                         durable=True))
    assert "type" in str(err)
    other = f"{unique_name}-ad"
    track(raw, other)
    await built.config_driver(other, opts(other, exchange_auto_delete=True))
    err = await raw.refused(lambda c: c.exchange_declare(f"{other}.ex", exchange_type="direct",
                                                         auto_delete=False))
    assert "auto_delete" in str(err)


async def test_exclusive_queue_belongs_to_the_driver_connection(built: Built, raw: Raw,
                                                                unique_name: str) -> None:
    track(raw, unique_name)
    d = await built.config_driver(unique_name, opts(unique_name, exclusive=True))
    err = await raw.refused(lambda c: c.queue_declare(unique_name, passive=True))
    assert isinstance(err, aiormq.exceptions.ChannelLockedResource)
    await d.stop()
    assert await raw.count(unique_name) is None  # exclusive: gone with the connection


async def test_queue_auto_delete_and_resume_redeclares(built: Built, raw: Raw,
                                                       unique_name: str) -> None:
    track(raw, unique_name)
    q = PriorityQueue()
    d = await built.config_driver(unique_name, opts(unique_name, queue_auto_delete=True),
                                  queue=q)
    await d.run(d.pipeline)
    assert await raw.consumers(unique_name) == 1
    await d.pause(unique_name)
    assert await raw.count(unique_name) is None  # auto-deleted with its last consumer
    await d.resume(unique_name)  # declares it again
    await d.push(Message("j", b"again", unique_name))
    (job,) = await take(q)
    assert job.payload == b"again"
    await job.ack()


async def test_pause_is_basic_cancel_and_resume_consumes_again(built: Built, raw: Raw,
                                                               unique_name: str) -> None:
    track(raw, unique_name)
    q = PriorityQueue()
    d = await built.config_driver(unique_name, opts(unique_name), queue=q)
    await d.run(d.pipeline)
    assert await raw.consumers(unique_name) == 1
    await d.push(Message("j", b"held", unique_name))
    (held,) = await take(q)
    await d.pause(unique_name)
    assert await raw.consumers(unique_name) == 0
    await d.push(Message("j", b"while-paused", unique_name))
    await nothing(q)
    assert await raw.count(unique_name) == 1
    await held.ack()  # the consume channel stays open for jobs in handlers
    await d.resume(unique_name)
    (job,) = await take(q)
    assert job.payload == b"while-paused"
    await job.ack()

    async def empty() -> bool:
        return await raw.count(unique_name) == 0

    await eventually(empty, what="every job acked")


async def test_delete_queue_on_stop(built: Built, raw: Raw, unique_name: str) -> None:
    track(raw, unique_name)
    d = await built.declared_driver(unique_name, {
        "queue": unique_name, "routing_key": unique_name, "exchange": f"{unique_name}.ex",
        "delete_queue_on_stop": "true"})
    await d.run(d.pipeline)
    assert await raw.count(unique_name) == 0
    await d.stop()
    assert await raw.count(unique_name) is None


async def test_consumer_id_is_the_consumer_tag(built: Built, raw: Raw, unique_name: str) -> None:
    track(raw, unique_name)
    q = PriorityQueue()
    d = await built.config_driver(unique_name, opts(unique_name, consumer_id="worker-7"),
                                  queue=q)
    await d.run(d.pipeline)
    await d.push(Message("j", b"x", unique_name))
    (job,) = await take(q)
    assert isinstance(job, AMQPJob) and job.consumer_tag == "worker-7"
    await job.ack()


async def test_multiple_ack_never_acks_a_job_still_running(built: Built, raw: Raw,
                                                           unique_name: str) -> None:
    track(raw, unique_name)
    q = PriorityQueue()
    d = await built.config_driver(unique_name, opts(unique_name, multiple_ack=True,
                                                    durable=True, prefetch=10), queue=q)
    await d.run(d.pipeline)
    for i in range(3):
        await d.push(Message("j", f"m{i}".encode(), unique_name))
    first, second, third = await take(q, 3)
    # The later jobs finish first: RoadRunner's ack(multiple=true) of the third would
    # also ack the first, whose handler is still running.
    await third.ack()
    await second.ack()
    await d.stop()  # the first job's consumer dies before it finishes
    q2 = PriorityQueue()
    other = await built.config_driver(unique_name, opts(unique_name, durable=True), queue=q2)
    await other.run(other.pipeline)
    (back,) = await take(q2)
    assert back.id == first.id
    await back.ack()
    await nothing(q2)


async def test_multiple_ack_acks_in_runs(built: Built, raw: Raw, unique_name: str) -> None:
    track(raw, unique_name)
    q = PriorityQueue()
    d = await built.config_driver(unique_name, opts(unique_name, multiple_ack=True,
                                                    durable=True, prefetch=20), queue=q)
    await d.run(d.pipeline)
    await d.push_batch([Message("j", f"m{i}".encode(), unique_name) for i in range(12)])
    jobs = await take(q, 12)
    for job in reversed(jobs[:6]):
        await job.ack()
    await jobs[6].nack(requeue=False)
    for job in jobs[7:]:
        await job.ack()
    await d.stop()
    # Everything was settled: nothing comes back to a new consumer.
    q2 = PriorityQueue()
    other = await built.config_driver(unique_name, opts(unique_name, durable=True), queue=q2)
    await other.run(other.pipeline)
    await nothing(q2, 1.0)
    assert await raw.count(unique_name) == 0


async def test_delays_use_roadrunner_delay_queues(built: Built, raw: Raw,
                                                  unique_name: str) -> None:
    track(raw, unique_name)
    ex = f"{unique_name}.ex"
    q = PriorityQueue()
    d = await built.config_driver(unique_name, opts(unique_name), queue=q)
    await d.push(Message("j", b"later", unique_name, delay=2))
    delay_queue = f"delayed-2000.{ex}.{unique_name}"
    raw.queues.append(delay_queue)
    assert await raw.count(delay_queue) == 1
    state = await d.state()
    assert (state.active, state.delayed) == (0, 1)
    # RoadRunner declares the same queue with the same arguments: equivalent.
    chan = await raw.channel()
    await chan.queue_declare(delay_queue, durable=True, arguments={
        "x-dead-letter-exchange": ex, "x-dead-letter-routing-key": unique_name,
        "x-message-ttl": Long(2000), "x-expires": Long(4000)})
    await d.run(d.pipeline)
    loop = asyncio.get_running_loop()
    start = loop.time()
    (job,) = await take(q, within=10)
    assert loop.time() - start > 1.0
    assert isinstance(job, AMQPJob) and job.rr_delay == 2
    # A delayed requeue goes through delayed-<ms>..<queue> straight back to the queue.
    await job.requeue({"n": ["1"]}, delay=1.5)
    requeue_queue = f"delayed-1500..{unique_name}"
    raw.queues.append(requeue_queue)
    assert await raw.count(requeue_queue) == 1
    (again,) = await take(q, within=10)
    assert (again.id, again.headers.get("n")) == (job.id, ["1"])
    await again.ack()


async def test_nack_publishes_the_dead_letter_with_its_headers_then_acks(
        built: Built, raw: Raw, unique_name: str) -> None:
    """The driver publishes the dead letter to the x-dead-letter-exchange itself
    (RabbitMQ's reject would drop the headers); the original is acked."""
    track(raw, unique_name)
    dlq = f"{unique_name}.dlq"
    raw.queues.append(dlq)
    chan = await raw.channel()
    await chan.queue_declare(dlq, durable=True)
    dead_letter = {"x-dead-letter-exchange": "", "x-dead-letter-routing-key": dlq}
    q = PriorityQueue()
    d = await built.config_driver(unique_name, opts(unique_name, queue_headers=dead_letter),
                                  queue=q)
    await d.push(Message("j", b"doomed", unique_name, id="d-1", headers={"h": ["1", "2"]}))
    await d.run(d.pipeline)
    (job,) = await take(q)
    await job.nack(headers={"rr_error": ["ValueError: no"]})
    await eventually(lambda: raw.count(dlq), what="the dead letter in its queue")
    msg = await raw.get(dlq)
    assert msg is not None and msg.body == b"doomed"
    table = msg.header.properties.headers
    assert table is not None and "x-death" not in table
    carried = json.loads(bytes(table["rr_headers"]))
    assert carried.pop("rr_failed_at")[0] == table["rr_failed_at"]
    assert carried == {"h": ["1", "2"], "rr_attempts": ["1"], "rr_error": ["ValueError: no"],
                       "rr_original_pipeline": [unique_name]}
    assert (table["rr_id"], table["rr_attempts"], table["rr_error"]) == ("d-1", "1",
                                                                        "ValueError: no")
    await nothing(q, 1.0)
    assert await raw.count(unique_name) == 0


async def test_a_refused_dead_letter_falls_back_to_rabbitmqs_reject(
        built: Built, raw: Raw, unique_name: str, caplog: pytest.LogCaptureFixture) -> None:
    """No queue is bound for the dead letter: RabbitMQ returns the publish, and the
    job is rejected (dropped by RabbitMQ, as its own dead-lettering would), logged."""
    track(raw, unique_name)
    dead_letter = {"x-dead-letter-exchange": "",
                   "x-dead-letter-routing-key": f"{unique_name}.none"}
    q = PriorityQueue()
    d = await built.config_driver(unique_name, opts(unique_name, queue_headers=dead_letter),
                                  queue=q)
    await d.push(Message("j", b"doomed", unique_name))
    await d.run(d.pipeline)
    (job,) = await take(q)
    with caplog.at_level(logging.WARNING):
        await job.nack()
    assert any("was refused" in r.getMessage() and job.id in r.getMessage()
               for r in caplog.records)
    await nothing(q, 1.0)
    assert await raw.count(unique_name) == 0


async def test_declare_false_uses_existing_topology(built: Built, raw: Raw,
                                                    unique_name: str) -> None:
    track(raw, unique_name)
    ex = f"{unique_name}.ex"
    chan = await raw.channel()
    await chan.exchange_declare(ex, exchange_type="direct")
    # Arguments the pipeline does not know: declaring would be refused as inequivalent.
    await chan.queue_declare(unique_name, arguments={"x-max-length": 1000})
    await chan.queue_bind(unique_name, ex, routing_key=unique_name)
    q = PriorityQueue()
    d = await built.config_driver(unique_name, {
        "version": 2, "exchange": {"name": ex, "declare": False},
        "queue": {"name": unique_name, "routing_key": unique_name, "durable": True,
                  "declare": False}}, queue=q)
    await d.run(d.pipeline)
    await d.push(Message("j", b"read-only", unique_name))
    (job,) = await take(q)
    assert job.payload == b"read-only"
    await job.ack()
    # The flat form's keys do the same; a missing queue is an error, not a declaration.
    missing = f"{unique_name}-missing"
    flat = await built.config_driver(missing, {
        "queue": missing, "routing_key": missing, "exchange": ex,
        "exchange_declare": False, "queue_declare": False})
    with pytest.raises(PipelineStateError, match="NOT_FOUND"):
        await flat.run(flat.pipeline)
    assert await raw.count(missing) is None
    # Declaring over the existing queue with other arguments is refused at construction.
    with pytest.raises(ConfigError, match="refused"):
        await built.config_driver(unique_name, {"queue": unique_name,
                                                "routing_key": unique_name, "exchange": ex})


async def test_a_pushed_job_survives_a_second_driver_on_another_prefetch(
        built: Built, raw: Raw, unique_name: str) -> None:
    """The Declare form builds the same topology as the config form."""
    track(raw, unique_name)
    q = PriorityQueue()
    d = await built.declared_driver(unique_name, {
        "queue": unique_name, "routing_key": unique_name, "exchange": f"{unique_name}.ex",
        "durable": "true", "exchange_durable": "true", "prefetch": "2", "priority": "4",
        "queue_headers": json.dumps({"x-max-priority": 5}), "consumer_id": "decl"}, queue=q)
    await d.resume(unique_name)
    await d.push(Message("j", b"declared", unique_name))
    (job,) = await take(q)
    assert (job.priority, job.payload) == (4, b"declared")
    assert isinstance(job, AMQPJob) and job.consumer_tag == "decl"
    await job.ack()
    chan = await raw.channel()
    await chan.queue_declare(unique_name, durable=True,
                             arguments={"x-max-priority": SignedInt(5)})


async def test_missing_global_section_and_bad_address(amqp_url: str, unique_name: str) -> None:
    cfg = Config({"jobs": {"pipelines": {"p": {"driver": "amqp", "config": opts("p")}}}})
    with pytest.raises(ConfigError) as caught:
        await AMQPConstructor(cfg).driver_from_config("jobs.pipelines.p.config",
                                                      PriorityQueue(), Pipeline(name="p"))
    assert caught.value.path == "amqp"
    cfg = Config({"amqp": {"addr": "amqp://guest:guest@127.0.0.1:1/"}, "jobs": {}})
    with pytest.raises(ConnectionError):
        await AMQPConstructor(cfg).driver_from_pipeline(
            Pipeline({"name": unique_name, **opts(unique_name)}), PriorityQueue())


async def test_stopped_driver_refuses_and_loses_acks_quietly(built: Built, raw: Raw,
                                                             unique_name: str) -> None:
    track(raw, unique_name)
    q = PriorityQueue()
    d = await built.config_driver(unique_name, opts(unique_name, durable=True), queue=q)
    await d.run(d.pipeline)
    await d.push(Message("j", b"x", unique_name))
    (job,) = await take(q)
    await d.stop()
    await job.ack()  # lost: logged, never raised; RabbitMQ redelivers the job
    assert job.settled == "ack"
    with pytest.raises(PipelineStateError):
        await d.push(Message("j", b"y", unique_name))
    assert await raw.count(unique_name) == 1


async def test_push_to_a_pipeline_never_run_is_kept_or_refused(built: Built, raw: Raw,
                                                                unique_name: str) -> None:
    """RoadRunner binds the queue on the first run, so RabbitMQ drops what is pushed
    before it and the push succeeds. rrjobs declares and binds the queue when the
    pipeline is built, and publishes ``mandatory``: a job nobody could receive is an error."""
    track(raw, unique_name)
    d = await built.config_driver(unique_name, opts(unique_name))
    await d.push(Message("j", b"kept", unique_name))  # never run, never consumed
    await d.push(Message("j", b"later", unique_name, delay=0.2))  # via a delay queue

    async def both_queued() -> bool:
        return await raw.count(unique_name) == 2

    await eventually(both_queued, what="both jobs in the queue")
    missing = f"{unique_name}-missing"
    raw.exchanges.append(f"{missing}.ex")
    undeclared = await built.config_driver(missing, opts(missing, queue_declare=False))
    with pytest.raises(PublishFailedError, match="no queue is bound"):
        await undeclared.push(Message("j", b"lost?", missing))
    assert await raw.count(missing) is None


async def test_stat_reports_a_pipeline_whose_queue_is_gone_not_ready_and_the_others(
        amqp_url: str, raw: Raw, unique_name: str) -> None:
    """RoadRunner's Stat fails whole when one pipeline's queue is missing; rrjobs reports
    that pipeline not ready, with the reason, and the others as usual."""
    gone, kept = f"{unique_name}-gone", f"{unique_name}-kept"
    for name in (gone, kept):
        track(raw, name)
    # ``gone`` is declared, not consumed: a consumer would declare its queue again at
    # once when RabbitMQ cancels it (the driver heals itself), and stat could not see
    # the queue missing.
    config = Config({"amqp": {"addr": amqp_url}, "jobs": {
        "consume": [kept], "pipelines": {
            name: {"driver": "amqp", "config": opts(name)} for name in (gone, kept)}}})
    jobs = Jobs(config, App("stat"))
    await jobs.start()
    try:
        await jobs.push(Message("j", b"x", kept, delay=30))
        chan = await raw.channel()
        await chan.queue_delete(gone)  # behind the driver's back
        await chan.close()
        stats = {s.state.pipeline: s.state for s in await jobs.stat()}
        assert stats[gone].ready is False
        assert gone in stats[gone].error_message and "not found" in stats[gone].error_message
        assert stats[kept].ready is True and stats[kept].error_message == ""
        assert (stats[kept].queue, stats[kept].delayed) == (kept, 1)
    finally:
        await jobs.stop()
