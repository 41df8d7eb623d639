"""RoadRunner's documented samples (tests/fixtures/roadrunner/) run against the test brokers.

Each sample is pointed at the harness's brokers (``addr``, ``brokers``, ``endpoint``), its
queues, subjects, streams, exchanges, topics and groups get names of this test, the
``tls:`` blocks naming files that do not exist here and the Kafka ``sasl`` settings (the
test broker has no SASL listener) are dropped; every other key and value is the sample's.
Every pipeline is then started by the runtime, one job pushed to each and handled.
``tests/test_roadrunner_samples.py`` loads the samples as they are.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from integration.kafka_helpers import create_topic
from integration.pytest_plugin import SqsEndpoint
from rrjobs.cli import cli
from rrjobs.config import Config
from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.runtime.app import App
from rrjobs.runtime.jobs import Jobs
from rrjobs.server import Server
from rrjobs.testing.pipe import poll

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures" / "roadrunner"

pytestmark = pytest.mark.timeout(180)


def sample(name: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((FIXTURES / name).read_text(encoding="utf-8"))
    return data


def drop_missing_tls(section: dict[str, Any]) -> None:
    tls = section.get("tls")
    if isinstance(tls, dict) and any(tls.get(k) and not os.path.isfile(tls[k])
                                     for k in ("key", "cert", "root_ca")):
        del section["tls"]


class Brokers:
    """The harness's addresses, and the names this test gives to broker resources."""

    def __init__(self, unique: str, *, amqp: str = "", kafka: str = "", nats: str = "",
                 sqs: SqsEndpoint | None = None, beanstalk: str = "") -> None:
        self.unique, self.amqp, self.kafka, self.nats, self.sqs = unique, amqp, kafka, nats, sqs
        self.beanstalk = beanstalk
        self.topics: dict[str, list[str]] = {}  #: a kafka pipeline's topics (regexes matched)

    def name(self, pipeline: str, what: str) -> str:
        return re.sub(r"[^A-Za-z0-9_-]", "-", f"{self.unique}-{pipeline}-{what}")[:200]

    def point(self, data: dict[str, Any]) -> dict[str, Any]:
        if "amqp" in data:
            drop_missing_tls(data["amqp"])
            data["amqp"]["addr"] = self.amqp
        if "kafka" in data:
            drop_missing_tls(data["kafka"])
            data["kafka"].pop("sasl", None)
            data["kafka"]["brokers"] = [self.kafka]
        if "nats" in data:
            data["nats"]["addr"] = self.nats
        if "beanstalk" in data:
            data["beanstalk"]["addr"] = self.beanstalk
        if "sqs" in data:
            assert self.sqs is not None
            section = data["sqs"] or {}
            section.update(key=self.sqs.access_key, secret=self.sqs.secret_key,
                           endpoint=self.sqs.url)
            section.pop("session_token", None)
            data["sqs"] = section
        for name, pipe in data["jobs"]["pipelines"].items():
            self._rename(name, pipe["driver"], pipe.get("config") or {})
        return data

    def _rename(self, name: str, driver: str, opts: dict[str, Any]) -> None:
        if driver == "amqp":
            for key in ("queue", "exchange", "routing_key"):
                opts[key] = self.name(name, key)
        elif driver == "nats":
            opts["subject"], opts["stream"] = self.name(name, "subject"), self.name(name, "s")
        elif driver == "sqs":
            opts["queue"] = self.name(name, "queue")
        elif driver == "beanstalk":
            opts["tube"] = self.name(name, "tube")
        elif driver == "kafka":
            opts.pop("sasl_options", None)
            consumer = opts["consumer_options"]
            topics = [self.name(name, t) if re.fullmatch(r"[\w.-]+", t)
                      else f"^{re.escape(self.name(name, ''))}.*$" for t in consumer["topics"]]
            consumer["topics"] = topics
            consumer["consume_partitions"] = {
                self.name(name, t): parts
                for t, parts in consumer.get("consume_partitions", {}).items()}
            opts["group_options"]["group_id"] = self.name(name, "group")
            self.topics[name] = [t for t in topics if not t.startswith("^")]


def recording_app() -> tuple[App, list[tuple[str, bytes]]]:
    handled: list[tuple[str, bytes]] = []
    app = App("samples")

    @app.handler("sample")
    async def record(job: Job) -> None:
        handled.append((job.pipeline, job.payload))

    return app, handled


async def run_all(data: dict[str, Any], *, topics: dict[str, list[str]] | None = None,
                  delayed: tuple[str, ...] = ()) -> Jobs:
    """Start every pipeline of ``data`` (consumed or not), push one job to each, and
    wait until each is handled (but those of ``delayed``, returned running)."""
    config = Config(data, source="sample")
    app, handled = recording_app()
    jobs = Jobs(config, app)
    await jobs.start()
    try:
        names = list(config.jobs.pipelines)
        for name in names:
            if name not in config.jobs.consume:
                await jobs.resume([name])
        for name in names:
            topic = (topics or {}).get(name, [""])[0]
            await jobs.push(Message("sample", name.encode(), name, topic=topic))
        want = {(n, n.encode()) for n in names if n not in delayed}
        assert await poll(lambda: want <= set(handled), 60), (want, handled)
    except BaseException:
        await jobs.stop()
        raise
    return jobs


async def test_memory_boltdb_and_overview_samples(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "path" / "to").mkdir(parents=True)  # boltdb's file: "path/to/rr.db"
    for name in ("memory.yaml", "boltdb.yaml", "overview.yaml", "overview-template.yaml"):
        await (await run_all(sample(name))).stop()
    assert (tmp_path / "path" / "to" / "rr.db").stat().st_mode & 0o777 == 0o755


async def test_amqp_sample(amqp_url: str, unique_name: str) -> None:
    data = Brokers(unique_name, amqp=amqp_url).point(sample("amqp.yaml"))
    await (await run_all(data)).stop()


async def test_beanstalk_samples(beanstalk_addr: str, unique_name: str) -> None:
    """The pipeline sample, and the section alone with a pipeline on default options
    (on a tube of this test, not ``default``)."""
    data = Brokers(unique_name, beanstalk=beanstalk_addr).point(sample("beanstalk.yaml"))
    await (await run_all(data)).stop()
    data = sample("beanstalk-section.yaml")
    data["jobs"] = {"pipelines": {"sample": {"driver": "beanstalk", "config": {}}}}
    data = Brokers(unique_name, beanstalk=beanstalk_addr).point(data)
    await (await run_all(data)).stop()


async def test_nats_sample_with_an_addr_without_scheme(nats_url: str, unique_name: str) -> None:
    data = Brokers(unique_name, nats=nats_url.removeprefix("nats://")).point(sample("nats.yaml"))
    await (await run_all(data)).stop()


async def test_kafka_sample_consumes_its_topic_regex_and_push_names_the_topic(
        kafka_bootstrap: str, unique_name: str) -> None:
    """The sample consumes ``topics`` as regular expressions: no default topic, so
    ``rrjobs push --topic`` names the one to publish to."""
    brokers = Brokers(unique_name, kafka=kafka_bootstrap)
    data = brokers.point(sample("kafka.yaml"))
    for topic in brokers.topics["test-local-6"]:
        await create_topic(kafka_bootstrap, topic, 1)  # auto_create_topics_enable: false
    topic = brokers.topics["test-local-6"][0]
    app, handled = recording_app()
    data["jobs"]["consume"] = ["test-local-6"]
    server = Server(Config(data, source="kafka.yaml"), app, "tcp://127.0.0.1:0")
    await server.start()
    try:
        def push(*extra: str) -> Any:
            return CliRunner().invoke(cli, ["push", "test-local-6", "sample", "--payload",
                                            "by-cli", "--rpc", server.address, *extra])

        refused = await asyncio.to_thread(push)
        assert refused.exit_code == 1 and "has no topic" in refused.output
        result = await asyncio.to_thread(push, "--topic", topic)
        assert result.exit_code == 0, result.output
        assert await poll(lambda: ("test-local-6", b"by-cli") in handled, 60), handled
    finally:
        await server.stop()


@pytest.fixture
def aws_region_only(monkeypatch: pytest.MonkeyPatch, sqs_endpoint: SqsEndpoint) -> None:
    """The region only in ``AWS_REGION``, as RoadRunner's AWS SDK reads it."""
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.setenv("AWS_REGION", sqs_endpoint.region)


@pytest.mark.usefixtures("aws_region_only")
async def test_sqs_samples_with_a_group_on_a_standard_queue(
        sqs_endpoint: SqsEndpoint, unique_name: str) -> None:
    """``sqs.yaml``: an empty section (the region from ``AWS_REGION``), a standard queue
    with ``message_group_id`` and ``DelaySeconds: 42``; ``sqs-attributes.yaml``: the
    attributes sample."""
    import aiobotocore.session

    brokers = Brokers(unique_name, sqs=sqs_endpoint)
    data = brokers.point(sample("sqs.yaml"))
    jobs = await run_all(data, delayed=("test-sqs-pipeline",))
    try:
        session = aiobotocore.session.get_session()
        async with session.create_client("sqs", **sqs_endpoint.client_kwargs()) as client:
            url = (await client.get_queue_url(
                QueueName=brokers.name("test-sqs-pipeline", "queue")))["QueueUrl"]
            attrs = (await client.get_queue_attributes(
                QueueUrl=url, AttributeNames=["DelaySeconds"]))["Attributes"]
        assert attrs["DelaySeconds"] == "42"  # honoured: the job waits in the queue
    finally:
        await jobs.stop()
    data = Brokers(unique_name, sqs=sqs_endpoint).point(sample("sqs-attributes.yaml"))
    await (await run_all(data)).stop()


@pytest.mark.usefixtures("aws_region_only")
async def test_the_full_rr_yaml(amqp_url: str, kafka_bootstrap: str, nats_url: str,
                                sqs_endpoint: SqsEndpoint, beanstalk_addr: str,
                                unique_name: str, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """RoadRunner's own .rr.yaml: every pipeline (memory, boltdb, amqp, sqs with a
    message group on a standard queue, nats, kafka on topic regexes, beanstalk) starts
    and handles a job."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "path" / "to").mkdir(parents=True)
    brokers = Brokers(unique_name, amqp=amqp_url, kafka=kafka_bootstrap, nats=nats_url,
                      sqs=sqs_endpoint, beanstalk=beanstalk_addr)
    data = brokers.point(sample("rr-full.yaml"))
    data.pop("metrics")  # the test serves no metrics endpoint (127.0.0.1:2112 may be taken)
    for topic in brokers.topics["test-local-6"]:
        await create_topic(kafka_bootstrap, topic, 1)
    jobs = await run_all(data, topics=brokers.topics)
    try:
        assert jobs.pool.num_workers == (os.cpu_count() or 1)  # num_workers: 0
    finally:
        await jobs.stop()

