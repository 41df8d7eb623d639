"""SQS smoke test with the raw aiobotocore client, on ElasticMQ and on moto.

Send, receive, delete (ack), and a redelivery after ``ChangeMessageVisibility(0)`` (nack).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiobotocore.session import get_session  # type: ignore[import-untyped,unused-ignore]

from integration.pytest_plugin import SqsEndpoint

pytestmark = [pytest.mark.smoke, pytest.mark.sqs, pytest.mark.timeout(180)]

RECEIVE: dict[str, Any] = {
    "MaxNumberOfMessages": 1,
    "MessageSystemAttributeNames": ["ApproximateReceiveCount"],
    "MessageAttributeNames": ["All"],
}


async def test_send_receive_delete_and_redelivery_after_visibility_zero(
    sqs_endpoint: SqsEndpoint, unique_name: str
) -> None:
    async with asyncio.timeout(45):
        session = get_session()
        async with session.create_client("sqs", **sqs_endpoint.client_kwargs()) as sqs:
            created = await sqs.create_queue(
                QueueName=unique_name, Attributes={"VisibilityTimeout": "30"}
            )
            url = created["QueueUrl"]
            try:
                sent = await sqs.send_message(
                    QueueUrl=url,
                    MessageBody="job-1",
                    MessageAttributes={"n": {"DataType": "String", "StringValue": "1"}},
                )

                got = await sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5, **RECEIVE)
                (msg,) = got["Messages"]
                assert msg["MessageId"] == sent["MessageId"]
                assert msg["Body"] == "job-1"
                assert msg["MessageAttributes"]["n"]["StringValue"] == "1"
                assert msg["Attributes"]["ApproximateReceiveCount"] == "1"

                # In flight: invisible to other receivers.
                hidden = await sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1, **RECEIVE)
                assert not hidden.get("Messages")

                # Nack: make it visible again at once.
                await sqs.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=msg["ReceiptHandle"], VisibilityTimeout=0
                )
                got = await sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5, **RECEIVE)
                (again,) = got["Messages"]
                assert again["MessageId"] == sent["MessageId"]
                assert again["Body"] == "job-1"
                assert again["Attributes"]["ApproximateReceiveCount"] == "2"

                # Ack: delete; the queue is then empty.
                await sqs.delete_message(QueueUrl=url, ReceiptHandle=again["ReceiptHandle"])
                empty = await sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1, **RECEIVE)
                assert not empty.get("Messages")
            finally:
                await sqs.delete_queue(QueueUrl=url)
