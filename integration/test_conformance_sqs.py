"""The driver conformance suite on the ``sqs`` driver, against ElasticMQ and moto."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from aiobotocore.session import get_session  # type: ignore[import-untyped,unused-ignore]

from integration.pytest_plugin import SqsEndpoint
from rrjobs.core.message import Message
from rrjobs.drivers.sqs import codec
from rrjobs.testing import ConformanceSuite, DriverFactory, HookUnsupported, Pipe, suite

pytestmark = [pytest.mark.sqs]


class SQSFactory(DriverFactory):
    """One standard queue per pipeline (``<name>``), long polling of 1 s."""

    driver = "sqs"
    shared_broker = True
    ack_deadline = 2.0
    delivery_timeout = 15.0
    redelivery_timeout = 10.0
    delay_tolerance = 3.0
    quiet_period = 0.7
    delay_granularity = 1.0  # DelaySeconds and visibility timeouts in whole seconds

    def __init__(self, endpoint: SqsEndpoint) -> None:
        self.endpoint = endpoint
        self._stack = contextlib.AsyncExitStack()
        self.client: Any = None
        self._letters: dict[str, list[Message]] = {}

    async def open(self) -> None:
        self.client = await self._stack.enter_async_context(
            get_session().create_client("sqs", **self.endpoint.client_kwargs()))

    async def close(self) -> None:
        await self._stack.aclose()

    async def _url(self, name: str) -> str:
        return str((await self.client.get_queue_url(QueueName=name))["QueueUrl"])

    async def cleanup(self, names: Sequence[str]) -> None:
        for name in names:
            for queue in (name, f"{name}-dlq"):
                with contextlib.suppress(Exception):
                    await self.client.delete_queue(QueueUrl=await self._url(queue))

    def global_config(self) -> dict[str, Any]:
        e = self.endpoint
        return {"sqs": {"key": e.access_key, "secret": e.secret_key, "region": e.region,
                        "endpoint": e.url}}

    def pipeline_options(self, name: str) -> dict[str, Any]:
        return {"queue": name, "prefetch": 10, "max_messages_in_flight": 100,
                "wait_time_seconds": 0}

    async def dead_letter_options(self, name: str) -> dict[str, Any]:
        """A redrive policy to the queue ``<name>-dlq``, created here."""
        url = (await self.client.create_queue(QueueName=f"{name}-dlq"))["QueueUrl"]
        attrs = await self.client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        policy = {"deadLetterTargetArn": attrs["Attributes"]["QueueArn"], "maxReceiveCount": 10}
        return {"attributes": {"RedrivePolicy": policy}}

    async def dead_letter_messages(self, name: str) -> list[Message]:
        """The messages of ``<name>-dlq``, received and deleted (kept here): the
        job headers are the ``rr_headers`` attribute (JSON)."""
        got = self._letters.setdefault(name, [])
        url = await self._url(f"{name}-dlq")
        while True:
            reply = await self.client.receive_message(
                QueueUrl=url, MaxNumberOfMessages=10, MessageAttributeNames=["All"])
            messages = reply.get("Messages") or []
            if not messages:
                return list(got)
            for m in messages:
                attrs = m["MessageAttributes"]
                encoding = attrs.get(codec.RR_ENCODING, {}).get("StringValue")
                got.append(Message(attrs["rr_job"]["StringValue"],
                                   codec.payload_of(m["Body"], encoding), name,
                                   id=attrs["rr_id"]["StringValue"],
                                   headers=json.loads(attrs["rr_headers"]["BinaryValue"])))
                await self.client.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    def lease_options(self, seconds: float) -> dict[str, Any]:
        return {"visibility_timeout": int(seconds)}

    async def publish_raw(self, pipe: Pipe, body: bytes, headers: Mapping[str, str]) -> None:
        """No ``rr_*`` attributes; a body SQS cannot carry as text (binary, empty)
        goes as the driver's ``rr_encoding`` alone, the only way SQS can carry it."""
        text, encoding = codec.body_of(body)
        attrs = {k: {"DataType": "String", "StringValue": v} for k, v in headers.items()}
        if encoding is not None:
            attrs[codec.RR_ENCODING] = {"DataType": "String", "StringValue": encoding}
        await self.client.send_message(QueueUrl=await self._url(pipe.name), MessageBody=text,
                                       MessageAttributes=attrs)

    async def publish_raw_headers(self, pipe: Pipe, body: bytes,
                                  headers: Mapping[str, bytes]) -> None:
        """Each value as a ``Binary`` attribute, as RoadRunner writes ``rr_headers``."""
        text, encoding = codec.body_of(body)
        if len(text) + sum(len(k) + len(v) for k, v in headers.items()) > (
                codec.MAX_MESSAGE_SIZE - 1024):
            raise HookUnsupported(f"an SQS message (attributes included) is at most "
                                  f"{codec.MAX_MESSAGE_SIZE} bytes")
        attrs: dict[str, Any] = {k: {"DataType": "Binary", "BinaryValue": v}
                                 for k, v in headers.items()}
        if encoding is not None:
            attrs[codec.RR_ENCODING] = {"DataType": "String", "StringValue": encoding}
        await self.client.send_message(QueueUrl=await self._url(pipe.name), MessageBody=text,
                                       MessageAttributes=attrs)

    def prefetch_options(self, jobs: int) -> dict[str, Any]:
        return {"prefetch": min(jobs, 10), "max_messages_in_flight": jobs}

    async def publish_roadrunner(self, pipe: Pipe, msg: Message) -> None:
        """RoadRunner's layout (reference §10): body = payload as text; String
        rr_id/rr_job/rr_delay/rr_auto_ack, Number rr_priority, Binary JSON rr_headers."""
        text, encoding = codec.body_of(msg.payload)
        attrs: dict[str, Any] = {
            "rr_id": {"DataType": "String", "StringValue": msg.id},
            "rr_job": {"DataType": "String", "StringValue": msg.name},
            "rr_delay": {"DataType": "String", "StringValue": "0"},
            "rr_auto_ack": {"DataType": "String", "StringValue": "false"},
            "rr_priority": {"DataType": "Number", "StringValue": str(msg.priority)},
            "rr_headers": {"DataType": "Binary",
                           "BinaryValue": json.dumps(msg.headers).encode()},
        }
        if encoding is not None:  # the suite's payload is binary: RoadRunner cannot send it
            attrs[codec.RR_ENCODING] = {"DataType": "String", "StringValue": encoding}
        await self.client.send_message(QueueUrl=await self._url(pipe.name), MessageBody=text,
                                       MessageAttributes=attrs)


@pytest.fixture
def driver_factory(sqs_endpoint: SqsEndpoint) -> SQSFactory:
    return SQSFactory(sqs_endpoint)


class TestSQSConformance(ConformanceSuite):
    marker = "sqs"


class SQSDeadLetterFactory(SQSFactory):
    """Each pipeline's queue has a redrive policy to one dead-letter queue per test."""

    dlq_name = ""
    dlq_arn = ""

    async def open(self) -> None:
        await super().open()
        import uuid

        self.dlq_name = f"rrjobs-dlq-{uuid.uuid4().hex[:12]}"
        url = (await self.client.create_queue(QueueName=self.dlq_name))["QueueUrl"]
        attrs = await self.client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
        self.dlq_arn = attrs["Attributes"]["QueueArn"]

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.client.delete_queue(QueueUrl=await self._url(self.dlq_name))
        await super().close()

    def pipeline_options(self, name: str) -> dict[str, Any]:
        policy = {"deadLetterTargetArn": self.dlq_arn, "maxReceiveCount": 10}
        return {**super().pipeline_options(name), "attributes": {"RedrivePolicy": policy}}

    async def dead_letters(self, pipe: Pipe) -> list[bytes]:
        reply = await self.client.receive_message(
            QueueUrl=await self._url(self.dlq_name), MaxNumberOfMessages=10,
            VisibilityTimeout=0, MessageAttributeNames=["All"])
        out = []
        for m in reply.get("Messages") or []:
            out.append(codec.decode(m, 10).payload)
        return out


class TestSQSDeadLetterConformance(suite.NackTests):
    """The nack section again with a redrive policy."""

    marker = "sqs"

    @pytest.fixture
    def driver_factory(self, sqs_endpoint: SqsEndpoint) -> SQSDeadLetterFactory:
        return SQSDeadLetterFactory(sqs_endpoint)
