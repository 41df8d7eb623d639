"""``rrjobs dlq`` against ``rrjobs serve`` (subprocesses) on the brokers' own
dead-letter stores, with the real brokers (the verbs: ``tests/dlq_helpers.py``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from aiobotocore.session import get_session

from integration.brokers.base import Broker
from integration.pytest_plugin import SqsEndpoint
from tests.dlq_helpers import CONFIG_HEAD, DeadLetterVerbs, Served, serve

pytestmark = [pytest.mark.timeout(900)]

#: Each broker's pipeline: its driver options (``{name}``: a fresh name for its
#: queues, topics and streams) and its global section (``{url}``: the broker).
PIPELINES = {
    "natsq": ("nats", "nats_url", """
        subject: {name}.jobs
        stream: {name}
        dead_letter_subject: {name}.dead""", 'nats: {{addr: "{url}"}}'),
    "kafkaq": ("kafka", "kafka_bootstrap", """
        auto_create_topics_enable: true
        consumer_options: {{topics: [{name}], consumer_offset: {{type: AtStart}}}}
        group_options: {{group_id: {name}}}
        dead_letter_topic: {name}.dlq""", 'kafka: {{brokers: ["{url}"]}}'),
    "sqsq": ("sqs", "sqs_elasticmq_broker", """
        queue: {name}
        wait_time_seconds: 1
        attributes:
          RedrivePolicy: {{deadLetterTargetArn: "arn:aws:sqs:{region}:000000000000:{name}-dlq",
                          maxReceiveCount: 10}}""",
             'sqs: {{key: {key}, secret: {secret}, region: {region}, endpoint: "{url}"}}'),
    "amqpq": ("amqp", "amqp_url", """
        queue: {name}
        routing_key: {name}
        exchange: {name}
        queue_headers: {{x-dead-letter-exchange: "", x-dead-letter-routing-key: {name}.dlq}}
        dead_letter_queue: {name}.dlq
    amqpdead:  # declares the dead-letter queue; not consumed
      driver: amqp
      config: {{queue: {name}.dlq, routing_key: {name}.dlq, exchange: {name}}}""",
              'amqp: {{addr: "{url}"}}'),
    "beanstalkq": ("beanstalk", "beanstalk_addr", """
        tube: {name}""", 'beanstalk: {{addr: "{url}"}}'),
    "redisq": ("redis", "redis_url", """
        queue: {name}""", 'redis: {{addr: "{url}"}}'),
    "pubsubq": ("google_pub_sub", "pubsub_emulator_host", """
        project_id: {project}
        topic: {name}
        subscription: {name}
        dead_letter_topic: {name}-dlq""", 'google_pub_sub: {{endpoint: "{url}", insecure: true}}'),
}
#: The marker of a driver whose marker is not its name.
MARKS = {"google_pub_sub": "pubsub"}


@pytest.fixture(scope="module", params=[
    pytest.param(p, marks=getattr(pytest.mark, MARKS.get(d[0], d[0])))
    for p, d in PIPELINES.items()])
def pipeline(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture(scope="module")
def served(pipeline: str, request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """``rrjobs serve`` with ``pipeline`` (retry.max_attempts: 2) on its broker."""
    driver, url_fixture, options, section = PIPELINES[pipeline]
    broker = request.getfixturevalue(url_fixture)
    name = f"rrjobs-dl-{uuid.uuid4().hex[:8]}"
    where = {"url": broker}
    project = request.getfixturevalue("pubsub_project") if driver == "google_pub_sub" else ""
    if isinstance(broker, Broker):  # SQS: the dead-letter queue must exist first
        e = SqsEndpoint(url=broker.endpoint, flavour="elasticmq", broker=broker)
        where = {"url": e.url, "key": e.access_key, "secret": e.secret_key,
                 "region": e.region}
        asyncio.run(_create_queue(e, f"{name}-dlq"))
    config = CONFIG_HEAD + f"""
  consume: [{pipeline}]
  pipelines:
    {pipeline}:
      driver: {driver}
      retry: {{max_attempts: 2, backoff: 0.01}}
      config:{options.format(name=name, region=where.get("region", ""), project=project)}
{section.format(**where)}
"""
    with serve(tmp_path_factory.mktemp(f"dlq-{driver}"), config) as running:
        yield running


async def _create_queue(endpoint: SqsEndpoint, name: str) -> None:
    async with get_session().create_client("sqs", **endpoint.client_kwargs()) as client:
        await client.create_queue(QueueName=name)


class TestBrokers(DeadLetterVerbs):
    """The verbs on each broker (fixtures ``pipeline`` and ``served`` above)."""
