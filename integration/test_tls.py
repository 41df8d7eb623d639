"""TLS on the brokers: each driver pushes and consumes through TLS, and a client that
trusts the wrong CA is refused with an error that names certificate verification.

The brokers are the harness's TLS variants (``integration/brokers``: ``amqp-tls``,
``nats-tls``, ``nats-creds``, ``kafka-tls``), started only by these tests, each with a
fresh CA, server and client certificates and an unrelated second CA
(``integration/brokers/certs.py``), and users with fresh passwords.
What each test proves is listed in ``docs/security.md``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from integration.brokers import Broker, TLSAccess
from integration.brokers.base import LOOPBACK
from rrjobs.config import Config
from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue

pytestmark = [pytest.mark.timeout(120)]

#: what a refused certificate must be called in the driver's error
VERIFY_FAILED = r"(?i)certificate verify failed|CERTIFICATE_VERIFY_FAILED"


def access(broker: Broker) -> TLSAccess:
    assert broker.tls is not None, f"{broker.describe()} was not started with TLS"
    return broker.tls


async def take(queue: PriorityQueue, within: float = 30.0) -> Job:
    async with asyncio.timeout(within):
        return await queue.extract_min()


async def build(constructor: Any, kind: str, section: dict[str, Any], name: str,
                options: dict[str, Any]) -> Any:
    """A ``kind`` driver for pipeline ``name`` with ``section`` as the global section."""
    cfg = Config({kind: section,
                  "jobs": {"pipelines": {name: {"driver": kind, "config": options}}}})
    return await constructor(cfg).driver_from_config(
        f"jobs.pipelines.{name}.config", PriorityQueue(),
        Pipeline(name=name, driver=kind, config=dict(options)))


async def push_and_consume(driver: Any, name: str, payload: bytes) -> None:
    """Push a job with a header through ``driver``, consume and ack it, stop the driver."""
    try:
        await driver.push(Message("tls.job", payload, name, headers={"k": ["v"]}))
        await driver.run(driver.pipeline)
        job = await take(driver.queue)
        assert (job.payload, job.headers.get("k")) == (payload, ["v"])
        await job.ack()
    finally:
        await driver.stop()


def assert_not_shown(secret: str, *texts: str) -> None:
    """``secret`` appears in none of ``texts`` (logs, errors)."""
    assert secret
    for text in texts:
        assert secret not in text, f"the password is shown in: {text[:2000]}"


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every log record at DEBUG, the clients' included."""
    caplog.set_level(logging.DEBUG)
    return caplog


# -- AMQP -------------------------------------------------------------------------------------


async def amqp_driver(section: dict[str, Any], name: str) -> Any:
    from rrjobs.drivers.amqp import AMQPConstructor

    options = {"queue": name, "routing_key": name, "exchange": "rrjobs.tls",
               "delete_queue_on_stop": True}
    return await build(AMQPConstructor, "amqp", section, name, options)


@pytest.mark.amqp
async def test_amqp_pushes_and_consumes_over_tls_with_a_client_certificate(
        amqp_tls_broker: Broker, unique_name: str, all_logs: pytest.LogCaptureFixture) -> None:
    """The broker listens with TLS only (see test_amqp_has_no_plain_listener)."""
    tls = access(amqp_tls_broker)
    driver = await amqp_driver({"addr": amqp_tls_broker.endpoint,
                                "tls": tls.certificates.client_tls()}, unique_name)
    await push_and_consume(driver, unique_name, b"over amqps")
    assert_not_shown(tls.password, all_logs.text, repr(driver), str(driver.pipeline))


@pytest.mark.amqp
async def test_amqp_refuses_a_broker_certificate_from_the_wrong_ca(
        amqp_tls_broker: Broker, unique_name: str, all_logs: pytest.LogCaptureFixture) -> None:
    tls = access(amqp_tls_broker)
    with pytest.raises(Exception, match=VERIFY_FAILED) as caught:
        await amqp_driver({"addr": amqp_tls_broker.endpoint,
                           "tls": tls.certificates.wrong_ca_tls()}, unique_name)
    assert_not_shown(tls.password, str(caught.value), all_logs.text)


#: the broker's TLS alert as the client reports it, by what the client presented. With
#: TLS 1.3 the client's handshake ends before the server has checked its certificate: the
#: alert may come after the client's first write, which then meets a reset connection.
REFUSED_CLIENT = {"none": r"(?i)alert certificate required|connection reset",
                  "from the wrong CA": r"(?i)alert unknown ca|connection reset"}


@pytest.mark.amqp
@pytest.mark.parametrize("client", list(REFUSED_CLIENT))
async def test_amqp_broker_refuses_a_client_without_a_certificate_of_its_ca(
        amqp_tls_broker: Broker, unique_name: str, client: str) -> None:
    certs = access(amqp_tls_broker).certificates
    section: dict[str, str] = {"root_ca": str(certs.ca)}
    if client != "none":
        section |= {"cert": str(certs.wrong_client_cert), "key": str(certs.wrong_client_key)}
    with pytest.raises(Exception, match=REFUSED_CLIENT[client]):
        await amqp_driver({"addr": amqp_tls_broker.endpoint, "tls": section}, unique_name)


@pytest.mark.amqp
async def test_amqp_has_no_plain_listener(amqp_tls_broker: Broker, unique_name: str) -> None:
    """The TLS broker's port speaks TLS only: a plain ``amqp://`` client gets no session."""
    tls = access(amqp_tls_broker)
    plain = amqp_tls_broker.endpoint.replace("amqps://", "amqp://", 1)
    with pytest.raises(Exception, match=r"(?i)reset|closed"):
        await amqp_driver({"addr": plain}, unique_name)
    assert tls.endpoints["amqps"].startswith(f"{LOOPBACK}:")


# -- NATS -------------------------------------------------------------------------------------


async def nats_driver(section: dict[str, Any], name: str) -> Any:
    from rrjobs.drivers.nats import NATSConstructor

    options = {"subject": name, "stream": name, "delete_stream_on_stop": True}
    return await build(NATSConstructor, "nats", section, name, options)


async def nats_round_trip(section: dict[str, Any], name: str) -> None:
    await push_and_consume(await nats_driver(section, name), name, b"over tls://")


@pytest.mark.nats
async def test_nats_pushes_and_consumes_over_tls_with_user_and_password(
        nats_tls_broker: Broker, unique_name: str, all_logs: pytest.LogCaptureFixture) -> None:
    tls = access(nats_tls_broker)
    assert nats_tls_broker.endpoint.startswith("tls://")
    await nats_round_trip({"addr": nats_tls_broker.endpoint,
                           "tls": tls.certificates.client_tls()}, unique_name)
    assert_not_shown(tls.password, all_logs.text)


@pytest.mark.nats
async def test_nats_pushes_and_consumes_over_tls_with_a_creds_file(
        nats_creds_broker: Broker, unique_name: str) -> None:
    tls = access(nats_creds_broker)
    await nats_round_trip({"addr": nats_creds_broker.endpoint,
                           "tls": tls.certificates.client_tls(),
                           "credentials": str(tls.files["creds"])}, unique_name)


@pytest.mark.nats
@pytest.mark.parametrize("server", ["nats-tls", "nats-creds"])
async def test_nats_refuses_a_server_certificate_from_the_wrong_ca(
        request: pytest.FixtureRequest, server: str, unique_name: str,
        all_logs: pytest.LogCaptureFixture) -> None:
    from rrjobs.drivers.nats.driver import NATSUnavailableError

    broker: Broker = request.getfixturevalue(server.replace("-", "_") + "_broker")
    tls = access(broker)
    section: dict[str, Any] = {"addr": broker.endpoint, "tls": tls.certificates.wrong_ca_tls()}
    if "creds" in tls.files:
        section["credentials"] = str(tls.files["creds"])
    with pytest.raises(NATSUnavailableError, match=VERIFY_FAILED) as caught:
        await nats_driver(section, unique_name)
    if tls.password:
        assert_not_shown(tls.password, str(caught.value), all_logs.text)


@pytest.mark.nats
async def test_nats_creds_server_refuses_a_client_without_its_creds(
        nats_creds_broker: Broker, unique_name: str) -> None:
    from rrjobs.drivers.nats.driver import NATSUnavailableError

    tls = access(nats_creds_broker)
    with pytest.raises(NATSUnavailableError, match=r"(?i)authorization"):
        await nats_driver({"addr": nats_creds_broker.endpoint,
                           "tls": tls.certificates.client_tls()}, unique_name)


@pytest.mark.nats
async def test_nats_server_refuses_a_client_without_a_certificate(
        nats_tls_broker: Broker, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """``verify: true``: no client certificate, no connection (nats-py retries a failed
    handshake until the driver's connect timeout, shortened here)."""
    from rrjobs.drivers.nats import driver as driver_module
    from rrjobs.drivers.nats.driver import NATSUnavailableError

    monkeypatch.setattr(driver_module, "CONNECT_TIMEOUT", 2.0)
    certs = access(nats_tls_broker).certificates
    with pytest.raises(NATSUnavailableError, match=r"(?i)last error: \w*(ssl|tls|reset|pipe)"):
        await nats_driver({"addr": nats_tls_broker.endpoint,
                           "tls": {"root_ca": str(certs.ca)}}, unique_name)


# -- Kafka ------------------------------------------------------------------------------------


async def kafka_round_trip(section: dict[str, Any], topic: str) -> Job:
    """Build a pipeline with ``section`` as ``kafka:``, push one job, consume and ack it."""
    from rrjobs.drivers.kafka import KafkaConstructor

    config = Config({"kafka": {"ping": {"timeout": "20s"}, **section}, "jobs": {}},
                    source="test")
    queue = PriorityQueue()
    pipeline = Pipeline(name=topic, driver="kafka", config={
        "auto_create_topics_enable": True, "consumer_options": {"topics": [topic]},
        "group_options": {"group_id": topic, "session_timeout": "3s",
                          "heartbeat_interval": "300ms"}})
    driver = await KafkaConstructor(config).driver_from_pipeline(pipeline, queue)
    try:
        await driver.run(pipeline)
        await driver.push(Message("secure", b"secured job", topic, headers={"k": ["v"]}))
        job = await take(queue)
        await job.ack()
        return job
    finally:
        await driver.stop()


def kafka_section(broker: Broker, listener: str, *, tls: dict[str, str] | None = None,
                  mechanism: str = "SCRAM-SHA-512", password: str | None = None) -> dict[str, Any]:
    access_ = access(broker)
    section: dict[str, Any] = {"brokers": [access_.endpoints[listener]]}
    if tls is not None:
        section["tls"] = tls
    if listener.startswith("SASL_"):
        user = access_.username if mechanism == "SCRAM-SHA-512" else f"{access_.username}-256"
        section["sasl"] = {"mechanism": mechanism, "username": user,
                           "password": access_.password if password is None else password}
    return section


@pytest.mark.kafka
async def test_kafka_pushes_and_consumes_over_sasl_ssl_with_scram_sha_512(
        kafka_tls_broker: Broker, unique_name: str, all_logs: pytest.LogCaptureFixture) -> None:
    tls = access(kafka_tls_broker)
    assert kafka_tls_broker.endpoint == tls.endpoints["SASL_SSL"]
    section = kafka_section(kafka_tls_broker, "SASL_SSL",
                            tls={"root_ca": str(tls.certificates.ca)})
    job = await kafka_round_trip(section, unique_name)
    assert (job.payload, job.headers.get("k")) == (b"secured job", ["v"])
    assert_not_shown(tls.password, all_logs.text)


@pytest.mark.kafka
async def test_kafka_pushes_and_consumes_over_ssl(kafka_tls_broker: Broker,
                                                  unique_name: str) -> None:
    certs = access(kafka_tls_broker).certificates
    job = await kafka_round_trip(kafka_section(kafka_tls_broker, "SSL",
                                               tls={"root_ca": str(certs.ca)}), unique_name)
    assert job.payload == b"secured job"


@pytest.mark.kafka
@pytest.mark.parametrize("listener", ["SSL", "SASL_SSL"])
async def test_kafka_refuses_a_broker_certificate_from_the_wrong_ca(
        kafka_tls_broker: Broker, unique_name: str, listener: str,
        all_logs: pytest.LogCaptureFixture) -> None:
    from rrjobs.drivers.kafka import KafkaUnavailableError

    tls = access(kafka_tls_broker)
    section = kafka_section(kafka_tls_broker, listener,
                            tls={"root_ca": str(tls.certificates.wrong_ca)})
    with pytest.raises(KafkaUnavailableError, match=VERIFY_FAILED) as caught:
        await kafka_round_trip(section, unique_name)
    assert_not_shown(tls.password, str(caught.value), all_logs.text)

# -- a wrong password, on every broker with one -----------------------------------------------

#: broker -> (its fixture, the driver's refusal)
WRONG_PASSWORD = {
    "amqp": ("amqp_tls_broker", r"(?i)access_refused"),
    "nats": ("nats_tls_broker", r"(?i)authorization violation"),
    "kafka": ("kafka_tls_broker", r"(?i)authentication failed"),
}


@pytest.mark.parametrize("kind", [pytest.param(k, marks=getattr(pytest.mark, k))
                                  for k in WRONG_PASSWORD])
async def test_a_wrong_password_over_tls_is_refused_and_not_shown(
        request: pytest.FixtureRequest, kind: str, unique_name: str,
        all_logs: pytest.LogCaptureFixture) -> None:
    fixture, refusal = WRONG_PASSWORD[kind]
    broker: Broker = request.getfixturevalue(fixture)
    tls = access(broker)
    wrong = "not-" + tls.password
    addr = broker.endpoint.replace(f":{tls.password}@", f":{wrong}@", 1)
    with pytest.raises(Exception, match=refusal) as caught:
        if kind == "kafka":
            await kafka_round_trip(kafka_section(broker, "SASL_SSL", password=wrong, tls={
                "root_ca": str(tls.certificates.ca)}), unique_name)
        else:
            build = amqp_driver if kind == "amqp" else nats_driver
            await build({"addr": addr, "tls": tls.certificates.client_tls()}, unique_name)
    assert_not_shown(wrong, str(caught.value), all_logs.text)
    assert_not_shown(tls.password, str(caught.value), all_logs.text)


# -- Kafka SASL/SCRAM without TLS -------------------------------------------------------------


@pytest.mark.kafka
@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_kafka_sasl_scram_on_a_plain_listener(kafka_tls_broker: Broker, mechanism: str,
                                                    unique_name: str) -> None:
    section = kafka_section(kafka_tls_broker, "SASL_PLAINTEXT", mechanism=mechanism)
    job = await kafka_round_trip(section, unique_name)
    assert (job.payload, job.headers.get("k")) == (b"secured job", ["v"])


# -- SQS (moto over https; ElasticMQ has no TLS listener) -------------------------------------


async def sqs_driver(broker: Broker, name: str) -> Any:
    from rrjobs.drivers.sqs import SQSConstructor

    tls = access(broker)
    options = {"queue": name, "prefetch": 1, "wait_time_seconds": 1}
    section = {"endpoint": tls.endpoints["https"], "region": "us-east-1",
               "key": tls.username, "secret": tls.password}
    return await build(SQSConstructor, "sqs", section, name, options)


@pytest.mark.sqs
async def test_sqs_pushes_and_consumes_over_https(
        sqs_moto_tls_broker: Broker, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The AWS SDK's own setting names the CA: ``AWS_CA_BUNDLE``."""
    monkeypatch.setenv("AWS_CA_BUNDLE", str(access(sqs_moto_tls_broker).certificates.ca))
    assert sqs_moto_tls_broker.endpoint.startswith("https://")
    await push_and_consume(await sqs_driver(sqs_moto_tls_broker, unique_name), unique_name,
                           b"over https")


@pytest.mark.sqs
async def test_sqs_refuses_a_server_certificate_from_the_wrong_ca(
        sqs_moto_tls_broker: Broker, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """At once: botocore alone would retry the handshake like a network fault."""
    from rrjobs.drivers.sqs.driver import SQSError

    tls = access(sqs_moto_tls_broker)
    monkeypatch.setenv("AWS_CA_BUNDLE", str(tls.certificates.wrong_ca))
    with pytest.raises(SQSError, match=VERIFY_FAILED):
        await sqs_driver(sqs_moto_tls_broker, unique_name)
