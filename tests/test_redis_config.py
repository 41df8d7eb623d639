"""The ``redis`` driver's options and entry layout, without a server."""

from __future__ import annotations

import pytest

from rrjobs.core.errors import ConfigError
from rrjobs.core.headers import DEDUCED_BY_RR
from rrjobs.core.options import validate
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.drivers.redis import codec
from rrjobs.drivers.redis.config import RedisOptions, RedisSection
from rrjobs.drivers.redis.driver import RedisDriver, keys_of, stream_keys

WHERE = "jobs.pipelines.p.config"


def test_declared_options_read_as_the_config_file_does() -> None:
    declared = validate(RedisOptions, {"priority_bands": "[1, 5, 10]", "prefetch": "50",
                                       "visibility_timeout": "10s", "dead_letter": "false"},
                        WHERE)
    assert declared == validate(RedisOptions, {"priority_bands": [1, 5, 10], "prefetch": 50,
                                               "visibility_timeout": 10, "dead_letter": False},
                                WHERE)
    assert validate(RedisOptions, {"priority_bands": "1,5"}, WHERE).priority_bands == [1, 5]


@pytest.mark.parametrize(("options", "key"), [
    ({"queue": "a{b}"}, "queue"),
    ({"priority_bands": [5, 1]}, "priority_bands"),
    ({"prefetch": 0}, "prefetch"),
    ({"nope": 1}, "nope"),
])
def test_bad_options_name_their_key(options: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        validate(RedisOptions, options, WHERE)
    assert err.value.path == f"{WHERE}.{key}"


def test_block_must_be_shorter_than_the_lease() -> None:
    options = validate(RedisOptions, {"block": 5, "visibility_timeout": 5}, WHERE)
    assert options.problems() == [("block", "must be shorter than visibility_timeout")]


def test_section_addr_and_secrets() -> None:
    section = validate(RedisSection, {"addr": "rediss://rrjobs:s3cret@host:6380",
                                      "password": "other-secret"}, "redis")
    assert section.uses_tls and section.nodes() == ["rediss://rrjobs:s3cret@host:6380"]
    shown = repr(section) + section.shown()
    assert "s3cret" not in shown and "other-secret" not in shown
    assert validate(RedisSection, {"addr": "host:1"}, "redis").nodes() == ["redis://host:1"]
    with pytest.raises(ConfigError) as err:
        validate(RedisSection, {"addr": "redis://a:1,redis://b:2"}, "redis")
    assert "cluster: true" in str(err.value)
    with pytest.raises(ConfigError):
        validate(RedisSection, {"addr": "http://host"}, "redis")


def test_every_key_of_a_queue_shares_its_hash_tag() -> None:
    prefix, delayed = keys_of("emails")
    keys = [delayed, *stream_keys("emails", [1, 10]), f"{prefix}dead"]
    assert all(key.startswith("rrjobs:{emails}:") for key in keys)
    assert stream_keys("emails", []) == ["rrjobs:{emails}:jobs"]


def test_entries_round_trip_and_foreign_entries_are_jobs() -> None:
    fields = codec.encode("id-1", "mail", b"\x00\xff", {"k": ["a", "b"]}, 3, True)
    f, payload = codec.decode(fields, 10)
    assert (f.id, f.name, f.priority, f.auto_ack, f.headers, payload) == (
        "id-1", "mail", 3, True, {"k": ["a", "b"]}, b"\x00\xff")
    f, payload = codec.decode({b"payload": b"raw", b"origin": b"php"}, 7)
    assert (f.name, f.priority, f.headers, payload) == (DEDUCED_BY_RR, 7, {"origin": ["php"]},
                                                        b"raw")
    with pytest.raises(ValueError):
        codec.decode({b"rr_headers": b'{"a": {"nested": 1}}', b"payload": b""}, 7)


def test_a_job_goes_to_the_first_band_at_least_its_priority() -> None:
    d = RedisDriver(Pipeline(name="p", driver="redis"), PriorityQueue(),
                    validate(RedisOptions, {"priority_bands": [1, 5, 10]}, WHERE))
    assert [d.stream_for(p) for p in (1, 2, 5, 10, 99)] == [
        "rrjobs:{p}:jobs:1", "rrjobs:{p}:jobs:5", "rrjobs:{p}:jobs:5", "rrjobs:{p}:jobs:10",
        "rrjobs:{p}:jobs:10"]
