"""pytest fixtures for real brokers: one broker per kind per test session, started lazily.

``integration/conftest.py`` imports everything here, so tests under ``integration/`` get
the fixtures as they are. Tests elsewhere load it with ``-p integration.pytest_plugin`` (or
``pytest_plugins = ["integration.pytest_plugin"]`` in a rootdir ``conftest.py``).

Fixtures (session scope unless said otherwise):

=========================  ===================================================================
``amqp_broker``            :class:`~integration.brokers.Broker` for RabbitMQ
``amqp_url``               ``amqp://guest:guest@127.0.0.1:<port>/``
``kafka_broker``           Broker for Apache Kafka (KRaft)
``kafka_bootstrap``        ``127.0.0.1:<port>`` (aiokafka ``bootstrap_servers``)
``nats_broker``            Broker for NATS with JetStream
``nats_url``               ``nats://127.0.0.1:<port>``
``sqs_elasticmq_broker``   Broker for ElasticMQ
``sqs_moto_broker``        Broker for moto's server mode
``sqs_endpoint``           :class:`SqsEndpoint`, parametrised: ``[elasticmq]`` and ``[moto]``
``pubsub_broker``          Broker for the Pub/Sub emulator
``pubsub_emulator_host``   ``127.0.0.1:<port>`` (what ``PUBSUB_EMULATOR_HOST`` takes)
``pubsub_project``         the project id to use with the emulator
``beanstalk_broker``       Broker for beanstalkd (binlog on)
``beanstalk_addr``         ``tcp://127.0.0.1:<port>``
``postgres_broker``        Broker for PostgreSQL (a cluster of Debian's ``initdb``)
``postgres_dsn``           ``postgresql://rrjobs:<password>@127.0.0.1:<port>/postgres``
``amqp_tls_broker``        Broker for RabbitMQ with TLS only (``broker.tls``: certificates,
                           user and password); started only by the tests that ask for it
``nats_tls_broker``        Broker for NATS with TLS (client certificate) and user/password
``nats_creds_broker``      Broker for NATS with TLS in operator mode (``tls.files["creds"]``)
``kafka_tls_broker``       Broker for Kafka with SSL, SASL_SSL and SASL_PLAINTEXT listeners
                           and SCRAM users (``tls.endpoints``, ``tls.password``)
``sqs_moto_tls_broker``    Broker for moto's SQS over https (``tls.certificates.ca``)
``redis_broker``           Broker for Redis (append-only file, fsync always)
``redis_url``              ``redis://127.0.0.1:<port>``
``redis_tls_broker``       Broker for Redis with TLS only (client certificate) and an ACL user
``redis_cluster_broker``   Broker for Redis Cluster, three masters (``endpoint``: the nodes)
``toxiproxy_server``       Broker for a toxiproxy server (``endpoint``: its API's URL)
``toxiproxy``              (function scope) a :class:`~integration.brokers.toxiproxy.Toxiproxy`
                           client of it, whose proxies are deleted after the test
``unique_name``            (function scope) a fresh name valid for every broker's queues,
                           topics, streams and subscriptions
``unique_names``           (function scope) a factory: ``unique_names("dlq")`` -> new name
=========================  ===================================================================

A test that uses a broker fixture also gets that broker's marker (``amqp``, ``kafka``,
``nats``, ``sqs``, ``pubsub``, ``beanstalk``, ``redis``, ``postgres``), so
``pytest -m kafka`` selects it. A broker that cannot be had skips its tests with the
reason; with ``RRJOBS_REQUIRE_BROKERS=1`` that is a failure.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from integration.brokers import (
    Broker,
    BrokerHandle,
    BrokerUnavailable,
    acquire,
    acquire_tls,
)
from integration.brokers.base import log_tail, shown
from integration.brokers.provider import acquire_toxiproxy
from integration.brokers.pubsub import project_id
from integration.brokers.sqs import ACCESS_KEY, REGION, SECRET_KEY
from integration.brokers.toxiproxy import Toxiproxy
from integration.missing import unavailable

# Fixture name -> (broker name, marker). Used for markers and for logs on failures.
BROKER_FIXTURES: dict[str, tuple[str | None, str]] = {
    "amqp_broker": ("amqp", "amqp"),
    "amqp_url": ("amqp", "amqp"),
    "kafka_broker": ("kafka", "kafka"),
    "kafka_bootstrap": ("kafka", "kafka"),
    "nats_broker": ("nats", "nats"),
    "nats_url": ("nats", "nats"),
    "sqs_elasticmq_broker": ("sqs-elasticmq", "sqs"),
    "sqs_moto_broker": ("sqs-moto", "sqs"),
    "sqs_endpoint": (None, "sqs"),  # either SQS server, by parameter
    "pubsub_broker": ("pubsub", "pubsub"),
    "pubsub_emulator_host": ("pubsub", "pubsub"),
    "pubsub_project": ("pubsub", "pubsub"),
    "beanstalk_broker": ("beanstalk", "beanstalk"),
    "beanstalk_addr": ("beanstalk", "beanstalk"),
    "redis_broker": ("redis", "redis"),
    "redis_url": ("redis", "redis"),
    "redis_tls_broker": ("redis-tls", "redis"),
    "redis_cluster_broker": ("redis-cluster", "redis"),
    "postgres_broker": ("postgres", "postgres"),
    "postgres_dsn": ("postgres", "postgres"),
    "amqp_tls_broker": ("amqp-tls", "amqp"),
    "nats_tls_broker": ("nats-tls", "nats"),
    "nats_creds_broker": ("nats-creds", "nats"),
    "kafka_tls_broker": ("kafka-tls", "kafka"),
    "sqs_moto_tls_broker": ("sqs-moto-tls", "sqs"),
    "toxiproxy_server": ("toxiproxy", "toxiproxy"),
    "toxiproxy": ("toxiproxy", "toxiproxy"),
}

# Brokers this session started or found, by name (for the summary and failure logs).
_SESSION_BROKERS: dict[str, Broker] = {}


@dataclass(frozen=True)
class SqsEndpoint:
    """One SQS server: its URL, which server it is, and the credentials it accepts."""

    url: str
    flavour: str  # "elasticmq" or "moto"
    broker: Broker
    region: str = REGION
    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY

    def client_kwargs(self) -> dict[str, str]:
        """Keyword arguments for ``aiobotocore``'s ``session.create_client("sqs", **kw)``."""
        return {
            "region_name": self.region,
            "endpoint_url": self.url,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
        }


# Handles in use by name, with how many session fixtures hold each: the fixtures of two
# conftest files (integration/ and reliability/) share one broker per kind.
_SHARED: dict[str, tuple[BrokerHandle, int]] = {}


def _provide(name: str, *, tls: bool = False) -> Iterator[Broker]:
    """Acquire a broker for the session; skip (or fail when required) if it can't be had."""
    reason: str | None = None
    handle: BrokerHandle
    if name in _SHARED:
        handle, users = _SHARED[name]
        _SHARED[name] = (handle, users + 1)
    else:
        try:
            if name == "toxiproxy":
                handle = acquire_toxiproxy()
            else:
                handle = acquire_tls(name) if tls else acquire(name)
        except BrokerUnavailable as exc:
            reason = str(exc)
        if reason is not None:  # outside the except block: no chained traceback in the report
            unavailable(reason)
        _SHARED[name] = (handle, 1)
    _SESSION_BROKERS[name] = handle.broker
    try:
        yield handle.broker
    finally:
        handle, users = _SHARED.pop(name)
        if users > 1:
            _SHARED[name] = (handle, users - 1)
        else:
            handle.stop()


# --------------------------------------------------------------------------- brokers
@pytest.fixture(scope="session")
def amqp_broker() -> Iterator[Broker]:
    yield from _provide("amqp")


@pytest.fixture(scope="session")
def amqp_url(amqp_broker: Broker) -> str:
    return amqp_broker.endpoint


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[Broker]:
    yield from _provide("kafka")


@pytest.fixture(scope="session")
def kafka_bootstrap(kafka_broker: Broker) -> str:
    return kafka_broker.endpoint


@pytest.fixture(scope="session")
def nats_broker() -> Iterator[Broker]:
    yield from _provide("nats")


@pytest.fixture(scope="session")
def nats_url(nats_broker: Broker) -> str:
    return nats_broker.endpoint


@pytest.fixture(scope="session")
def sqs_elasticmq_broker() -> Iterator[Broker]:
    yield from _provide("sqs-elasticmq")


@pytest.fixture(scope="session")
def sqs_moto_broker() -> Iterator[Broker]:
    yield from _provide("sqs-moto")


@pytest.fixture(scope="session", params=["elasticmq", "moto"])
def sqs_endpoint(request: pytest.FixtureRequest) -> SqsEndpoint:
    """Each test that uses it runs twice: on ElasticMQ and on moto."""
    flavour: str = request.param
    broker: Broker = request.getfixturevalue(f"sqs_{flavour}_broker")
    return SqsEndpoint(url=broker.endpoint, flavour=flavour, broker=broker)


@pytest.fixture(scope="session")
def postgres_broker() -> Iterator[Broker]:
    yield from _provide("postgres")


@pytest.fixture(scope="session")
def postgres_dsn(postgres_broker: Broker) -> str:
    return postgres_broker.endpoint


@pytest.fixture(scope="session")
def pubsub_broker() -> Iterator[Broker]:
    yield from _provide("pubsub")


@pytest.fixture(scope="session")
def pubsub_emulator_host(pubsub_broker: Broker) -> str:
    return pubsub_broker.endpoint


@pytest.fixture(scope="session")
def pubsub_project(pubsub_broker: Broker) -> str:
    return project_id()


@pytest.fixture(scope="session")
def beanstalk_broker() -> Iterator[Broker]:
    yield from _provide("beanstalk")


@pytest.fixture(scope="session")
def beanstalk_addr(beanstalk_broker: Broker) -> str:
    return beanstalk_broker.endpoint


@pytest.fixture(scope="session")
def redis_broker() -> Iterator[Broker]:
    yield from _provide("redis")


@pytest.fixture(scope="session")
def redis_url(redis_broker: Broker) -> str:
    return redis_broker.endpoint


def _tls_broker(name: str) -> Any:
    """The session fixture of TLS broker ``name`` (``integration.brokers.TLS_SPECS``)."""

    @pytest.fixture(scope="session", name=name.replace("-", "_") + "_broker")
    def fixture() -> Iterator[Broker]:
        yield from _provide(name, tls=True)

    return fixture


amqp_tls_broker = _tls_broker("amqp-tls")
nats_tls_broker = _tls_broker("nats-tls")
nats_creds_broker = _tls_broker("nats-creds")
kafka_tls_broker = _tls_broker("kafka-tls")
sqs_moto_tls_broker = _tls_broker("sqs-moto-tls")
redis_tls_broker = _tls_broker("redis-tls")
redis_cluster_broker = _tls_broker("redis-cluster")


@pytest.fixture(scope="session")
def toxiproxy_server() -> Iterator[Broker]:
    yield from _provide("toxiproxy")


@pytest.fixture
async def toxiproxy(toxiproxy_server: Broker) -> AsyncIterator[Toxiproxy]:
    async with Toxiproxy(toxiproxy_server.endpoint) as client:
        yield client


# --------------------------------------------------------------------------- isolation
def _slug(text: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "t"


@pytest.fixture
def unique_names(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """A factory of fresh names, safe for every broker.

    Names are ``rrjobs-<test>-<suffix>-<8 hex>``: lowercase letters, digits and ``-``,
    at most 63 characters, starting with a letter. That fits AMQP queues, Kafka topics,
    NATS streams and durable names, SQS queues (append ``.fifo`` for FIFO) and Pub/Sub ids.
    """
    test = _slug(request.node.name, 24)

    def make(suffix: str = "") -> str:
        parts = ["rrjobs", test, _slug(suffix, 12) if suffix else "", uuid.uuid4().hex[:8]]
        return "-".join(part for part in parts if part)

    return make


@pytest.fixture
def unique_name(unique_names: Callable[[str], str]) -> str:
    """A fresh name for this test's queue/topic/stream/subscription."""
    return unique_names("")


# --------------------------------------------------------------------------- hooks
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give each test the marker of every broker fixture it uses (before ``-m`` selects)."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        for fixture, (_, marker) in BROKER_FIXTURES.items():
            if fixture in fixtures and item.get_closest_marker(marker) is None:
                item.add_marker(getattr(pytest.mark, marker))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """On a failed test, attach the log tail of each local broker it used."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    if report.passed or report.skipped or call.when == "teardown":
        return
    fixtures = getattr(item, "fixturenames", ())
    used: set[str] = set()
    for fixture, (name, _) in BROKER_FIXTURES.items():
        if fixture in fixtures:
            if name is None:  # sqs_endpoint: whichever server this parameter chose
                value = getattr(item, "funcargs", {}).get(fixture)
                if isinstance(value, SqsEndpoint):
                    used.add(value.broker.name)
            else:
                used.add(name)
    for name in sorted(used):
        broker = _SESSION_BROKERS.get(name)
        if broker is not None and broker.log_path:
            report.sections.append(
                (f"broker log {name} ({broker.log_path})", log_tail(broker.log_path, 60))
            )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _SESSION_BROKERS:
        return
    terminalreporter.section("brokers")
    for broker in _SESSION_BROKERS.values():
        version = f" {broker.version}" if broker.version else ""
        terminalreporter.write_line(
            f"{broker.name:<14} {broker.provider:<14} {shown(broker.endpoint)}{version}"
        )
