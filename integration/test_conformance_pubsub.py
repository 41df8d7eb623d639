"""The driver conformance suite on the ``google_pub_sub`` driver, against the Pub/Sub emulator."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import grpc  # type: ignore[import-untyped,unused-ignore]
import pytest
from google.api_core import exceptions as gexc
from google.pubsub_v1 import PublisherAsyncClient, PubsubMessage, SubscriberAsyncClient
from google.pubsub_v1.services.publisher.transports import PublisherGrpcAsyncIOTransport
from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcAsyncIOTransport

from rrjobs.core.fields import RR_FIELDS
from rrjobs.core.message import Message
from rrjobs.drivers.pubsub import PubSubConstructor
from rrjobs.drivers.pubsub.codec import MAX_ATTRIBUTE_VALUE, attributes
from rrjobs.testing import ConformanceSuite, DriverFactory, HookUnsupported, Pipe, suite


class PubSubFactory(DriverFactory):
    """One topic per pipeline (``<name>``) and the subscription ``<name>``."""

    driver = "google_pub_sub"
    constructor = PubSubConstructor
    shared_broker = True
    ack_deadline = 2.0
    delivery_timeout = 15.0
    redelivery_timeout = 10.0
    delay_tolerance = 3.0
    delay_granularity = 1.0  # ack deadlines and rr_delay in whole seconds

    def __init__(self, host: str, project: str) -> None:
        self.host = host
        self.project = project
        self.channel: Any = None
        self.publisher: PublisherAsyncClient | None = None
        self.subscriber: SubscriberAsyncClient | None = None
        self._letters: dict[str, list[PubsubMessage]] = {}

    async def open(self) -> None:
        self.channel = grpc.aio.insecure_channel(self.host)
        self.publisher = PublisherAsyncClient(
            transport=PublisherGrpcAsyncIOTransport(channel=self.channel))
        self.subscriber = SubscriberAsyncClient(
            transport=SubscriberGrpcAsyncIOTransport(channel=self.channel))

    async def close(self) -> None:
        if self.channel is not None:
            await self.channel.close()

    def topic(self, name: str) -> str:
        return f"projects/{self.project}/topics/{name}"

    def subscription(self, name: str) -> str:
        return f"projects/{self.project}/subscriptions/{name}"

    async def cleanup(self, names: Sequence[str]) -> None:
        assert self.publisher is not None and self.subscriber is not None
        for name in names:
            for sub in (name, f"{name}-dlq"):
                with contextlib.suppress(gexc.GoogleAPICallError):
                    await self.subscriber.delete_subscription(subscription=self.subscription(sub))
            for topic in (name, f"{name}-dlq"):
                with contextlib.suppress(gexc.GoogleAPICallError):
                    await self.publisher.delete_topic(topic=self.topic(topic))

    def global_config(self) -> dict[str, Any]:
        return {"google_pub_sub": {"endpoint": self.host, "insecure": True}}

    def pipeline_options(self, name: str) -> dict[str, Any]:
        return {"project_id": self.project, "topic": name, "prefetch": 100}

    def lease_options(self, seconds: float) -> dict[str, Any]:
        return {"ack_deadline": int(seconds)}

    async def _publish(self, pipe: Pipe, data: bytes, attrs: Mapping[str, str]) -> None:
        assert self.publisher is not None
        await self.publisher.publish(topic=self.topic(pipe.name),
                                     messages=[PubsubMessage(data=data, attributes=attrs)])

    async def publish_raw(self, pipe: Pipe, body: bytes, headers: Mapping[str, str]) -> None:
        """Pub/Sub refuses a message with neither data nor attributes: an empty
        body without headers gets one foreign attribute (``content-type``)."""
        if not body and not headers:
            headers = {"content-type": "application/octet-stream"}
        await self._publish(pipe, body, headers)

    async def publish_raw_headers(self, pipe: Pipe, body: bytes,
                                  headers: Mapping[str, bytes]) -> None:
        """Attributes are text of at most 1024 bytes each (Pub/Sub's limit)."""
        try:
            text = {k: v.decode() for k, v in headers.items()}
        except UnicodeDecodeError:
            raise HookUnsupported("Pub/Sub attributes are text: bytes that are not UTF-8 "
                                  "cannot be published") from None
        if any(len(v) > MAX_ATTRIBUTE_VALUE for v in headers.values()):
            raise HookUnsupported(f"Pub/Sub attribute values are at most "
                                  f"{MAX_ATTRIBUTE_VALUE} bytes")
        await self._publish(pipe, body, text)

    def prefetch_options(self, jobs: int) -> dict[str, Any]:
        return {"prefetch": jobs}

    async def publish_roadrunner(self, pipe: Pipe, msg: Message) -> None:
        """RoadRunner's layout (reference §10): data = payload; string attributes
        rr_id, rr_job, rr_delay, rr_headers (JSON), rr_priority, rr_auto_ack."""
        await self._publish(pipe, msg.payload, attributes(
            msg.id, msg.name, msg.headers, msg.priority, int(msg.delay), msg.auto_ack))

    async def _dead(self, name: str) -> list[PubsubMessage]:
        """Every message pulled so far from the subscription ``<name>-dlq`` (the
        driver creates it; none before that)."""
        assert self.subscriber is not None
        got = self._letters.setdefault(name, [])
        sub = self.subscription(f"{name}-dlq")
        while True:
            try:  # the emulator holds an empty pull until its deadline
                response = await self.subscriber.pull(subscription=sub, max_messages=100,
                                                      timeout=1)
            except (gexc.DeadlineExceeded, gexc.NotFound):
                return list(got)
            if not response.received_messages:
                return list(got)
            got += [r.message for r in response.received_messages]
            await self.subscriber.acknowledge(
                subscription=sub, ack_ids=[r.ack_id for r in response.received_messages])

    async def dead_letters(self, pipe: Pipe) -> list[bytes]:
        return [m.data for m in await self._dead(pipe.name)]

    async def dead_letter_options(self, name: str) -> dict[str, Any]:
        return dead_letter_options(name)

    async def dead_letter_messages(self, name: str) -> list[Message]:
        """The job headers of each message: ``rr_headers`` (JSON) and every
        attribute that is not an ``rr_*`` field."""
        out = []
        for m in await self._dead(name):
            attrs = dict(m.attributes)
            headers = {k: [v] for k, v in attrs.items() if k not in RR_FIELDS}
            headers.update(json.loads(attrs.get("rr_headers", "{}")))
            out.append(Message(attrs["rr_job"], m.data, name, id=attrs["rr_id"],
                               headers=headers))
        return out


def dead_letter_options(name: str) -> dict[str, Any]:
    """A pipeline's dead letters to the topic ``<name>-dlq``."""
    return {"dead_letter_topic": f"{name}-dlq"}


@pytest.fixture
def driver_factory(pubsub_emulator_host: str, pubsub_project: str) -> PubSubFactory:
    return PubSubFactory(pubsub_emulator_host, pubsub_project)


class TestPubSubConformance(ConformanceSuite):
    marker = "pubsub"


class PubSubDeadLetterFactory(PubSubFactory):
    def pipeline_options(self, name: str) -> dict[str, Any]:
        return {**super().pipeline_options(name), **dead_letter_options(name)}


class TestPubSubDeadLetterConformance(suite.NackTests):
    """The nack section again with a ``dead_letter_topic`` (and the native policy)."""

    marker = "pubsub"

    @pytest.fixture
    def driver_factory(self, pubsub_emulator_host: str,
                       pubsub_project: str) -> PubSubDeadLetterFactory:
        return PubSubDeadLetterFactory(pubsub_emulator_host, pubsub_project)
