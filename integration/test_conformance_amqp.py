"""The driver conformance suite on the ``amqp`` driver, against a real RabbitMQ."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import aio_pika
import pytest
from pamqp.common import FieldTable

from integration.brokers.amqp import MAX_MESSAGE_SIZE
from rrjobs.core.message import Message
from rrjobs.testing import ConformanceSuite, DriverFactory, HookUnsupported, Pipe

#: The exchange every conformance pipeline publishes through.
EXCHANGE = "rrjobs.conformance"
#: RabbitMQ sends a message's headers in one content-header frame (frame_max
#: is 128 KiB by default): a larger header table cannot be published.
HEADER_FRAME = 128 * 1024 - 1024


class AMQPFactory(DriverFactory):
    """Pipelines on one durable direct exchange, one durable queue each, with a
    dead-letter queue ``<name>.dlq`` behind the default exchange."""

    driver = "amqp"
    shared_broker = True
    delivery_timeout = 15.0
    redelivery_timeout = 15.0
    delay_tolerance = 3.0
    delay_granularity = 0.001  # per-message TTLs in whole milliseconds
    broker_max_body = MAX_MESSAGE_SIZE  # the test broker's, over the driver's max_payload

    def __init__(self, url: str) -> None:
        self.url = url
        self.connection: aio_pika.abc.AbstractConnection | None = None
        self._dead: dict[str, list[aio_pika.abc.AbstractIncomingMessage]] = {}

    async def open(self) -> None:
        self.connection = await aio_pika.connect(self.url)

    async def close(self) -> None:
        if self.connection is not None:
            await self.connection.close()

    async def _channel(self) -> aio_pika.abc.AbstractChannel:
        assert self.connection is not None
        return await self.connection.channel()

    async def cleanup(self, names: Sequence[str]) -> None:
        for name in names:
            for queue in (name, f"{name}.dlq"):
                channel = await self._channel()
                with contextlib.suppress(Exception):
                    raw = await channel.get_underlay_channel()
                    await raw.queue_delete(queue)
                with contextlib.suppress(Exception):
                    await channel.close()

    def global_config(self) -> dict[str, Any]:
        return {"amqp": {"addr": self.url}}

    def pipeline_options(self, name: str) -> dict[str, Any]:
        return {
            "queue": name,
            "routing_key": name,
            "exchange": EXCHANGE,
            "exchange_durable": True,
            "durable": True,
            "prefetch": 50,
            "queue_headers": {
                "x-dead-letter-exchange": "",
                "x-dead-letter-routing-key": f"{name}.dlq",
            },
        }

    def prefetch_options(self, jobs: int) -> dict[str, Any]:
        return {"prefetch": jobs}

    async def publish_raw(self, pipe: Pipe, body: bytes, headers: Mapping[str, str]) -> None:
        await self._publish_plain(pipe, body, dict(headers))

    async def publish_raw_headers(self, pipe: Pipe, body: bytes,
                                  headers: Mapping[str, bytes]) -> None:
        """Each value as an AMQP byte array (``x``), as RoadRunner writes ``rr_headers``."""
        if sum(len(v) for v in headers.values()) > HEADER_FRAME:
            raise HookUnsupported("RabbitMQ carries a message's headers in one frame of at "
                                  "most frame_max (128 KiB)")
        await self._publish_plain(pipe, body, {k: bytearray(v) for k, v in headers.items()})

    async def _publish_plain(self, pipe: Pipe, body: bytes, table: FieldTable) -> None:
        channel = await self._channel()
        try:
            exchange = await channel.get_exchange(EXCHANGE)
            await exchange.publish(
                aio_pika.Message(
                    body, headers=table, delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                ),
                routing_key=pipe.name,
            )
        finally:
            await channel.close()

    async def publish_roadrunner(self, pipe: Pipe, msg: Message) -> None:
        """RoadRunner's table (reference §10): S strings, x JSON headers, I delay,
        l priority, t auto_ack; content type octet-stream, persistent."""
        from rrjobs.drivers.amqp.codec import Long, SignedInt

        table: FieldTable = {
            "rr_id": msg.id,
            "rr_job": msg.name,
            "rr_pipeline": pipe.name,
            "rr_headers": bytearray(json.dumps(msg.headers).encode()),
            "rr_delay": SignedInt(0),
            "rr_priority": Long(msg.priority),
            "rr_auto_ack": False,
        }
        channel = await self._channel()
        try:
            exchange = await channel.get_exchange(EXCHANGE)
            await exchange.publish(
                aio_pika.Message(
                    msg.payload,
                    headers=table,
                    content_type="application/octet-stream",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=pipe.name,
            )
        finally:
            await channel.close()

    async def _drain_dead(self, name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """Every message dead-lettered to ``<name>.dlq`` so far (the queue is
        declared on first use and drained into a list)."""
        got = self._dead.setdefault(name, [])
        channel = await self._channel()
        try:
            queue = await channel.declare_queue(f"{name}.dlq", durable=True)
            while True:
                message = await queue.get(fail=False, no_ack=True)
                if message is None:
                    break
                got.append(message)
        finally:
            await channel.close()
        return list(got)

    async def dead_letters(self, pipe: Pipe) -> list[bytes]:
        return [m.body for m in await self._drain_dead(pipe.name)]

    async def dead_letter_options(self, name: str) -> dict[str, Any]:
        return {}  # every pipeline's queue dead-letters to <name>.dlq

    async def dead_letter_messages(self, name: str) -> list[Message]:
        """The job headers of each message: ``rr_headers`` (JSON) of its header table."""
        out = []
        for m in await self._drain_dead(name):
            table = m.headers
            carried = table["rr_headers"]
            assert isinstance(carried, bytes | bytearray)
            out.append(Message(str(table["rr_job"]), m.body, name, id=str(table["rr_id"]),
                               headers=json.loads(carried)))
        return out


@pytest.fixture
def driver_factory(amqp_url: str) -> AMQPFactory:
    return AMQPFactory(amqp_url)


class TestAMQPConformance(ConformanceSuite):
    marker = "amqp"
