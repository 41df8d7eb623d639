"""The kafka driver's options: RoadRunner's keys, Declare's JSON strings, honest refusals."""

from __future__ import annotations

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
    refused({"producer_options": {"transaction_timeout": "1m"}},
            f"{base}.producer_options", "transactions")
    refused({"consumer_options": {"topics": ["t"],
                                  "consumer_offset": {"type": "WithEpoch", "value": 1}}},
            f"{base}.consumer_options.consumer_offset", "WithEpoch")
    refused({"group_options": {"group_id": "g", "block_rebalance_on_poll": True}},
            f"{base}.group_options", "block_rebalance_on_poll")
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
        validate(KafkaSection, {"tls": {"timeout": "10s"}}, "kafka")
    assert "tls.timeout" in str(caught.value)
    with pytest.raises(ConfigError):
        validate(KafkaSection, {"sasl": {"mechanism": "plain", "username": "u", "zid": "z"}},
                 "kafka")
