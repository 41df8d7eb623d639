"""Pub/Sub emulator smoke test with the raw google-cloud-pubsub GAPIC clients.

The async GAPIC clients ignore ``PUBSUB_EMULATOR_HOST``: they get a transport over a
``grpc.aio.insecure_channel`` to the emulator instead, so nothing blocks the event loop.
Publish, pull, ack, and a redelivery after ``modify_ack_deadline(0)`` (nack).
"""

from __future__ import annotations

import asyncio

import grpc  # type: ignore[import-untyped,unused-ignore]
import pytest
from google.api_core.exceptions import DeadlineExceeded
from google.pubsub_v1 import PublisherAsyncClient, PubsubMessage, SubscriberAsyncClient
from google.pubsub_v1.services.publisher.transports import PublisherGrpcAsyncIOTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcAsyncIOTransport
from google.pubsub_v1.types import ReceivedMessage

pytestmark = [pytest.mark.smoke, pytest.mark.pubsub, pytest.mark.timeout(180)]


async def _pull_one(subscriber: SubscriberAsyncClient, subscription: str) -> ReceivedMessage:
    """Pull until a message comes (a pull may return nothing even when one is ready)."""
    while True:
        response = await subscriber.pull(subscription=subscription, max_messages=1, timeout=10)
        if response.received_messages:
            (received,) = response.received_messages
            return received


async def test_publish_pull_ack_and_redelivery_after_zero_deadline(
    pubsub_emulator_host: str, pubsub_project: str, unique_name: str
) -> None:
    topic = f"projects/{pubsub_project}/topics/{unique_name}"
    subscription = f"projects/{pubsub_project}/subscriptions/{unique_name}"
    async with asyncio.timeout(45):
        channel = grpc.aio.insecure_channel(pubsub_emulator_host)
        publisher = PublisherAsyncClient(transport=PublisherGrpcAsyncIOTransport(channel=channel))
        subscriber = SubscriberAsyncClient(
            transport=SubscriberGrpcAsyncIOTransport(channel=channel)
        )
        try:
            await publisher.create_topic(name=topic)
            await subscriber.create_subscription(
                name=subscription, topic=topic, ack_deadline_seconds=30
            )
            published = await publisher.publish(
                topic=topic, messages=[PubsubMessage(data=b"job-1", attributes={"n": "1"})]
            )
            (message_id,) = published.message_ids

            first = await _pull_one(subscriber, subscription)
            assert first.message.message_id == message_id
            assert first.message.data == b"job-1"
            assert dict(first.message.attributes) == {"n": "1"}

            # Nack: a zero ack deadline makes the message deliverable again at once.
            await subscriber.modify_ack_deadline(
                subscription=subscription, ack_ids=[first.ack_id], ack_deadline_seconds=0
            )
            again = await _pull_one(subscriber, subscription)
            assert again.message.message_id == message_id
            assert again.message.data == b"job-1"
            assert again.ack_id != first.ack_id

            await subscriber.acknowledge(subscription=subscription, ack_ids=[again.ack_id])
            # Acked: nothing more to pull (an empty pull on the emulator waits out its deadline).
            try:
                left = await subscriber.pull(subscription=subscription, max_messages=1, timeout=2)
                assert not left.received_messages
            except DeadlineExceeded:
                pass
        finally:
            try:
                await subscriber.delete_subscription(subscription=subscription)
                await publisher.delete_topic(topic=topic)
            finally:
                await channel.close()
