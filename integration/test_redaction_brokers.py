"""No credential anywhere, against the harness brokers: pipelines of every driver that
takes credentials declared with the brokers' real passwords (RabbitMQ's) or distinctive
fake ones (the others accept any), jobs pushed and consumed, ``stat`` taken, and
connections refused for a wrong password; then the errors (chained causes included),
``stat``, the reprs and every log record (at DEBUG) are searched for the secrets.

Pub/Sub has no credential options (the emulator takes none; otherwise Application
Default Credentials, a file rrjobs never reads), so it has no case here.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from integration.pytest_plugin import SqsEndpoint
from rrjobs import App, Config, Job, Message
from rrjobs.runtime.jobs import Jobs
from tests.test_redaction import error_texts, log_texts

pytestmark = [pytest.mark.timeout(240)]

FAKE_PW = "BrokerFakePw-93c1e7"
FAKE_TOKEN = "BrokerFakeTok-2a6f48"
FAKE_KEY = "AKIABROKERFAKE71d0"
FAKE_SECRET = "BrokerFakeSecret-5b9e03"
FAKE_SESSION = "BrokerFakeSession-c8d214"
FAKES = (FAKE_PW, FAKE_TOKEN, FAKE_KEY, FAKE_SECRET, FAKE_SESSION)


def leaks(texts: list[str], real: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    needles = FAKES + real
    return [(n, t[max(0, t.find(n) - 200):t.find(n) + 40]) for t in texts for n in needles
            if n in t]


def recording_app(seen: list[bytes], done: asyncio.Event) -> App:
    app = App()

    @app.handler("r")
    async def handle(job: Job) -> None:
        seen.append(job.payload)
        done.set()

    return app


@pytest.fixture
async def watched(caplog: pytest.LogCaptureFixture) -> AsyncIterator[list[str]]:
    """Texts to search; the log records (DEBUG and up) are added at the end."""
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    yield texts
    texts += log_texts(caplog.records)


async def run_pipeline(sections: dict[str, Any], options: dict[str, str],
                       texts: list[str]) -> None:
    """Declare ``options`` through the runtime, push and consume one job, take
    ``stat``; every shown thing goes to ``texts``."""
    seen: list[bytes] = []
    done = asyncio.Event()
    name = options["name"]
    jobs = Jobs(Config({**sections, "jobs": {"timeout": 60, "consume": [name],
                                             "pool": {"num_workers": 1}}}),
                recording_app(seen, done))
    await jobs.start()
    try:
        await jobs.declare(options)
        await jobs.push(Message("r", b"redacted", name))
        async with asyncio.timeout(30):
            await done.wait()
        stats = await jobs.stat()
        texts += [repr(stats), repr(jobs.list()), repr(jobs.config),
                  repr(jobs.entries()[0].pipeline)]
        texts += [repr(getattr(jobs.entries()[0].driver, key, None))
                  for key in ("section", "options", "pipeline")]
    finally:
        await jobs.stop()
    assert seen == [b"redacted"]


async def refused(sections: dict[str, Any], options: dict[str, str], texts: list[str],
                  jobs_timeout: float = 60) -> str:
    """Declare ``options``, which must fail (within ``jobs_timeout``); its
    texts go to ``texts``."""
    jobs = Jobs(Config({**sections, "jobs": {"timeout": jobs_timeout}}), App())
    await jobs.start()
    try:
        with pytest.raises(Exception) as caught:
            await jobs.declare(options)
        texts.extend(error_texts(caught.value))
        stats = await jobs.stat()
        texts.append(repr(stats))
    finally:
        await jobs.stop()
    return str(caught.value)


# -- AMQP: RabbitMQ's own password, and a wrong one ---------------------------------------------


@pytest.mark.amqp
async def test_amqp_real_and_wrong_passwords_never_show(amqp_url: str, unique_name: str,
                                                        watched: list[str]) -> None:
    assert "guest:guest@" in amqp_url  # the harness broker's real credentials
    options = {"name": unique_name, "driver": "amqp", "queue": unique_name,
               "routing_key": unique_name, "delete_queue_on_stop": "true"}
    await run_pipeline({"amqp": {"addr": amqp_url}}, options, watched)
    wrong = amqp_url.replace("guest:guest@", f"guest:{FAKE_PW}@")
    message = await refused({"amqp": {"addr": wrong}}, options, watched)
    assert "ACCESS_REFUSED" in message or "refused" in message.lower(), message
    found = leaks(watched, (":guest@",))
    assert not found, found


# -- NATS: user/password and a token in the URL ------------------------------------------------


@pytest.mark.nats
async def test_nats_credentials_in_the_url_never_show(nats_url: str, unique_name: str,
                                                      watched: list[str]) -> None:
    host = nats_url.split("://", 1)[1]
    # The harness server requires no authentication: it accepts any credentials.
    for n, addr in enumerate((f"nats://rr:{FAKE_PW}@{host}", f"nats://{FAKE_TOKEN}@{host}")):
        await run_pipeline({"nats": {"addr": addr}},
                           {"name": f"{unique_name}-{n}", "driver": "nats",
                            "subject": f"{unique_name}.{n}", "stream": f"{unique_name}-{n}",
                            "delete_stream_on_stop": "true"}, watched)
    found = leaks(watched)
    assert not found, found


# -- Kafka: a SASL password the broker cannot take -------------------------------------------


@pytest.mark.kafka
async def test_kafka_sasl_password_never_shows(kafka_bootstrap: str, unique_name: str,
                                               watched: list[str]) -> None:
    sasl = {"mechanism": "SCRAM-SHA-512", "username": "rr", "password": FAKE_PW}
    # A PLAINTEXT broker: the SASL handshake fails, in the section and in a pipeline's options.
    for n, (section, extra) in enumerate((
            ({"brokers": [kafka_bootstrap], "ping": {"timeout": 8}, "sasl": sasl}, {}),
            ({"brokers": [kafka_bootstrap], "ping": {"timeout": 8}},
             {"sasl_options": json.dumps(sasl)}))):
        await refused({"kafka": section},
                      {"name": f"{unique_name}-{n}", "driver": "kafka",
                       "consumer_options": json.dumps({"topics": [unique_name]}), **extra},
                      watched)
    found = leaks(watched)
    assert not found, found


# -- SQS: keys, secret and session token through botocore's signed requests ------------------


@pytest.mark.sqs
async def test_sqs_keys_never_show(sqs_endpoint: SqsEndpoint, unique_name: str,
                                   watched: list[str]) -> None:
    section = {"key": FAKE_KEY, "secret": FAKE_SECRET, "session_token": FAKE_SESSION,
               "region": sqs_endpoint.region, "endpoint": sqs_endpoint.url}
    # The local servers accept any credentials; botocore logs the signed requests at DEBUG.
    await run_pipeline({"sqs": section}, {"name": unique_name, "driver": "sqs",
                                          "queue": unique_name}, watched)
    unreachable = {**section, "endpoint": f"http://rr:{FAKE_PW}@127.0.0.1:1"}
    await refused({"sqs": unreachable}, {"name": unique_name, "driver": "sqs",  # retried
                                         "queue": unique_name}, watched, jobs_timeout=10)
    found = leaks(watched)
    assert not found, found
