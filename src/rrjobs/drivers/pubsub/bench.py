"""``rrjobs bench --driver pubsub``: the bench's settings and its raw GAPIC baseline.

The endpoint is ``RRJOBS_PUBSUB_EMULATOR_HOST`` (then ``insecure``), else
``google_pub_sub`` of the config; the project ``RRJOBS_PUBSUB_PROJECT``
(default ``rrjobs-test``); each run uses a fresh topic and subscription. The
baseline: batched ``Publish`` of raw protobuf messages with the driver's
attributes, ``Pull`` of up to ``prefetch`` with the driver's idle pause, one
``Acknowledge`` per pulled batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Mapping
from typing import Any

from google.api_core import exceptions as gexc
from google.pubsub_v1 import PublishRequest

from rrjobs.core.baseline import BenchSpec, DriverBench, PhaseResult, bench_name, run_loop
from rrjobs.core.message import new_id
from rrjobs.drivers.pubsub.client import open_clients
from rrjobs.drivers.pubsub.codec import attributes
from rrjobs.drivers.pubsub.config import PubSubOptions, PubSubSection
from rrjobs.drivers.pubsub.deadletters import PULL_MAX, pull_now
from rrjobs.drivers.pubsub.driver import IDLE_MAX, IDLE_MIN, RawMessage, RawPublishRequest

BENCH_PREFETCH = 1000
DEFAULT_PROJECT = "rrjobs-test"


def section_data(config: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``RRJOBS_PUBSUB_EMULATOR_HOST`` (insecure), else ``google_pub_sub`` of ``config``."""
    env = os.environ.get("RRJOBS_PUBSUB_EMULATOR_HOST", "").strip()
    if env:
        return {"endpoint": env, "insecure": True}
    return dict((config or {}).get("google_pub_sub") or {"insecure": True})


def bench_defaults() -> tuple[dict[str, Any], dict[str, Any]]:
    """The config sections and pipeline options of ``rrjobs bench --driver pubsub``."""
    name = bench_name()
    project = os.environ.get("RRJOBS_PUBSUB_PROJECT", DEFAULT_PROJECT)
    return ({"google_pub_sub": section_data()},
            {"project_id": project, "topic": name, "subscription": name,
             "prefetch": BENCH_PREFETCH})


async def pubsub_baseline(spec: BenchSpec) -> PhaseResult:
    """A raw GAPIC loop: batched publish, pull up to prefetch, one ack per pulled batch."""
    options = PubSubOptions.model_validate(dict(spec.options))
    clients = await open_clients(PubSubSection.model_validate(section_data(spec.config)))
    name, payload = bench_name("raw"), spec.payload()
    topic = f"projects/{options.project_id}/topics/{name}"
    sub = f"projects/{options.project_id}/subscriptions/{name}"
    idle = IDLE_MIN
    try:
        await clients.publisher.create_topic(name=topic)
        await clients.subscriber.create_subscription(name=sub, topic=topic,
                                                     ack_deadline_seconds=options.ack_deadline)

        async def receive() -> int:
            nonlocal idle
            response = await pull_now(clients.subscriber, sub, min(options.prefetch, PULL_MAX))
            ids = [r.ack_id for r in response.received_messages]
            if ids:
                await clients.subscriber.acknowledge(subscription=sub, ack_ids=ids)
                idle = IDLE_MIN
            else:  # the driver's idle pause
                await asyncio.sleep(idle)
                idle = min(idle * 2, IDLE_MAX)
            return len(ids)

        async def send(n: int) -> None:
            msgs = [RawMessage(data=payload, attributes=attributes(
                new_id(), "bench", {}, options.priority, 0, False)) for _ in range(n)]
            await clients.publisher.publish(request=PublishRequest.wrap(
                RawPublishRequest(topic=topic, messages=msgs)))

        result = await run_loop(spec, send, receive, chunk=PULL_MAX)
    finally:
        with contextlib.suppress(gexc.GoogleAPICallError):
            await clients.subscriber.delete_subscription(subscription=sub)
            await clients.publisher.delete_topic(topic=topic)
        await clients.close()
    return result


#: The ``rrjobs.bench`` entry point of the pubsub driver.
BENCH = DriverBench(pubsub_baseline, bench_defaults, raw_client=True)
