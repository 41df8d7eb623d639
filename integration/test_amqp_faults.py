"""The ``amqp`` driver when the connection fails: reconnecting, resuming consumption,
lost acks, channels closed by RabbitMQ, and the runtime's restart when redialling is
exhausted. The connection is cut with a TCP proxy between the driver and RabbitMQ."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import aiormq
import pytest

from integration.test_amqp_driver import Built, opts
from integration.waiting import eventually, nothing, take
from rrjobs.config import Config
from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.core.queue import PriorityQueue
from rrjobs.drivers.amqp import AMQPDriver
from rrjobs.runtime.app import App
from rrjobs.runtime.jobs import Jobs

pytestmark = [pytest.mark.amqp, pytest.mark.timeout(120)]


class Proxy:
    """A TCP proxy to RabbitMQ that can cut every connection and refuse new ones."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.listen_port = 0
        self.blocked = False
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.accepted = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.listen_port = self.server.sockets[0].getsockname()[1]

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            writer.transport.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.blocked:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        self.writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        self.writers.difference_update((writer, up_writer))

    def cut(self) -> None:
        """Drop every proxied connection at once (as a network failure would)."""
        for writer in list(self.writers):
            writer.transport.abort()
        self.writers.clear()

    def block(self) -> None:
        self.blocked = True
        self.cut()

    def unblock(self) -> None:
        self.blocked = False

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 2)

    def url(self, amqp_url: str) -> str:
        parts = urlsplit(amqp_url)
        netloc = parts.netloc.rsplit("@", 1)
        creds = netloc[0] + "@" if len(netloc) == 2 else ""
        return urlunsplit(parts._replace(netloc=f"{creds}127.0.0.1:{self.listen_port}"))


@pytest.fixture
async def proxy(amqp_url: str) -> AsyncIterator[Proxy]:
    parts = urlsplit(amqp_url)
    p = Proxy(parts.hostname or "127.0.0.1", parts.port or 5672)
    await p.start()
    try:
        yield p
    finally:
        await p.close()


@pytest.fixture
async def built(proxy: Proxy, amqp_url: str) -> AsyncIterator[Built]:
    b = Built(proxy.url(amqp_url))
    try:
        yield b
    finally:
        await b.stop()


Admin = aio_pika.abc.AbstractConnection


@pytest.fixture
async def admin(amqp_url: str) -> AsyncIterator[Admin]:
    """A connection straight to RabbitMQ (not through the proxy)."""
    connection = await aio_pika.connect(amqp_url)
    try:
        yield connection
    finally:
        await connection.close()


async def raw_channel(admin: Admin) -> aiormq.abc.AbstractChannel:
    chan = await admin.channel()
    return await chan.get_underlay_channel()


async def cleanup(admin: Admin, *queues: str) -> None:
    for q in queues:
        with contextlib.suppress(Exception):
            await (await raw_channel(admin)).queue_delete(q)


async def test_cut_connection_reconnects_and_resumes_consuming(
        built: Built, proxy: Proxy, admin: Admin,
        unique_name: str) -> None:
    q = PriorityQueue()
    d = await built.config_driver(unique_name, opts(unique_name, durable=True), queue=q)
    try:
        await d.run(d.pipeline)
        await d.push(Message("j", b"held", unique_name))
        (held,) = await take(q)
        proxy.cut()
        await eventually(lambda: d.link.reconnects == 1, what="reconnected")
        await held.ack()  # on the dead channel: lost, not raised
        (again,) = await take(q, within=15)  # RabbitMQ redelivers the unacked job
        assert again.id == held.id
        await again.ack()
        await d.push(Message("j", b"after", unique_name))
        (after,) = await take(q)
        assert after.payload == b"after"
        await after.ack()
        state = await d.state()
        assert state.ready is True
    finally:
        await cleanup(admin, unique_name)


async def test_pushes_in_flight_survive_a_cut(built: Built, proxy: Proxy,
                                              admin: Admin,
                                              unique_name: str) -> None:
    q = PriorityQueue()
    d = await built.config_driver(unique_name, opts(unique_name, durable=True, prefetch=500),
                                  queue=q)
    try:
        await d.run(d.pipeline)
        msgs = [Message("j", f"m{i}".encode(), unique_name) for i in range(300)]
        pushing = asyncio.gather(*(d.push_batch(msgs[i:i + 50]) for i in range(0, 300, 50)))
        await asyncio.sleep(0.05)
        proxy.cut()
        await pushing  # every push returns once confirmed, across the reconnection
        seen: set[str] = set()
        async with asyncio.timeout(30):
            while not {m.id for m in msgs} <= seen:
                job = await q.extract_min()
                seen.add(job.id)
                await job.ack()
        await eventually(lambda: d.link.reconnects >= 1, what="reconnected after the cut")
    finally:
        await cleanup(admin, unique_name)


async def test_consume_channel_closed_by_rabbitmq_is_reopened(
        built: Built, admin: Admin, unique_name: str) -> None:
    """RoadRunner #2091: the redialer must resume consuming after only the
    delivery channel was closed (here by an ack of an unknown delivery tag, as
    ``consumer_timeout`` does with PRECONDITION_FAILED)."""
    q = PriorityQueue()
    d = await built.config_driver(unique_name, opts(unique_name, durable=True), queue=q)
    try:
        await d.run(d.pipeline)
        await d.push(Message("j", b"one", unique_name))
        (one,) = await take(q)
        consumer = d._consumer
        assert consumer is not None
        await consumer.raw.basic_ack(987654)  # RabbitMQ closes the channel for this
        await eventually(lambda: d._consumer is not consumer and d._consumer is not None
                         and d._consumer.subscribed, what="a new consume channel")
        await one.ack()  # lost with the old channel
        (again,) = await take(q)
        assert again.id == one.id
        await again.ack()
        await d.push(Message("j", b"two", unique_name))
        (two,) = await take(q)
        await two.ack()
        assert d.link.reconnects == 0  # the connection itself never dropped
    finally:
        await cleanup(admin, unique_name)


async def test_queue_deleted_while_consuming_is_declared_again(
        built: Built, admin: Admin, unique_name: str) -> None:
    q = PriorityQueue()
    d = await built.config_driver(unique_name, opts(unique_name), queue=q)
    try:
        await d.run(d.pipeline)
        await (await raw_channel(admin)).queue_delete(unique_name)

        async def consuming_again() -> bool:
            probe = await raw_channel(admin)
            try:
                ok = await probe.queue_declare(unique_name, passive=True)
            except Exception:
                return False  # a failed passive declare closes its channel
            await probe.close()
            return bool(ok.consumer_count)

        await eventually(consuming_again, what="queue declared and consumed again")
        await d.push(Message("j", b"back", unique_name))
        (job,) = await take(q)
        assert job.payload == b"back"
        await job.ack()
    finally:
        await cleanup(admin, unique_name)


async def test_without_a_runtime_the_driver_keeps_redialling(
        built: Built, proxy: Proxy, admin: Admin,
        unique_name: str) -> None:
    q = PriorityQueue()
    d = await built.config_driver(unique_name, opts(unique_name, redial_timeout=0.5), queue=q)
    try:
        await d.run(d.pipeline)
        proxy.block()
        await asyncio.sleep(1.5)  # three redial budgets go by
        assert not d.link.up
        with pytest.raises(Exception, match="not connected"):
            await d.state()
        proxy.unblock()
        await eventually(lambda: d.link.up, within=15, what="reconnected")
        await d.push(Message("j", b"back", unique_name))
        (job,) = await take(q)
        await job.ack()
        assert d.restart_requested is False
    finally:
        await cleanup(admin, unique_name)


async def test_exhausted_redial_makes_the_runtime_restart_the_pipeline(
        proxy: Proxy, amqp_url: str, admin: Admin,
        unique_name: str) -> None:
    handled: list[Job] = []
    app = App("faults")

    @app.handler("j")
    async def handle(job: Job) -> None:
        handled.append(job)

    options: dict[str, Any] = opts(unique_name, durable=True, redial_timeout=0.5)
    config = Config({"amqp": {"addr": proxy.url(amqp_url)},
                     "jobs": {"consume": [unique_name], "pool": {"num_workers": 2},
                              "pipelines": {unique_name: {"driver": "amqp",
                                                          "config": options}}}})
    jobs = Jobs(config, app)
    await jobs.start()
    try:
        first = jobs._pipelines[unique_name].driver
        assert isinstance(first, AMQPDriver)
        await jobs.push(Message("j", b"before", unique_name))
        await eventually(lambda: len(handled) == 1, what="first job handled")
        proxy.block()
        await eventually(lambda: first.restart_requested, within=10, what="restart requested")
        await asyncio.sleep(1.5)  # the runtime's first rebuild attempts fail
        proxy.unblock()
        await eventually(lambda: jobs._pipelines[unique_name].driver is not first
                         and not jobs._restarts, within=40, what="pipeline rebuilt")
        assert first.stopped
        await jobs.push(Message("j", b"after", unique_name))
        await eventually(lambda: any(j.payload == b"after" for j in handled), within=15,
                         what="handled after restart")
        # the first job's ack may not have left before the link went down: then it is
        # delivered again (at least once), and nothing else is
        assert {j.payload for j in handled} == {b"before", b"after"}
        (stat,) = await jobs.stat()
        assert stat.state.ready is True
    finally:
        await jobs.stop()
        await cleanup(admin, unique_name)


async def test_stop_during_an_outage_is_prompt(built: Built, proxy: Proxy,
                                               admin: Admin,
                                               unique_name: str) -> None:
    q = PriorityQueue()
    d = await built.config_driver(unique_name, opts(unique_name), queue=q)
    try:
        await d.run(d.pipeline)
        proxy.block()
        pushing = asyncio.create_task(d.push(Message("j", b"waiting", unique_name)))
        await asyncio.sleep(0.3)
        assert not pushing.done()  # waits for the connection to come back
        async with asyncio.timeout(5):
            await d.stop()
        with pytest.raises(Exception):  # noqa: B017 - LinkDownError or PipelineStateError
            await pushing
        await nothing(q, 0.1)
    finally:
        await cleanup(admin, unique_name)
