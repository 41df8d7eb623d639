"""RabbitMQ smoke test with the raw aio-pika client: publish, consume, ack, nack-requeue."""

from __future__ import annotations

import asyncio

import aio_pika
import pytest
from pamqp.commands import Basic

pytestmark = [pytest.mark.smoke, pytest.mark.amqp, pytest.mark.timeout(180)]


async def test_publish_consume_ack_and_redelivery_after_nack(
    amqp_url: str, unique_name: str
) -> None:
    async with asyncio.timeout(60):
        connection = await aio_pika.connect(amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            await channel.set_qos(prefetch_count=1)
            queue = await channel.declare_queue(unique_name, durable=True)
            try:
                # With publisher confirms, publish() returns once the broker has confirmed.
                for body in (b"job-1", b"job-2"):
                    confirmation = await channel.default_exchange.publish(
                        aio_pika.Message(body, message_id=body.decode(), headers={"attempt": 1}),
                        routing_key=unique_name,
                    )
                    assert isinstance(confirmation, Basic.Ack)

                seen: list[tuple[bytes, bool]] = []
                async with queue.iterator() as messages:
                    first = await anext(messages)
                    seen.append((first.body, first.redelivered or False))
                    assert first.body == b"job-1"
                    assert first.message_id == "job-1"
                    assert first.headers == {"attempt": 1}
                    await first.nack(requeue=True)  # basic.nack, requeue

                    again = await anext(messages)
                    seen.append((again.body, again.redelivered or False))
                    await again.ack()

                    second = await anext(messages)
                    seen.append((second.body, second.redelivered or False))
                    await second.ack()

                assert seen == [(b"job-1", False), (b"job-1", True), (b"job-2", False)]
                # Both acked: nothing is left in the queue.
                assert await queue.get(no_ack=False, fail=False, timeout=5) is None
                declared = await channel.declare_queue(unique_name, passive=True)
                assert declared.declaration_result.message_count == 0
            finally:
                await queue.delete(if_unused=False, if_empty=False)
