"""The nats driver's options (no server): RoadRunner's keys, defaults and errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from rrjobs.config import Config
from rrjobs.core.errors import ConfigError
from rrjobs.core.options import validate
from rrjobs.drivers.nats.config import NATSOptions, NATSSection, subject_matches
from rrjobs.drivers.nats.driver import NATSConstructor, capabilities_for

KEY = "jobs.pipelines.p.config"


def test_roadrunner_defaults() -> None:
    o = validate(NATSOptions, {}, KEY)
    assert (o.priority, o.subject, o.stream, o.prefetch) == (10, "default", "default-stream", 10)
    assert (o.deliver_new, o.rate_limit, o.delete_after_ack, o.delete_stream_on_stop) == (
        False, None, False, False)
    assert o.ack_wait == 30.0
    assert o.consumer_name() == "rrjobs-default-stream-default"
    assert o.delay_stream_name() == "default-stream-rrjobs-delayed"
    assert o.delay_subject() == "rrjobs-delayed.default-stream-rrjobs-delayed.default"
    assert o.delay_subjects() == "rrjobs-delayed.default-stream-rrjobs-delayed.>"


def test_declare_strings() -> None:
    o = validate(NATSOptions, {"prefetch": "5", "deliver_new": "true", "ack_wait": "1m",
                               "rate_limit": "", "subject": "a.b"}, "declare.p")
    assert (o.prefetch, o.deliver_new, o.ack_wait, o.rate_limit, o.subject) == (
        5, True, 60.0, None, "a.b")


@pytest.mark.parametrize(("key", "value"), [
    ("prefetch", 0), ("subject", "a.*"), ("subject", "a b"), ("stream", "a.b"),
    ("ack_wait", "soon"), ("ack_wait", "10ms"), ("rate_limit", 0), ("priority", "high"),
    ("dead_letter_subject", "x.>"), ("surely_not", 1)])
def test_bad_values_name_their_key(key: str, value: object) -> None:
    with pytest.raises(ConfigError) as caught:
        validate(NATSOptions, {key: value}, KEY)
    assert f"{KEY}.{key}" in [p for p, _ in caught.value.problems]


def test_dead_letter_subject_must_differ() -> None:
    with pytest.raises(ConfigError):
        validate(NATSOptions, {"subject": "s", "dead_letter_subject": "s"}, KEY)


def test_section() -> None:
    assert NATSSection().servers() == ["nats://127.0.0.1:4222"]
    assert NATSSection(addr="nats://a:1, nats://b:2").servers() == ["nats://a:1", "nats://b:2"]
    with pytest.raises(ConfigError) as caught:
        NATSConstructor(Config({"nats": {"addr": "http://x"}, "jobs": {}}))
    assert caught.value.path == "nats.addr"


def test_credentials_is_a_file_checked_at_load_time(tmp_path: Path) -> None:
    creds = tmp_path / "rrjobs.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n")
    assert NATSSection(credentials=str(creds)).credentials == str(creds)
    assert NATSSection().credentials == ""
    with pytest.raises(ConfigError) as caught:
        NATSConstructor(Config({"nats": {"credentials": str(tmp_path / "missing.creds")},
                                "jobs": {}}))
    assert caught.value.path == "nats.credentials"
    assert "does not exist" in str(caught.value)


def test_max_payload_leaves_room_for_base64() -> None:
    max_payload = capabilities_for(NATSOptions(), 1024 * 1024).max_payload
    assert max_payload == (1024 * 1024 - 8192) * 3 // 4
    assert capabilities_for(NATSOptions()).max_payload is None


@pytest.mark.parametrize(("pattern", "subject", "covered"), [
    ("a.b", "a.b", True), ("a.*", "a.b", True), ("a.>", "a.b.c", True), ("a.*", "a.b.c", False),
    ("a.>", "a", False), ("a.b", "a.c", False), ("a.b.c", "a.b", False), (">", "x", True)])
def test_subject_matches(pattern: str, subject: str, covered: bool) -> None:
    assert subject_matches(pattern, subject) is covered
