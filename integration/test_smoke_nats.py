"""NATS JetStream smoke test with the raw nats-py client: publish, pull, ack, nak."""

from __future__ import annotations

import asyncio

import nats
import nats.errors
import pytest
from nats.js.api import AckPolicy, ConsumerConfig

pytestmark = [pytest.mark.smoke, pytest.mark.nats, pytest.mark.timeout(180)]


async def test_publish_pull_ack_and_redelivery_after_nak(nats_url: str, unique_name: str) -> None:
    subject = f"{unique_name}.jobs"
    async with asyncio.timeout(45):
        client = await nats.connect(nats_url, connect_timeout=5, max_reconnect_attempts=0)
        try:
            js = client.jetstream()
            await js.add_stream(name=unique_name, subjects=[f"{unique_name}.>"])
            try:
                ack = await js.publish(
                    subject, b"job-1", headers={"Nats-Msg-Id": f"{unique_name}-1", "n": "1"}
                )
                assert (ack.stream, ack.seq, ack.duplicate) == (unique_name, 1, None)
                # Same Nats-Msg-Id: de-duplicated by the stream.
                dup = await js.publish(
                    subject, b"job-1", headers={"Nats-Msg-Id": f"{unique_name}-1"}
                )
                assert dup.duplicate is True

                sub = await js.pull_subscribe(
                    subject,
                    durable="worker",
                    stream=unique_name,
                    config=ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=30),
                )
                (msg,) = await sub.fetch(1, timeout=5)
                assert msg.data == b"job-1"
                assert msg.headers is not None and msg.headers["n"] == "1"
                assert msg.metadata.num_delivered == 1
                await msg.nak()

                (msg,) = await sub.fetch(1, timeout=5)
                assert msg.data == b"job-1"
                assert msg.metadata.num_delivered == 2
                assert msg.metadata.sequence.stream == 1
                await msg.ack_sync()

                with pytest.raises(nats.errors.TimeoutError):
                    await sub.fetch(1, timeout=1)
                info = await js.consumer_info(unique_name, "worker")
                assert (info.num_ack_pending, info.num_pending) == (0, 0)
            finally:
                await js.delete_stream(unique_name)
        finally:
            await client.close()
