"""The floor of benchmarks/amqp_e2e.py: the same work as a minimal hand-written pamqp loop.

One AMQP connection on an ``asyncio.Protocol``, frames encoded and decoded by
pamqp, nothing else: ``jobs`` persistent publishes (the same ~100-byte bodies,
a header table of the same seven ``rr_*`` fields) to a fresh durable queue, in
batches of ``batch`` written at once on a confirm channel, each batch waiting
for its confirms (``multiple``); then a consumer at ``prefetch`` that acks in
runs (``multiple``, a quarter of the prefetch, and whatever is left when the
reads pause). No runtime, no handler, no job objects. The figures (and the
broker's CPU, with ``broker_pid``) are what rrjobs' driver is compared with::

    python benchmarks/amqp_e2e.py --runs 3 --floor
"""

from __future__ import annotations

import asyncio
import datetime
import time
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

from pamqp import commands, frame, header
from pamqp.body import ContentBody
from pamqp.heartbeat import Heartbeat

PUBLISH, CONSUME = 1, 2


class Floor(asyncio.Protocol):
    """One connection; frames are handed to :meth:`on_frame` as they are read."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.replies: asyncio.Queue[Any] = asyncio.Queue()
        self.confirmed = 0
        self.confirm_target = 0
        self.confirms_done: asyncio.Future[None] | None = None
        self.consumed = 0
        self.consume_target = 0
        self.consume_done: asyncio.Future[None] | None = None
        self.last_tag = 0
        self.acked = 0
        self.ack_every = 25
        self._pending_deliver: Any = None
        #: called with each delivery's body (one body frame: the bodies here are small)
        self.on_body: Callable[[bytes], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buffer
        buf += data
        offset = 0
        while len(buf) - offset >= 8:
            size = int.from_bytes(buf[offset + 3:offset + 7], "big")
            end = offset + 8 + size
            if end > len(buf):
                break
            _, channel, value = frame.unmarshal(bytes(buf[offset:end]))
            offset = end
            self.on_frame(channel, value)
        del buf[:offset]
        if self.consumed > self.acked:  # reads paused: ack what is there
            self.ack()

    def send(self, channel: int, *values: Any) -> None:
        assert self.transport is not None
        self.transport.write(b"".join(frame.marshal(v, channel) for v in values))

    def on_frame(self, channel: int, value: Any) -> None:
        if isinstance(value, commands.Basic.Deliver):
            self._pending_deliver = value
        elif isinstance(value, ContentBody | header.ContentHeader):
            if isinstance(value, ContentBody) or value.body_size == 0:
                if self.on_body is not None:
                    self.on_body(value.value if isinstance(value, ContentBody) else b"")
                self.on_delivery()
        elif isinstance(value, commands.Basic.Ack) and channel == PUBLISH:
            self.confirmed = value.delivery_tag
            done = self.confirms_done
            if self.confirmed >= self.confirm_target and done is not None and not done.done():
                done.set_result(None)
        elif isinstance(value, Heartbeat):
            self.send(0, Heartbeat())
        else:
            self.replies.put_nowait(value)

    def on_delivery(self) -> None:
        self.last_tag = self._pending_deliver.delivery_tag
        self.consumed += 1
        if self.consumed - self.acked >= self.ack_every:
            self.ack()

    def ack(self) -> None:
        self.send(CONSUME, commands.Basic.Ack(delivery_tag=self.last_tag, multiple=True))
        self.acked = self.consumed
        done = self.consume_done
        if self.acked >= self.consume_target and done is not None and not done.done():
            done.set_result(None)

    async def rpc(self, channel: int, value: Any) -> Any:
        self.send(channel, value)
        return await self.replies.get()


async def open_floor(url: str) -> Floor:
    parts = urlsplit(url)
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_connection(Floor, parts.hostname or "127.0.0.1",
                                            parts.port or 5672)
    assert proto.transport is not None
    proto.transport.write(header.ProtocolHeader().marshal())
    await proto.replies.get()  # Connection.Start
    user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
    tune = await proto.rpc(0, commands.Connection.StartOk(
        client_properties={"product": "rrjobs-floor"}, mechanism="PLAIN",
        response=f"\0{user}\0{password}", locale="en_US"))
    proto.send(0, commands.Connection.TuneOk(channel_max=tune.channel_max,
                                              frame_max=tune.frame_max, heartbeat=0))
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    await proto.rpc(0, commands.Connection.Open(virtual_host=vhost))
    for channel in (PUBLISH, CONSUME):
        await proto.rpc(channel, commands.Channel.Open())
    await proto.rpc(PUBLISH, commands.Confirm.Select())
    return proto


def headers(i: int) -> dict[str, Any]:
    return {"rr_id": uuid.uuid4().hex, "rr_job": "bench.e2e", "rr_pipeline": "floor",
            "rr_headers": bytearray(b"{}"), "rr_delay": 0, "rr_priority": 10,
            "rr_auto_ack": False}


async def publish(proto: Floor, queue: str, bodies: list[bytes], batch: int) -> None:
    """Publish ``bodies`` to ``queue``, ``batch`` at a time, each batch confirmed."""
    loop = asyncio.get_running_loop()
    tag = proto.confirm_target
    for start in range(0, len(bodies), batch):
        chunk = bodies[start:start + batch]
        now = datetime.datetime.now(datetime.UTC)
        out = []
        for i, body in enumerate(chunk):
            props = commands.Basic.Properties(
                content_type="application/octet-stream", delivery_mode=2, timestamp=now,
                headers=headers(start + i), message_id=uuid.uuid4().hex)
            out += (commands.Basic.Publish(exchange="", routing_key=queue, mandatory=True),
                    header.ContentHeader(body_size=len(body), properties=props),
                    ContentBody(body))
        tag += len(chunk)
        proto.confirm_target = tag
        proto.confirms_done = loop.create_future()
        proto.send(PUBLISH, *out)
        await proto.confirms_done


async def consume(proto: Floor, queue: str, jobs_n: int, prefetch: int) -> None:
    """Consume ``jobs_n`` deliveries of ``queue`` at ``prefetch``, acked in runs."""
    proto.consume_target = jobs_n
    proto.ack_every = max(1, prefetch // 4)
    proto.consume_done = asyncio.get_running_loop().create_future()
    await proto.rpc(CONSUME, commands.Basic.Qos(prefetch_count=prefetch))
    await proto.rpc(CONSUME, commands.Basic.Consume(queue=queue))
    await proto.consume_done


async def one_floor_run(url: str, bodies: list[bytes], batch: int, prefetch: int,
                        cpu: Callable[[], float]) -> dict[str, Any]:
    """Publish then consume ``bodies``; the phases' seconds and CPU (``cpu()``: the
    broker's CPU seconds, or 0)."""
    proto = await open_floor(url)
    queue = f"floor-{uuid.uuid4().hex[:8]}"
    await proto.rpc(PUBLISH, commands.Queue.Declare(queue=queue, durable=True))
    jobs_n = len(bodies)
    t0, c0, b0 = time.perf_counter(), time.process_time(), cpu()
    await publish(proto, queue, bodies, batch)
    t1, c1, b1 = time.perf_counter(), time.process_time(), cpu()
    await consume(proto, queue, jobs_n, prefetch)
    t2, c2, b2 = time.perf_counter(), time.process_time(), cpu()
    await close(proto, queue)
    enqueue_s, consume_s = t1 - t0, t2 - t1
    return {"jobs": jobs_n, "unique": proto.consumed, "enqueue": jobs_n / enqueue_s,
            "consume": jobs_n / consume_s, "e2e": jobs_n / (enqueue_s + consume_s),
            "cpu_s_per_1k": (c2 - c0) / jobs_n * 1000, "enqueue_cpu_s": c1 - c0,
            "consume_cpu_s": c2 - c1, "broker_enqueue_cpu_s": b1 - b0,
            "broker_consume_cpu_s": b2 - b1,
            "broker_cpu_s_per_1k": (b2 - b0) / jobs_n * 1000}


async def close(proto: Floor, queue: str) -> None:
    """Delete ``queue`` and close the connection."""
    await proto.rpc(PUBLISH, commands.Queue.Delete(queue=queue))
    assert proto.transport is not None
    proto.transport.close()
