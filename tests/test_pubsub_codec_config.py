"""The ``google_pub_sub`` driver's wire codec and options (no broker)."""

from __future__ import annotations

import json

import pytest

from rrjobs.core.errors import ConfigError, UnsupportedFeatureError
from rrjobs.core.headers import DEDUCED_BY_RR, BadHeadersError
from rrjobs.core.options import validate
from rrjobs.drivers.pubsub.codec import MAX_DELAY, attributes, decode
from rrjobs.drivers.pubsub.config import PubSubOptions, PubSubSection


def test_attributes_are_roadrunners_string_layout() -> None:
    attrs = attributes("id-1", "app.Job", {"a": ["1", "2"]}, 4, 5, True)
    assert attrs == {"rr_id": "id-1", "rr_job": "app.Job", "rr_delay": "5",
                     "rr_headers": '{"a":["1","2"]}', "rr_priority": "4",
                     "rr_auto_ack": "true"}
    assert attributes("i", "j", {}, 10, 0, False)["rr_headers"] == "{}"


def test_decode_round_trips_and_keeps_foreign_attributes_as_headers() -> None:
    attrs = {**attributes("id-1", "app.Job", {"a": ["1", "2"]}, 4, 0, False), "x-src": "php"}
    d = decode(attrs, 10)
    assert (d.id, d.name, d.priority, d.auto_ack, d.delay) == ("id-1", "app.Job", 4, False, 0)
    assert d.headers == {"a": ["1", "2"], "x-src": ["php"]}


def test_foreign_message_is_deduced_by_rr_with_the_pipeline_priority() -> None:
    d = decode({"kind": "json"}, 7)
    assert (d.name, d.priority, d.headers) == (DEDUCED_BY_RR, 7, {"kind": ["json"]})
    assert len(d.id) == 36 and d.id != decode({}, 7).id


def test_malformed_attributes_fall_back() -> None:
    d = decode({"rr_job": "j", "rr_priority": "x", "rr_delay": "-3", "rr_headers": "{}",
                "rr_auto_ack": "yes"}, 9)
    assert (d.priority, d.delay, d.headers, d.auto_ack) == (9, 0, {}, False)
    # other producers' shapes are read by the one rule (rrjobs.core.fields.read_rr_headers)
    assert decode({"rr_headers": json.dumps({"a": "one", "n": 2})}, 1).headers == {
        "a": ["one"], "n": ["2"]}


def test_an_absurd_rr_delay_is_clamped_not_overflowing() -> None:
    huge = decode({"rr_job": "j", "rr_delay": "9" * 400}, 1).delay
    assert huge == MAX_DELAY
    assert float(huge) + 1.7e9 < 1e12  # publish_time + delay stays an ordinary float
    assert decode({"rr_delay": "9" * 5000}, 1).delay == 0  # beyond int() parsing: ignored


def test_delay_rounds_up_to_whole_seconds() -> None:
    """The driver declares whole seconds; the kit's rounding never delivers early."""
    from rrjobs.core.delays import delay_units
    from rrjobs.drivers.pubsub.driver import capabilities_for

    options = PubSubOptions(project_id="p-1", topic="jobs")
    granularity = capabilities_for(options).delay_granularity
    assert granularity == 1.0
    assert [delay_units(x, granularity) for x in (0, 0.2, 1, 1.0000001, 1.5)] == [
        0, 1, 1, 2, 2]


def test_unreadable_rr_headers_fail_decoding() -> None:
    for raw in ("not json", "[1]"):
        with pytest.raises(BadHeadersError):
            decode({"rr_job": "j", "rr_headers": raw}, 1)


def test_headers_over_the_attribute_limit_are_refused() -> None:
    with pytest.raises(UnsupportedFeatureError, match="1024"):
        attributes("i", "j", {"big": ["x" * 2000]}, 1, 0, False)


def test_options_defaults_and_dead_letter_attempts() -> None:
    o = PubSubOptions.model_validate({"project_id": "p-1", "topic": "jobs"})
    assert (o.priority, o.prefetch, o.ack_deadline, o.max_delivery_attempts) == (10, 100, 480,
                                                                                 None)
    o = PubSubOptions.model_validate({"project_id": "p-1", "topic": "jobs",
                                      "dead_letter_topic": "dlq"})
    assert o.max_delivery_attempts == 10
    # a default, not a key the user set (an existing subscription is checked against set keys)
    assert "max_delivery_attempts" not in o.model_fields_set
    o = PubSubOptions.model_validate({"project_id": "p-1", "topic": "jobs",
                                      "dead_letter_topic": "dlq", "max_delivery_attempts": 10})
    assert "max_delivery_attempts" in o.model_fields_set
    assert o.subscription_path("pipe") == "projects/p-1/subscriptions/pipe"


def test_declare_strings_are_accepted() -> None:
    o = PubSubOptions.model_validate({"project_id": "p-1", "topic": "jobs", "priority": "3",
                                      "skip_topic_declaration": "true",
                                      "dead_letter_topic": "", "prefetch": "5"})
    assert (o.priority, o.skip_topic_declaration, o.dead_letter_topic, o.prefetch) == (
        3, True, "", 5)


@pytest.mark.parametrize(("data", "path"), [
    ({"topic": "jobs"}, "jobs.pipelines.p.config.project_id"),
    ({"project_id": "p-1"}, "jobs.pipelines.p.config.topic"),
    ({"project_id": "p-1", "topic": "x"}, "jobs.pipelines.p.config.topic"),
    ({"project_id": "p-1", "topic": "jobs", "ack_deadline": 900},
     "jobs.pipelines.p.config.ack_deadline"),
    ({"project_id": "p-1", "topic": "jobs", "bogus": 1}, "jobs.pipelines.p.config.bogus"),
    ({"project_id": "p-1", "topic": "jobs", "max_delivery_attempts": 5},
     "jobs.pipelines.p.config.max_delivery_attempts"),
    ({"project_id": "p-1", "topic": "jobs", "dead_letter_topic": "dlq",
      "max_delivery_attempts": 3}, "jobs.pipelines.p.config.max_delivery_attempts"),
    ({"project_id": "p-1", "topic": "jobs", "dead_letter_topic": "jobs"},
     "jobs.pipelines.p.config"),
])
def test_bad_options_name_their_key_path(data: dict[str, object], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        validate(PubSubOptions, data, "jobs.pipelines.p.config")
    assert info.value.problems[0][0] == path


def test_section_defaults_and_checks() -> None:
    s = PubSubSection.model_validate({})
    assert (s.endpoint, s.insecure) == ("127.0.0.1:8085", False)
    with pytest.raises(ConfigError) as info:
        validate(PubSubSection, {"endpoint": "http://x:1"}, "google_pub_sub")
    assert info.value.problems[0][0] == "google_pub_sub.endpoint"
