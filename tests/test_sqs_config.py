"""SQS options and the global section (no broker)."""

from __future__ import annotations

import pytest

from rrjobs.core.errors import ConfigError
from rrjobs.core.options import validate
from rrjobs.drivers.sqs.config import SQSOptions, SQSSection
from rrjobs.drivers.sqs.driver import capabilities_for

KEY = "jobs.pipelines.p.config"


def test_roadrunner_defaults() -> None:
    o = validate(SQSOptions, {}, KEY)
    assert (o.queue, o.prefetch, o.priority, o.visibility_timeout, o.wait_time_seconds) == (
        "default", 1, 10, 0, 0)
    assert o.in_flight_limit == 1 and not o.fifo and o.problems() == []


def test_declare_strings_and_wait_time_alias() -> None:
    o = validate(SQSOptions, {"queue": "q", "prefetch": "5", "wait_time": "3",
                              "skip_queue_declaration": "true",
                              "attributes": '{"visibilitytimeout": 40, "message_retention_'
                                            'period": "600"}',
                              "tags": '{"team": "jobs"}', "visibility_timeout": ""}, "declare.p")
    assert (o.prefetch, o.wait_time_seconds, o.skip_queue_declaration) == (5, 3, True)
    assert o.attributes == {"VisibilityTimeout": "40", "MessageRetentionPeriod": "600"}
    assert o.tags == {"team": "jobs"} and o.visibility_timeout == 0


def test_redrive_policy_mapping_becomes_json() -> None:
    o = validate(SQSOptions, {"attributes": {"RedrivePolicy": {"deadLetterTargetArn": "arn:x",
                                                               "maxReceiveCount": 3}}}, KEY)
    assert o.attributes["RedrivePolicy"] == '{"deadLetterTargetArn":"arn:x","maxReceiveCount":3}'


@pytest.mark.parametrize(("data", "path"), [
    ({"prefetch": 11}, f"{KEY}.prefetch"),
    ({"wait_time_seconds": 21}, f"{KEY}.wait_time_seconds"),
    ({"visibility_timeout": 43201}, f"{KEY}.visibility_timeout"),
    ({"attributes": {"NoSuchAttribute": "1"}}, f"{KEY}.attributes"),
    ({"surely_not": 1}, f"{KEY}.surely_not"),
])
def test_bad_values_name_their_key(data: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate(SQSOptions, data, KEY)
    assert path in [p for p, _ in caught.value.problems]


def test_fifo_rules() -> None:
    fifo = validate(SQSOptions, {"queue": "q.fifo"}, KEY)
    assert fifo.fifo and ("message_group_id", "required for a FIFO (.fifo) queue") in \
        fifo.problems()
    ok = validate(SQSOptions, {"queue": "q.fifo", "message_group_id": "g"}, KEY)
    assert ok.problems() == [] and ok.create_attributes() == {"FifoQueue": "true"}
    assert capabilities_for(ok, dead_letter=False).delay is False
    # SQS takes a group on a standard queue too (fair queues): RoadRunner's sample sets one
    standard = validate(SQSOptions, {"message_group_id": "g"}, KEY)
    assert standard.problems() == [] and not standard.fifo


def test_error_visibility_needs_retain() -> None:
    o = validate(SQSOptions, {"error_visibility_timeout": 5}, KEY)
    assert [k for k, _ in o.problems()] == ["error_visibility_timeout"]
    assert validate(SQSOptions, {"error_visibility_timeout": 5, "retain_failed_jobs": True},
                    KEY).problems() == []


def test_skip_queue_declaration_refuses_attributes_and_tags() -> None:
    o = validate(SQSOptions, {"skip_queue_declaration": True, "tags": {"team": "jobs"},
                              "attributes": {"VisibilityTimeout": 40}}, KEY)
    assert [k for k, _ in o.problems()] == ["attributes", "tags"]
    assert validate(SQSOptions, {"skip_queue_declaration": True}, KEY).problems() == []


def test_section() -> None:
    s = validate(SQSSection, {"key": "k", "secret": "s", "region": "eu-west-1",
                              "session_token": "t", "endpoint": "http://h:1"}, "sqs")
    assert s.client_kwargs() == {"region_name": "eu-west-1", "endpoint_url": "http://h:1",
                                 "aws_access_key_id": "k", "aws_secret_access_key": "s",
                                 "aws_session_token": "t"}
    assert validate(SQSSection, {}, "sqs").client_kwargs() == {}
    with pytest.raises(ConfigError) as caught:
        validate(SQSSection, {"key": "k"}, "sqs")
    assert caught.value.problems[0][0] == "sqs"


def test_the_region_falls_back_to_aws_region() -> None:
    """RoadRunner's AWS SDK reads AWS_REGION; botocore reads only AWS_DEFAULT_REGION."""
    section = validate(SQSSection, {}, "sqs")
    assert section.client_kwargs({"AWS_REGION": "eu-north-1"})["region_name"] == "eu-north-1"
    assert "region_name" not in section.client_kwargs({"AWS_DEFAULT_REGION": "eu-west-3"})
    named = validate(SQSSection, {"region": "us-west-1"}, "sqs")
    assert named.client_kwargs({"AWS_REGION": "eu-north-1"})["region_name"] == "us-west-1"
