"""The kafka driver's options: RoadRunner's keys, Declare's JSON strings, honest refusals."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from rrjobs.core.errors import ConfigError
from rrjobs.core.options import validate
from rrjobs.drivers.kafka.config import KafkaOptions, KafkaSection


def options(data: dict[str, object]) -> KafkaOptions:
    return validate(KafkaOptions, data, "jobs.pipelines.p.config")


def refused(data: dict[str, object], path: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        options(data)
    assert any(p == path for p, _ in caught.value.problems), caught.value.problems
    assert words in str(caught.value)


def test_declare_takes_json_strings() -> None:
    got = options({
        "priority": "3",
        "auto_create_topics_enable": "true",
        "producer_options": '{"required_acks": "AllISRAck", "compression_codec": "gzip"}',
        "consumer_options": '{"topics": ["a", "b"], "consumer_offset": {"type": "AtEnd"}}',
        "group_options": '{"group_id": "g", "instance_id": "i-1"}',
    })
    assert (got.priority, got.auto_create_topics_enable) == (3, True)
    assert got.consumer_options.topics == ["a", "b"]
    assert got.consumer_options.consumer_offset.type == "AtEnd"
    assert got.group_options is not None and got.group_options.instance_id == "i-1"
    assert got.default_topic() == "a"
    assert got.resolved_delay_topic() == "a.rrjobs-delayed"


def test_what_aiokafka_cannot_honour_is_refused() -> None:
    base = "jobs.pipelines.p.config"
    refused({"producer_options": {"partitioning_strategy": "Sticky"}},
            f"{base}.producer_options", "not supported by aiokafka")
    refused({"producer_options": {"required_acks": "LeaderAck"}},
            f"{base}.producer_options", "disable_idempotent")
    refused({"consumer_options": {"topics": ["t"],
                                  "consumer_offset": {"type": "WithEpoch", "value": 1}}},
            f"{base}.consumer_options.consumer_offset", "WithEpoch")
    refused({"consumer_options": {"consume_partitions": {"t": {"0": {}}}},
             "group_options": {"group_id": "g"}}, base, "consume_partitions")
    refused({"sasl_options": {"mechanism": "aws_msk_iam", "username": "u"}},
            f"{base}.sasl_options", "aws_msk_iam")
    refused({"surely_not": 1}, f"{base}.surely_not", "unknown key")


def test_global_section() -> None:
    section = validate(KafkaSection, {"brokers": "a:1, kafka://b:2", "ping": {"timeout": "2s"},
                                      "sasl": {"mechanism": "scram-sha-512", "username": "u",
                                               "password": "p"}}, "kafka")
    assert section.brokers == ["a:1", "b:2"]
    assert section.ping.timeout == 2.0
    assert section.sasl is not None and section.sasl.mechanism == "SCRAM-SHA-512"
    with pytest.raises(ConfigError) as caught:
        validate(KafkaSection, {"sasl": {"mechanism": "plain", "username": "u", "zid": "z"}},
                 "kafka")
    assert "zid" in str(caught.value)


def test_roadrunner_keys_without_meaning_load_with_an_info_line(
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    """RoadRunner's kafka sample: no_client_certs, a TLS block naming no file (TLS off,
    as in RoadRunner), SASL's nonce and the AWS keys under plain, transaction_timeout,
    consume_partitions beside topics (topics win in RoadRunner) and block_rebalance_on_poll."""
    caplog.set_level(logging.INFO, "rrjobs.config")
    section = validate(KafkaSection, {
        "tls": {"timeout": "10s", "key": "", "cert": "", "root_ca": "",
                "client_auth_type": "no_client_certs"},
        "sasl": {"mechanism": "plain", "username": "foo", "password": "bar", "nonce": "foo",
                 "is_token": False, "zid": "foo", "access_key": "foo", "secret_key": "bar",
                 "session_token": "bar", "user_agent": "baz"}}, "kafka")
    assert section.tls is None
    assert section.sasl is not None and section.sasl.username == "foo"
    for key in ("kafka.tls", "sasl.nonce", "sasl.access_key"):
        assert key in caplog.text
    assert "bar" not in caplog.text  # the AWS secrets are named, never shown
    ca = tmp_path / "ca.pem"
    ca.write_text("not read at validation")
    kept = validate(KafkaSection, {"tls": {"root_ca": str(ca), "timeout": "5s",
                                           "client_auth_type": "no_client_certs"}}, "kafka")
    assert kept.tls is not None and kept.tls.client_auth_type == "no_client_cert"
    assert "kafka.tls.timeout" in caplog.text
    got = options({"producer_options": {"transaction_timeout": "100s"},
                   "consumer_options": {"topics": ["foo", "^b.*$"], "consume_regexp": True,
                                        "consume_partitions": {"foo": {"0": {"type": "AtStart",
                                                                             "value": 1}}}},
                   "group_options": {"group_id": "foo", "block_rebalance_on_poll": True}})
    assert got.consumer_options.consume_partitions == {}
    assert got.consumer_options.topics == ["foo", "^b.*$"]
    assert got.group_options is not None and got.group_options.block_rebalance_on_poll
    for key in ("transaction_timeout", "consume_partitions", "block_rebalance_on_poll"):
        assert key in caplog.text


def test_compression_codecs_need_their_library_or_are_refused_at_the_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    base = "jobs.pipelines.p.config.producer_options.compression_codec"
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "cramjam" else real(name, *a))
    assert options({"producer_options": {"compression_codec": "gzip"}}
                   ).producer_options.compression_codec == "gzip"
    for codec in ("snappy", "lz4", "zstd"):
        refused({"producer_options": {"compression_codec": codec}}, base, "cramjam")
    refused({"producer_options": {"compression_codec": "brotli"}}, base, "gzip")
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: object() if name == "cramjam" else real(name, *a))
    got = options({"producer_options": '{"compression_codec": "zstd"}'})
    assert got.producer_options.compression_codec == "zstd"


def test_delay_buffer_error_timeout_and_metadata_max_age() -> None:
    base = "jobs.pipelines.p.config"
    got = options({})
    assert (got.delay_buffer, got.error_timeout) == (10_000, 60.0)
    assert got.consumer_options.metadata_max_age == 300.0
    got = options({"delay_buffer": "25", "error_timeout": "1m30s",
                   "consumer_options": '{"topics": ["t"], "metadata_max_age": "500ms"}'})
    assert (got.delay_buffer, got.error_timeout) == (25, 90.0)
    assert got.consumer_options.metadata_max_age == 0.5
    assert options({"error_timeout": 0}).error_timeout == 0.0  # never for retriable errors
    refused({"delay_buffer": 0}, f"{base}.delay_buffer", "must be > 0")
    refused({"delay_buffer": -3}, f"{base}.delay_buffer", "must be > 0")
    refused({"error_timeout": "-1s"}, f"{base}.error_timeout", "invalid duration")
    refused({"consumer_options": {"topics": ["t"], "metadata_max_age": 0}},
            f"{base}.consumer_options.metadata_max_age", "must be > 0")


def test_consume_regexp_needs_valid_expressions_and_a_group() -> None:
    base = "jobs.pipelines.p.config"
    got = options({"consumer_options": {"topics": ["orders\\..*"], "consume_regexp": True},
                   "group_options": {"group_id": "g"}})
    assert got.main_topics() == [] and got.resolved_delay_topic() == ""
    refused({"consumer_options": {"topics": ["orders\\..*"], "consume_regexp": True}},
            base, "consume_regexp needs group_options")
    refused({"consumer_options": {"topics": ["(unclosed"], "consume_regexp": True},
             "group_options": {"group_id": "g"}},
            f"{base}.consumer_options", "not a regular expression")
