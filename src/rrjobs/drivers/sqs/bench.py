"""``rrjobs bench --driver sqs``: the bench's settings and its raw aiobotocore baseline.

The endpoint is ``RRJOBS_SQS_ENDPOINT``, else ``sqs.endpoint`` of the config,
else AWS; each run uses a fresh queue. The baseline: ``SendMessageBatch`` calls
of 10 (a ``spec.batch`` concurrently, as ``push_batch``), ``ReceiveMessage`` of
up to ``prefetch`` with the same long polling, one ``DeleteMessageBatch`` per
received batch, not awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from typing import Any

from aiobotocore.config import AioConfig  # type: ignore[import-untyped,unused-ignore]
from aiobotocore.session import get_session  # type: ignore[import-untyped,unused-ignore]

from rrjobs.core.baseline import BenchSpec, DriverBench, PhaseResult, bench_name, run_loop
from rrjobs.core.message import new_id
from rrjobs.drivers.sqs import codec
from rrjobs.drivers.sqs.config import SQSOptions, SQSSection
from rrjobs.drivers.sqs.deadletters import RECEIVE_MAX

BENCH_PREFETCH = 10
BENCH_IN_FLIGHT = 1000
BENCH_WAIT = 1


def section(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``sqs:`` section: ``RRJOBS_SQS_ENDPOINT`` (with static test
    credentials unless the AWS variables are set) over ``config``'s."""
    data = dict((config or {}).get("sqs") or {})
    endpoint = os.environ.get("RRJOBS_SQS_ENDPOINT", "").strip()
    if endpoint:
        data["endpoint"] = endpoint
        data.setdefault("key", os.environ.get("AWS_ACCESS_KEY_ID", "rrjobs"))
        data.setdefault("secret", os.environ.get("AWS_SECRET_ACCESS_KEY", "rrjobs"))
        data.setdefault("region", os.environ.get("AWS_REGION", "us-east-1"))
    return data


def bench_defaults() -> tuple[dict[str, Any], dict[str, Any]]:
    """The config sections and pipeline options of ``rrjobs bench --driver sqs``."""
    options = {"queue": bench_name(), "prefetch": BENCH_PREFETCH,
               "max_messages_in_flight": BENCH_IN_FLIGHT, "wait_time_seconds": BENCH_WAIT}
    return {"sqs": section()}, options


async def sqs_baseline(spec: BenchSpec) -> PhaseResult:
    """A raw aiobotocore loop: SendMessageBatch of 10, ReceiveMessage of ``prefetch``
    with long polling, DeleteMessageBatch per received batch."""
    options = SQSOptions.model_validate(dict(spec.options))
    sect = SQSSection.model_validate(section(spec.config))
    payload = spec.payload()
    loop = asyncio.get_running_loop()
    config = AioConfig(warm_up_loader_caches=True)  # botocore's data files read off the loop
    async with get_session().create_client("sqs", config=config,
                                           **sect.client_kwargs()) as client:
        url = (await client.create_queue(QueueName=bench_name("raw")))["QueueUrl"]
        pending: set[asyncio.Task[Any]] = set()

        async def receive() -> int:
            reply = await client.receive_message(
                QueueUrl=url, MaxNumberOfMessages=options.prefetch,
                WaitTimeSeconds=options.wait_time_seconds,
                MessageAttributeNames=["All"], MessageSystemAttributeNames=["All"])
            messages = reply.get("Messages") or []
            if messages:
                entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                           for i, m in enumerate(messages)]
                task = loop.create_task(client.delete_message_batch(QueueUrl=url,
                                                                    Entries=entries))
                pending.add(task)
                task.add_done_callback(pending.discard)
            return len(messages)

        async def send(n: int) -> None:
            entries = []
            for i in range(n):
                enc = codec.encode(id=new_id(), name="bench", payload=payload, headers={},
                                   priority=10, delay=0, auto_ack=False)
                entries.append({"Id": str(i), "MessageBody": enc.body,
                                "MessageAttributes": enc.attributes})
            await client.send_message_batch(QueueUrl=url, Entries=entries)

        async def send_batch(n: int) -> None:
            step = RECEIVE_MAX
            await asyncio.gather(*(send(min(step, n - s)) for s in range(0, n, step)))

        try:
            result = await run_loop(spec, send_batch, receive)
            await asyncio.gather(*pending, return_exceptions=True)
        finally:
            with contextlib.suppress(Exception):
                await client.delete_queue(QueueUrl=url)
    return result


#: The ``rrjobs.bench`` entry point of the sqs driver.
BENCH = DriverBench(sqs_baseline, bench_defaults, raw_client=True)
