"""RoadRunner's documented jobs samples and its own ``.rr.yaml`` load unchanged.

The fixtures (tests/fixtures/roadrunner/, each naming where it comes from) carry the
keys and values of every sample of RoadRunner's jobs documentation. Each is loaded
as ``rrjobs check`` and ``rrjobs serve`` load a file: :class:`~rrjobs.config.Config`,
then every pipeline's driver validates its section and options
(:func:`~rrjobs.runtime.preflight.check_pipelines`). What a sample cannot do here is
listed in ``EXPECTED`` with its reason; everything else loads without a problem.
``integration/test_roadrunner_samples.py`` starts the pipelines against real brokers.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from rrjobs import cli as cli_module
from rrjobs.config import Config
from rrjobs.core.errors import ConfigError
from rrjobs.core.message import Message
from rrjobs.core.options import validate
from rrjobs.core.tls import TLSConfig
from rrjobs.drivers.amqp.config import AMQPSection
from rrjobs.drivers.nats.config import NATSSection
from rrjobs.runtime.preflight import check_pipelines_sync

FIXTURES = Path(__file__).parent / "fixtures" / "roadrunner"

#: Fragments (a driver's global section alone): loaded with one pipeline of that
#: driver on its default options, as a .rr.yaml using the section would.
FRAGMENTS = {
    "amqp-section.yaml": "amqp",
    "beanstalk-section.yaml": "beanstalk",
    "sqs-section.yaml": "sqs",
    "sqs-iam.yaml": "sqs",
    "sqs-iam-region.yaml": "sqs",
    "sqs-static.yaml": "sqs",
    "sqs-compatible.yaml": "sqs",
}

#: What a sample cannot do in rrjobs, by file: (key path, the start of the message).
EXPECTED: dict[str, list[tuple[str, str]]] = {
    # Pub/Sub (Google Cloud and its emulator alike) takes 5..100 delivery attempts: the
    # sample's 3 fails in RoadRunner too, when the subscription is created
    "google-pub-sub.yaml": [("jobs.pipelines.test-1.config.max_delivery_attempts",
                             "must be 0 (no native dead-letter policy) or between 5 and 100")],
    # the TLS files /ssl/* exist only where RoadRunner's example deployment has them;
    # RoadRunner checks them when it builds the pipeline too ("key file ... does not exist")
    "rr-full.yaml": [("amqp.tls", "tls.key: file '/ssl/key.pem' does not exist"),
                     ("kafka.tls", "tls.key: file '/ssl/key.pem' does not exist")],
}


def sample_files() -> list[str]:
    return sorted(p.name for p in FIXTURES.glob("*.yaml"))


def load_sample(name: str, env: dict[str, str] | None = None) -> Config:
    """The sample as ``rrjobs serve -c`` reads it (a fragment inside a minimal file)."""
    text = (FIXTURES / name).read_text(encoding="utf-8")
    if name in FRAGMENTS:
        data: dict[str, Any] = yaml.safe_load(text) or {}
        data["jobs"] = {"pipelines": {"sample": {"driver": FRAGMENTS[name]}}}
        text = yaml.safe_dump(data)
    return Config.from_yaml(text, env={} if env is None else env, source=name)


def test_every_documented_sample_has_a_fixture() -> None:
    """The pages of RoadRunner's jobs documentation, each with its samples here."""
    sources = " ".join((FIXTURES / n).read_text(encoding="utf-8").splitlines()[0]
                       for n in sample_files())
    for page in ("memory", "amqp", "kafka", "nats", "sqs", "boltdb", "google-pub-sub",
                 "beanstalk", "overview-queues"):
        assert f"queues/{page}.md" in sources, page
    assert "roadrunner-server/roadrunner" in (FIXTURES / "rr-full.yaml").read_text()
    assert len(sample_files()) == 19


@pytest.mark.parametrize("name", sample_files())
def test_a_sample_loads_and_its_pipelines_check(name: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    config = load_sample(name)
    problems = check_pipelines_sync(config)
    expected = EXPECTED.get(name, [])
    assert [p for p, _ in problems] == [p for p, _ in expected], problems
    for (_, message), (_, start) in zip(problems, expected, strict=True):
        assert message.startswith(start), message


def test_the_full_rr_yaml_keeps_its_meaningful_values(caplog: pytest.LogCaptureFixture,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    caplog.set_level(logging.INFO, "rrjobs.config")
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    config = load_sample("rr-full.yaml")
    jobs = config.jobs
    assert jobs.pool.num_workers == 6  # num_workers: 0, as many as CPUs
    assert (jobs.timeout, jobs.pipeline_size) == (60.0, 100000)
    assert (jobs.pool.allocate_timeout, jobs.pool.destroy_timeout) == (60.0, 60.0)
    assert list(jobs.pipelines) == [f"test-local{s}" for s in ("", "-1", "-2", "-3", "-4",
                                                               "-5", "-6")]
    assert jobs.consume == list(jobs.pipelines)
    assert config.rpc.listen == "tcp://127.0.0.1:6001"
    assert config.metrics is not None and config.metrics.host_port() == ("127.0.0.1", 2112)
    assert config.logs is not None and config.logs.output == "stderr"
    assert config.logs.effective().level == "debug"
    # the PHP and RoadRunner-only settings: named in one INFO line, nowhere a warning
    meaningless = [r for r in caplog.records if "without meaning" in r.getMessage()]
    assert len(meaningless) == 1 and meaningless[0].levelno == logging.INFO
    for key in ("jobs.pool.command", "jobs.pool.dynamic_allocator", "jobs.num_pollers",
                "metrics.collect"):
        assert key in meaningless[0].getMessage()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- the defects, one by one --------------------------------------------------------------------


def test_nats_addr_without_a_scheme_is_nats() -> None:
    section = validate(NATSSection, {"addr": "demo.nats.io"}, "nats")
    assert section.servers() == ["nats://demo.nats.io"]
    both = validate(NATSSection, {"addr": "127.0.0.1:4222, tls://b:4443"}, "nats")
    assert both.servers() == ["nats://127.0.0.1:4222", "tls://b:4443"]
    with pytest.raises(ConfigError) as caught:
        validate(NATSSection, {"addr": "http://demo.nats.io"}, "nats")
    assert caught.value.path == "nats.addr"


def test_client_auth_type_in_roadrunners_rr_yaml_spelling() -> None:
    tls = validate(TLSConfig, {"client_auth_type": "no_client_certs"}, "kafka.tls")
    assert tls.client_auth_type == "no_client_cert"
    with pytest.raises(ConfigError):
        validate(TLSConfig, {"client_auth_type": "no_certs_at_all"}, "kafka.tls")


def test_a_tls_block_naming_no_file_enables_nothing(caplog: pytest.LogCaptureFixture) -> None:
    """RoadRunner's amqp sample: amqp:// with a tls block of empty paths. RoadRunner
    enables TLS only when the block names files; so does rrjobs, with an INFO line."""
    caplog.set_level(logging.INFO, "rrjobs.config")
    section = validate(AMQPSection, {"addr": "amqp://guest:guest@127.0.0.1:5672",
                                     "tls": {"key": "", "cert": "", "root_ca": "",
                                             "client_auth_type": "no_client_cert"}}, "amqp")
    assert section.tls is None
    assert "amqp.tls" in caplog.text
    with pytest.raises(ConfigError) as caught:  # files named over amqp://: still refused
        validate(AMQPSection, {"addr": "amqp://h/", "tls": {"root_ca": __file__}}, "amqp")
    assert "amqps://" in str(caught.value)


def test_push_topic_reaches_the_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """``rrjobs push --topic``: a Kafka pipeline consuming a topic regex has no default
    topic, so the push names one (Message.topic, RoadRunner's Options.topic)."""
    sent: list[Message] = []

    class Client:
        async def push(self, msg: Message) -> None:
            sent.append(msg)

    def call(rpc: str | None, config: str | None, fn: Any) -> Any:
        import asyncio
        return asyncio.run(fn(Client()))

    monkeypatch.setattr(cli_module, "call", call)
    runner = CliRunner()
    result = runner.invoke(cli_module.cli, ["push", "events", "job", "--payload", "x",
                                            "--topic", "orders.eu"])
    assert result.exit_code == 0, result.output
    assert [(m.pipeline, m.topic, m.payload) for m in sent] == [("events", "orders.eu", b"x")]
    runner.invoke(cli_module.cli, ["push", "events", "job"])
    assert sent[-1].topic == ""
