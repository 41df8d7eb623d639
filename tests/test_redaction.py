"""No credential anywhere: distinctive fake secrets in every driver's config, pushed
through every error path that needs no broker (unreachable hosts, invalid options,
Declare through the RPC), then looked for in the reprs, the errors (chained causes
included), the logs, ``stat``, ``list`` and the metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, SecretStr

from rrjobs import App, Config
from rrjobs.config import DashboardConfig, LogsConfig, RPCConfig
from rrjobs.core.base import describe_error
from rrjobs.core.errors import CapabilityError, ConfigError, RRJobsError
from rrjobs.core.options import StrictModel, validate
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.secret_types import Secret, SecretURL
from rrjobs.core.secrets import (
    MASK,
    RedactedError,
    SecretsFilter,
    is_word,
    redact_error,
    redact_options,
    redact_url,
    remember,
    scrub,
    secret_values,
)
from rrjobs.drivers.amqp.config import AMQPSection
from rrjobs.drivers.kafka.client import connection_kwargs
from rrjobs.drivers.kafka.config import KafkaOptions, KafkaSection, SASLOptions
from rrjobs.drivers.nats.config import NATSSection
from rrjobs.drivers.sqs.config import SQSSection
from rrjobs.logs import configure
from rrjobs.metrics import exposition, new_registry
from rrjobs.rpc import RPCClient
from rrjobs.server import Server

#: One distinctive value per credential kind (none is a substring of another).
AMQP_PW = "AmqpPw-5e1f9c"
NATS_PW = "NatsPw-0b7d42"
NATS_TOKEN = "NatsTok-9a3c77"
KAFKA_PW = "KafkaPw-4c8e21"
KAFKA_AWS = "KafkaAws-71b0e5"
SQS_KEY = "AKIAFAKE2d6b90"
SQS_SECRET = "SqsSecret-8f1e3a"
SQS_SESSION = "SqsSession-6c2a9d"
RPC_TOKEN = "RpcTok-3e9f5b"
DASH_TOKEN = "DashTok-58a2c4"
DECLARED_PW = "DeclPw-a41d7e"
OWN_PW = "OwnPw-c39e06"
SECRETS = (AMQP_PW, NATS_PW, NATS_TOKEN, KAFKA_PW, KAFKA_AWS, SQS_KEY, SQS_SECRET,
           SQS_SESSION, RPC_TOKEN, DASH_TOKEN, DECLARED_PW, OWN_PW)

AMQP_ADDR = f"amqp://rr:{AMQP_PW}@127.0.0.1:1/"
NATS_ADDR = f"nats://rr:{NATS_PW}@127.0.0.1:1, nats://{NATS_TOKEN}@127.0.0.1:2"


def leaks(texts: Iterable[str]) -> list[tuple[str, str]]:
    """``(secret, text)`` for every secret found in ``texts``."""
    return [(s, t) for t in texts for s in SECRETS if s in t]


def error_texts(exc: BaseException) -> list[str]:
    """``str``, ``repr`` and the formatted traceback of ``exc`` and of the causes a
    traceback shows (``__cause__``, else an unsuppressed ``__context__``)."""
    out: list[str] = []
    seen: BaseException | None = exc
    while seen is not None:
        out += [str(seen), repr(seen)]
        seen = seen.__cause__ or (None if seen.__suppress_context__ else seen.__context__)
    out.append("".join(traceback.format_exception(exc)))
    return out


def log_texts(records: Iterable[logging.LogRecord]) -> list[str]:
    """Each record as rrjobs' own logging shows it: rrjobs' records as they are (its
    code never logs a credential), other libraries' (botocore logs signed requests at
    DEBUG) after the :class:`SecretsFilter` that rrjobs' logging setup installs."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    screen = SecretsFilter()
    out: list[str] = []
    for record in records:
        if record.name.startswith("rrjobs"):
            out.append(formatter.format(record))
        screen.filter(record)
        out.append(formatter.format(record))
    return out


def model_texts(model: BaseModel) -> list[str]:
    return [repr(model), str(model), repr(model.model_dump()), model.model_dump_json()]


# -- the core helpers -------------------------------------------------------------------------


def test_redact_url_masks_the_password_or_a_lone_token() -> None:
    assert redact_url("amqp://u:pw@host:5672/vh?x=1") == f"amqp://u:{MASK}@host:5672/vh?x=1"
    assert redact_url("nats://tok@h:4222") == f"nats://{MASK}@h:4222"
    assert redact_url("nats://a:b@h1,nats://c@h2") == f"nats://a:{MASK}@h1,nats://{MASK}@h2"
    assert redact_url("amqp://u:p@ss@h/") == f"amqp://u:{MASK}@h/"  # an unencoded @
    assert redact_url("amqp://host/") == "amqp://host/"
    assert redact_url("not a url") == "not a url"


def test_scrub_masks_urls_in_free_text_and_remembered_values() -> None:
    text = f"connect to amqp://bob:{AMQP_PW}@h:1/ failed"
    assert scrub(text) == f"connect to amqp://bob:{MASK}@h:1/ failed"
    remember("RememberedValue-1b2c", "abc")  # too short to be remembered: kept as it is
    assert scrub("x RememberedValue-1b2c and abc") == f"x {MASK} and abc"


def test_redact_options_masks_secret_keys_urls_and_nested_json() -> None:
    options = {"driver": "kafka", "name": "p", "password": "pw-1",
               "sasl_options": json.dumps({"username": "u", "password": DECLARED_PW}),
               "nested": {"token": "t-2", "keep": "kept"}, "addr": AMQP_ADDR,
               "secret": SecretStr(SQS_SECRET)}
    shown = redact_options(options)
    assert shown["password"] == MASK and shown["nested"] == {"token": MASK, "keep": "kept"}
    assert json.loads(shown["sasl_options"]) == {"username": "u", "password": MASK}
    assert shown["addr"] == f"amqp://rr:{MASK}@127.0.0.1:1/"
    assert not leaks([repr(shown)])
    assert set(secret_values(options)) >= {"pw-1", DECLARED_PW, "t-2", AMQP_PW, SQS_SECRET}


def test_a_plain_string_or_a_number_in_yaml_is_a_secret_and_is_remembered() -> None:
    class Model(StrictModel):
        password: Secret = SecretStr("")
        url: SecretURL | None = None

    model = validate(Model, {"password": 98765432, "url": "amqp://u:UrlPw-77e1d3@h/"}, "x")
    assert model.password.get_secret_value() == "98765432"
    assert "98765432" not in repr(model) and "UrlPw-77e1d3" not in repr(model)
    assert scrub("the values 98765432 and UrlPw-77e1d3") == f"the values {MASK} and {MASK}"


def test_a_validation_error_never_repeats_its_input() -> None:
    with pytest.raises(Exception) as caught:
        SASLOptions.model_validate({"password": DECLARED_PW})  # no username
    assert not leaks(error_texts(caught.value))


# -- config models ----------------------------------------------------------------------------


def test_every_secret_field_is_masked_and_the_driver_gets_the_real_value() -> None:
    amqp = validate(AMQPSection, {"addr": AMQP_ADDR}, "amqp")
    nats = validate(NATSSection, {"addr": NATS_ADDR}, "nats")
    sasl = {"mechanism": "SCRAM-SHA-512", "username": "rr", "password": KAFKA_PW}
    kafka = validate(KafkaSection, {"sasl": sasl}, "kafka")
    options = validate(KafkaOptions, {"sasl_options": json.dumps(sasl)}, "declare.k")
    sqs = validate(SQSSection, {"key": SQS_KEY, "secret": SQS_SECRET,
                                "session_token": SQS_SESSION, "region": "r"}, "sqs")
    rpc = validate(RPCConfig, {"token": RPC_TOKEN}, "rpc")
    dashboard = validate(DashboardConfig, {"token": DASH_TOKEN}, "dashboard")
    shown = [t for m in (amqp, nats, kafka, options, sqs, rpc, dashboard) for t in model_texts(m)]
    assert not leaks(shown)
    assert f"amqp://rr:{MASK}@127.0.0.1:1/" in repr(amqp)
    assert nats.shown() == f"nats://rr:{MASK}@127.0.0.1:1,nats://{MASK}@127.0.0.1:2"
    # ... while the connecting code reads the real values
    assert amqp.addr.get_secret_value() == AMQP_ADDR
    assert nats.servers() == [f"nats://rr:{NATS_PW}@127.0.0.1:1",
                              f"nats://{NATS_TOKEN}@127.0.0.1:2"]
    assert kafka.sasl is not None
    assert connection_kwargs(kafka, kafka.sasl, None)["sasl_plain_password"] == KAFKA_PW
    assert options.sasl_options is not None
    assert options.sasl_options.password.get_secret_value() == KAFKA_PW
    assert sqs.client_kwargs() == {"region_name": "r", "aws_access_key_id": SQS_KEY,
                                   "aws_secret_access_key": SQS_SECRET,
                                   "aws_session_token": SQS_SESSION}


@pytest.mark.parametrize(("model", "data", "key"), [
    (AMQPSection, {"addr": f"http://rr:{AMQP_PW}@h/"}, "amqp"),
    (AMQPSection, {"addr": AMQP_ADDR, "tls": {"root_ca": "/nonexistent/ca.pem"}}, "amqp"),
    (NATSSection, {"addr": f"http://rr:{NATS_PW}@h, {NATS_TOKEN}"}, "nats"),
    (KafkaSection, {"sasl": {"password": KAFKA_PW}}, "kafka"),
    (KafkaSection, {"sasl": {"mechanism": "aws_msk_iam", "username": "u", "password": KAFKA_PW,
                             "secret_key": KAFKA_AWS}}, "kafka"),
    (KafkaOptions, {"sasl_options": json.dumps({"mechanism": "nope", "password": KAFKA_PW})},
     "declare.k"),
    (SQSSection, {"secret": SQS_SECRET, "session_token": SQS_SESSION}, "sqs"),
    (SQSSection, {"key": SQS_KEY, "secret": SQS_SECRET, "endpoint": "no-scheme"}, "sqs"),
    (RPCConfig, {"token": [RPC_TOKEN]}, "rpc"),
])
def test_invalid_options_are_reported_without_their_secrets(model: type[BaseModel],
                                                            data: dict[str, Any],
                                                            key: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate(model, data, key)
    texts = error_texts(caught.value) + [m for _, m in caught.value.problems]
    assert not leaks(texts), texts


def test_a_pipeline_shows_its_options_masked() -> None:
    pipe = Pipeline(name="k", driver="kafka", password=DECLARED_PW,
                    sasl_options=json.dumps({"username": "u", "password": DECLARED_PW}),
                    config={"addr": AMQP_ADDR})
    assert not leaks([repr(pipe), str(pipe), f"{pipe}", f"{pipe!r}", repr([pipe])])
    assert pipe["password"] == DECLARED_PW  # the driver still reads the value


# -- the log filter -----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["development", "production"])
def test_the_logging_setup_masks_remembered_secrets_and_url_passwords(
        tmp_path: Path, mode: str) -> None:
    Config({"jobs": {}, "kafka": {"sasl": {"password": KAFKA_PW}}})  # loading remembers it
    out = tmp_path / "rr.log"
    root = logging.getLogger()
    level = root.level
    configure(LogsConfig(mode=mode, level="debug", output=str(out)))
    log = logging.getLogger("rrjobs.test.redaction")
    try:
        try:
            raise RuntimeError(f"refused {KAFKA_PW} at nats://x:{NATS_PW}@h")
        except RuntimeError:
            log.error("connecting to %s with %s", f"amqp://u:{AMQP_PW}@h", KAFKA_PW,
                      exc_info=True, extra={"detail": f"password {KAFKA_PW}"})
    finally:
        for handler in [h for h in root.handlers if getattr(h, "_rrjobs_logs", False)]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)
    text = out.read_text(encoding="utf-8")
    assert "RuntimeError: refused ***" in text and f"amqp://u:{MASK}@h" in text
    assert not leaks([text]), text


# -- the runtime: Declare through the RPC, stat, list, metrics ----------------------------------

CONFIG = {
    "rpc": {"token": RPC_TOKEN},
    "dashboard": {"token": DASH_TOKEN},
    "jobs": {"timeout": 12, "pool": {"num_workers": 1, "destroy_timeout": 1},
             "consume": ["mem"], "pipelines": {"mem": {"driver": "memory"}}},
    "amqp": {"addr": AMQP_ADDR},
    "nats": {"addr": NATS_ADDR},
    "kafka": {"brokers": ["127.0.0.1:1"], "ping": {"timeout": 1},
              "sasl": {"mechanism": "plain", "username": "rr", "password": KAFKA_PW}},
    "sqs": {"key": SQS_KEY, "secret": SQS_SECRET, "session_token": SQS_SESSION,
            "region": "us-east-1", "endpoint": "http://127.0.0.1:1"},
}

#: Declares with invalid options carrying a secret of their own.
INVALID: list[dict[str, str]] = [
    {"name": "k3", "driver": "kafka",
     "sasl_options": json.dumps({"mechanism": "nope", "password": DECLARED_PW})},
    {"name": "k4", "driver": "kafka", "sasl_options": f"{{'password': '{DECLARED_PW}'"},
    {"name": "x", "driver": "sqs", "queue": "q", "password": DECLARED_PW},
    {"name": "n2", "driver": "nats", "subject": "a b", "token": DECLARED_PW},
]
#: Declares whose broker is unreachable (with the section's credentials, or the
#: pipeline's own).
UNREACHABLE: list[dict[str, str]] = [
    {"name": "a", "driver": "amqp", "queue": "q", "routing_key": "q"},
    {"name": "n", "driver": "nats", "subject": "s", "stream": "st"},
    {"name": "k", "driver": "kafka", "consumer_options": json.dumps({"topics": ["t"]})},
    {"name": "k2", "driver": "kafka", "consumer_options": json.dumps({"topics": ["t"]}),
     "sasl_options": json.dumps({"mechanism": "SCRAM-SHA-256", "username": "u",
                                 "password": DECLARED_PW})},
    {"name": "s", "driver": "sqs", "queue": "q"},
]


async def test_declare_stat_list_and_metrics_never_show_a_secret(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    server = Server(Config(CONFIG), App(), "tcp://127.0.0.1:0")
    outputs: list[str] = []
    await server.start()
    try:
        async with RPCClient(server.address, timeout=60, token=RPC_TOKEN) as client:
            failures = [await asyncio.gather(client.declare(o), return_exceptions=True)
                        for o in INVALID]
            assert all(isinstance(f[0], ConfigError) for f in failures), failures
            failures += [await asyncio.gather(*(client.declare(o) for o in UNREACHABLE),
                                              return_exceptions=True)]
            for failure in (f for group in failures for f in group):
                assert isinstance(failure, Exception), failure
                outputs += error_texts(failure)
                outputs += [repr(getattr(failure, "problems", ""))]
            outputs.append(repr(await client.list()))
            stats = await client.stat()
            outputs.append(repr(stats))
        registry, collector = new_registry(server.jobs, process=False)
        collector.set_states(await server.jobs.stat())
        outputs.append(exposition(registry).decode())
        outputs += [repr(server), repr(server.jobs.config.rpc), repr(server.jobs.config)]
    finally:
        await server.stop()
    found = leaks(outputs + log_texts(caplog.records))
    assert not found, [(s, t[max(0, t.find(s) - 300):t.find(s) + 50]) for s, t in found]


def test_a_driver_error_boundary_replaces_a_leaking_client_error() -> None:
    def fail() -> None:
        try:
            raise OSError(f"cannot reach amqp://rr:{AMQP_PW}@h:1/")
        except OSError as inner:
            raise RuntimeError("connect failed") from inner

    with pytest.raises(RedactedError) as caught:
        try:
            fail()
        except RuntimeError as exc:
            redact_error(exc)
    assert str(caught.value) == "RuntimeError: connect failed"
    assert not leaks(error_texts(caught.value))
    clean = RuntimeError("nothing secret")
    redact_error(clean)  # returns: the caller re-raises it as it is
    shown = describe_error(OSError(f"refused nats://{NATS_TOKEN}@h"))
    assert shown == f"OSError: refused nats://{MASK}@h"


def _raised_from(error: BaseException, cause: BaseException) -> BaseException:
    """``error`` raised from ``cause``, caught: as a driver's error boundary sees it."""
    try:
        raise error from cause
    except BaseException as exc:
        return exc


def _redacted(exc: BaseException) -> BaseException:
    """What ``redact_error`` raises for ``exc``, called where the boundary catches it."""
    try:
        try:
            raise exc
        except BaseException as handled:
            redact_error(handled)
    except BaseException as replaced:
        return replaced
    raise AssertionError(f"{exc!r} was not replaced")


def test_an_rrjobs_error_that_shows_a_secret_keeps_its_type_and_its_fields_scrubbed() -> None:
    remember(OWN_PW)
    path = f"jobs.pipelines.{OWN_PW}.config.queue"
    error = ConfigError(path, f"refused by {OWN_PW}", [(path, f"refused by {OWN_PW}"),
                                                       ("jobs.pipelines.b.priority", "not 0")])
    error.add_note(f"address amqp://rr:{AMQP_PW}@h/ and {OWN_PW}")
    caught = _redacted(_raised_from(error, OSError(f"denied {OWN_PW}")))
    assert isinstance(caught, ConfigError) and type(caught) is ConfigError
    assert caught is not error
    assert caught.path == f"jobs.pipelines.{MASK}.config.queue"
    assert caught.message == f"refused by {MASK}"
    assert caught.problems == [(caught.path, caught.message),
                               ("jobs.pipelines.b.priority", "not 0")]
    assert str(caught) == f"{caught.path}: refused by {MASK}; jobs.pipelines.b.priority: not 0"
    assert caught.__notes__ == [f"address amqp://rr:{MASK}@h/ and {MASK}"]
    assert caught.__cause__ is None and caught.__suppress_context__  # the causes dropped
    assert not leaks(error_texts(caught)), error_texts(caught)
    assert path in str(error) and isinstance(error.__cause__, OSError)  # the original as it was


def test_an_rrjobs_error_whose_cause_shows_a_secret_keeps_its_text_without_the_cause() -> None:
    error = CapabilityError("no dead letters on 'p'", driver="amqp", pipeline="p",
                            capability="dead_letter_read")
    caught = _redacted(_raised_from(error, OSError(f"cannot reach amqp://rr:{AMQP_PW}@h:1/")))
    assert isinstance(caught, CapabilityError) and type(caught) is CapabilityError
    assert str(caught) == "no dead letters on 'p'"
    assert (caught.driver, caught.pipeline, caught.capability) == (
        "amqp", "p", "dead_letter_read")
    assert caught.__cause__ is None and caught.__suppress_context__
    assert not leaks(error_texts(caught))


def test_a_foreign_error_or_an_rrjobs_error_that_cannot_be_copied_clean_is_redacted() -> None:
    remember(OWN_PW)

    class Holding(RRJobsError):
        def __init__(self, cause: BaseException) -> None:
            super().__init__("open failed")
            self.inner = cause

        def __str__(self) -> str:
            return f"open failed: {self.inner}"

    caught = _redacted(OSError(f"denied {OWN_PW}"))
    assert type(caught) is RedactedError and str(caught) == f"OSError: denied {MASK}"
    caught = _redacted(Holding(OSError(f"denied {OWN_PW}")))  # its text is not its strings
    assert type(caught) is RedactedError and str(caught) == f"Holding: open failed: denied {MASK}"
    assert not leaks(error_texts(caught))
    clean = ConfigError("jobs.pipelines.a.queue", "is required")
    redact_error(clean)  # nothing to mask: returns, the caller re-raises it as it is


def test_a_password_that_reads_as_a_word_is_masked_only_where_it_is_a_credential() -> None:
    remember("guest", "rrjobs", "postgres", "Guest-9d1", "correcthorsebattery")
    assert is_word("guest") and is_word("rrjobs") and not is_word("Guest-9d1")
    text = "rrjobs.core.errors.ConfigError: guest refused at postgres"
    assert scrub(text) == text  # module names and broker words stay readable
    assert scrub("Guest-9d1 correcthorsebattery") == f"{MASK} {MASK}"  # not words: masked
    assert scrub("amqp://guest:guest@h/") == f"amqp://guest:{MASK}@h/"  # a URL's password is
    assert redact_options({"password": "guest"}) == {"password": MASK}
    redact_error(ConfigError("rrjobs.sqs.key", "guest is not a key"))  # nothing shown: returns


def test_a_credential_key_value_pair_is_masked_in_free_text() -> None:
    # a word-like password is not remembered for free text, but where the text says
    # it is a credential (libpq's keyword DSN, a query string) it is masked
    text = "connect to 'host=db user=app password=supersecret dbname=jobs' failed"
    assert scrub(text) == f"connect to 'host=db user=app password={MASK} dbname=jobs' failed"
    assert scrub("GET /q?user=a&token=abc123&x=1") == f"GET /q?user=a&token={MASK}&x=1"
    assert scrub('PWD = "two words"; next') == f'PWD = {MASK}; next'
    assert scrub("passwords=3 and no pair here") == "passwords=3 and no pair here"
