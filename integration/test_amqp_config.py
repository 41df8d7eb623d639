"""The ``amqp`` driver's options: RoadRunner's keys and defaults, both forms, Declare strings,
and the wire codec's field types. No broker needed; part of the ``amqp`` tests."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from pamqp import encode

from rrjobs.core.constructor import check_problems as _check_topology
from rrjobs.core.errors import ConfigError
from rrjobs.core.headers import DEDUCED_BY_RR, BadHeadersError
from rrjobs.core.options import options_from_pipeline, validate
from rrjobs.core.pipeline import Pipeline
from rrjobs.drivers.amqp import codec
from rrjobs.drivers.amqp.config import AMQPOptions, AMQPSection, delay_ms

pytestmark = pytest.mark.amqp


def options(data: dict[str, Any], key: str = "jobs.pipelines.p.config") -> AMQPOptions:
    opts = validate(AMQPOptions, data, key)
    _check_topology(opts, key)
    return opts


def declared(data: dict[str, str]) -> AMQPOptions:
    pipe = Pipeline({**data, "name": "p", "driver": "amqp"})
    opts = options_from_pipeline(pipe, AMQPOptions)
    _check_topology(opts, "declare.p")
    return opts


def paths(exc: pytest.ExceptionInfo[ConfigError]) -> list[str]:
    return [p for p, _ in exc.value.problems]


# -- defaults ---------------------------------------------------------------------------------


def test_roadrunner_defaults() -> None:
    topo = options({"queue": "q", "routing_key": "rk"}).topology()
    assert (topo.prefetch, topo.priority, topo.redial_timeout) == (10, 10, 60.0)
    ex = topo.exchange
    assert (ex.name, ex.type, ex.durable, ex.auto_delete, ex.declare) == (
        "amqp.default",
        "direct",
        False,
        False,
        True,
    )
    q = topo.queue
    assert (
        q.name,
        q.routing_key,
        q.durable,
        q.auto_delete,
        q.exclusive,
        q.delete_on_stop,
        q.multiple_ack,
        q.requeue_on_fail,
        q.arguments,
        q.declare,
    ) == ("q", "rk", False, False, False, False, False, False, {}, True)
    assert topo.consumer_tag.startswith("roadrunner-")
    assert len(topo.consumer_tag) == len("roadrunner-") + 36
    assert AMQPSection().addr.get_secret_value() == "amqp://guest:guest@127.0.0.1:5672/"
    assert (validate(AMQPSection, {"addr": ""}, "amqp").addr.get_secret_value()
            == "amqp://guest:guest@127.0.0.1:5672/")


def test_empty_values_mean_defaults_and_zero_redial_means_sixty() -> None:
    topo = options(
        {"queue": "q", "routing_key": "rk", "exchange": "", "consumer_id": "", "redial_timeout": 0}
    ).topology()
    assert topo.exchange.name == "amqp.default"
    assert topo.redial_timeout == 60.0
    assert topo.consumer_tag.startswith("roadrunner-")


def test_every_flat_key_is_read() -> None:
    topo = options(
        {
            "prefetch": 25,
            "priority": 3,
            "redial_timeout": "1m30s",
            "queue": "jobs",
            "exchange": "ex",
            "exchange_type": "topic",
            "routing_key": "jobs.*",
            "exclusive": True,
            "durable": True,
            "exchange_durable": True,
            "exchange_auto_delete": True,
            "queue_auto_delete": True,
            "delete_queue_on_stop": True,
            "multiple_ack": True,
            "requeue_on_fail": False,
            "queue_headers": {"x-queue-mode": "lazy", "x-max-length": 100},
            "consumer_id": "worker-1",
            "exchange_declare": False,
            "queue_declare": False,
        }
    ).topology()
    assert (topo.prefetch, topo.priority, topo.redial_timeout) == (25, 3, 90.0)
    ex = topo.exchange
    assert (ex.name, ex.type, ex.durable, ex.auto_delete, ex.declare) == (
        "ex", "topic", True, True, False)
    q = topo.queue
    assert (
        q.name,
        q.routing_key,
        q.exclusive,
        q.durable,
        q.auto_delete,
        q.delete_on_stop,
        q.multiple_ack,
        q.consumer_id,
        q.declare,
    ) == ("jobs", "jobs.*", True, True, True, True, True, "worker-1", False)
    assert q.arguments == {"x-queue-mode": "lazy", "x-max-length": 100}
    assert topo.consumer_tag == "worker-1"


def test_version_2_nested_form_resolves_like_the_flat_form() -> None:
    flat = options(
        {
            "priority": 4,
            "prefetch": 7,
            "queue": "q",
            "exchange": "ex",
            "exchange_type": "fanout",
            "exchange_durable": True,
            "exchange_auto_delete": True,
            "routing_key": "rk",
            "durable": True,
            "queue_auto_delete": True,
            "exclusive": True,
            "delete_queue_on_stop": True,
            "multiple_ack": True,
            "consumer_id": "c",
            "queue_headers": {"x-queue-type": "quorum"},
            "exchange_declare": False,
            "queue_declare": False,
        }
    ).topology()
    nested = options(
        {
            "version": 2,
            "priority": 4,
            "prefetch": 7,
            "exchange": {
                "name": "ex",
                "type": "fanout",
                "durable": True,
                "auto_delete": True,
                "declare": False,
            },
            "queue": {
                "name": "q",
                "routing_key": "rk",
                "durable": True,
                "auto_delete": True,
                "exclusive": True,
                "delete_on_stop": True,
                "multiple_ack": True,
                "consumer_id": "c",
                "headers": {"x-queue-type": "quorum"},
                "declare": False,
            },
        }
    ).topology()
    assert nested == flat
    assert nested.quorum and nested.durable


def test_mixed_or_mismatched_forms_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        options({"queue": {"name": "q", "routing_key": "r"}, "durable": True})
    assert "queue.durable" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        options({"exchange": {"name": "e", "type": "fanout"}, "exchange_type": "topic"})
    assert "exchange.type" in str(caught.value)
    with pytest.raises(ConfigError):
        options({"version": 2, "queue": "q", "routing_key": "r"})
    with pytest.raises(ConfigError):
        options({"version": 1, "queue": {"name": "q", "routing_key": "r"}})
    with pytest.raises(ConfigError) as caught:
        options({"queue": {"name": "q", "routing_key": "r", "surely_not": 1}})
    assert paths(caught) == ["jobs.pipelines.p.config.queue.surely_not"]
    with pytest.raises(ConfigError) as caught:
        options({"exchange": {"name": "e", "type": "fanout", "durable": "perhaps"}})
    assert paths(caught) == ["jobs.pipelines.p.config.exchange.durable"]
    with pytest.raises(ConfigError) as caught:
        options({"queue": 5, "routing_key": "r"})
    assert paths(caught) == ["jobs.pipelines.p.config.queue"]


def test_bad_values_name_their_key_path() -> None:
    with pytest.raises(ConfigError) as caught:
        options({"queue": "q", "routing_key": "r", "prefetch": 0})
    assert "jobs.pipelines.p.config.prefetch" in paths(caught)
    with pytest.raises(ConfigError) as caught:
        options({"queue": "q", "routing_key": "r", "exchange_type": "x-delayed-message"})
    assert "jobs.pipelines.p.config.exchange_type" in paths(caught)
    with pytest.raises(ConfigError) as caught:
        options({"queue": "q", "routing_key": "r", "redial_timeout": "soon"})
    assert "jobs.pipelines.p.config.redial_timeout" in paths(caught)
    with pytest.raises(ConfigError) as caught:
        options({"queue": "q", "routing_key": "r", "queue_headers": {"x": [1]}})
    assert "jobs.pipelines.p.config.queue_headers" in paths(caught)


def test_routing_key_is_required_except_for_fanout_and_headers_exchanges() -> None:
    for kind in ("direct", "topic"):
        with pytest.raises(ConfigError) as caught:
            options({"queue": "q", "exchange_type": kind})
        assert "jobs.pipelines.p.config.routing_key" in paths(caught)
    with pytest.raises(ConfigError) as caught:
        options({"queue": {"name": "q"}})
    assert "jobs.pipelines.p.config.queue.routing_key" in paths(caught)
    for kind in ("fanout", "headers"):
        assert options({"queue": "q", "exchange_type": kind}).topology().queue.routing_key == ""


def test_requeue_on_fail_true_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError) as caught:
        options({"queue": "q", "routing_key": "r", "requeue_on_fail": True})
    assert "jobs.pipelines.p.config.requeue_on_fail" in paths(caught)
    assert "retry" in str(caught.value)
    with pytest.raises(ConfigError) as caught:
        declared({"queue": "q", "routing_key": "r", "requeue_on_fail": "true"})
    assert "declare.p.requeue_on_fail" in paths(caught)
    assert options({"queue": "q", "routing_key": "r", "requeue_on_fail": False})


def test_x_max_priority_must_be_a_byte() -> None:
    with pytest.raises(ConfigError) as caught:
        options({"queue": "q", "routing_key": "r", "queue_headers": {"x-max-priority": 300}})
    assert "jobs.pipelines.p.config.queue_headers" in paths(caught)
    topo = options(
        {"queue": "q", "routing_key": "r", "queue_headers": {"x-max-priority": "10"}}
    ).topology()
    assert topo.max_priority == 10


def test_declare_string_forms() -> None:
    topo = declared(
        {
            "prefetch": "25",
            "priority": "3",
            "redial_timeout": "5s",
            "queue": "q",
            "exchange": "ex",
            "exchange_type": "topic",
            "routing_key": "a.*",
            "durable": "true",
            "exclusive": "false",
            "exchange_durable": "1",
            "exchange_auto_delete": "no",
            "queue_auto_delete": "yes",
            "delete_queue_on_stop": "true",
            "multiple_ack": "true",
            "requeue_on_fail": "false",
            "queue_headers": '{"x-max-priority": 10, "x-queue-mode": "lazy"}',
            "consumer_id": "c1",
            "exchange_declare": "false",
            "queue_declare": "false",
        }
    ).topology()
    assert (topo.prefetch, topo.priority, topo.redial_timeout) == (25, 3, 5.0)
    assert (
        topo.exchange.name,
        topo.exchange.type,
        topo.exchange.durable,
        topo.exchange.auto_delete,
        topo.exchange.declare,
    ) == ("ex", "topic", True, False, False)
    q = topo.queue
    assert (
        q.durable,
        q.exclusive,
        q.auto_delete,
        q.delete_on_stop,
        q.multiple_ack,
        q.declare,
        q.consumer_id,
    ) == (True, False, True, True, True, False, "c1")
    assert q.arguments == {"x-max-priority": 10, "x-queue-mode": "lazy"}
    # Unset keys arrive as empty strings from PHP: they mean the default.
    topo = declared(
        {"queue": "q", "routing_key": "r", "prefetch": "", "exchange": "", "queue_headers": ""}
    ).topology()
    assert (topo.prefetch, topo.exchange.name, topo.queue.arguments) == (10, "amqp.default", {})


def test_declare_errors_name_their_key() -> None:
    with pytest.raises(ConfigError) as caught:
        declared({"queue": "q", "routing_key": "r", "queue_headers": "{not json"})
    assert "declare.p.queue_headers" in paths(caught)
    with pytest.raises(ConfigError) as caught:
        declared({"queue": "q", "routing_key": "r", "prefetch": "many"})
    assert "declare.p.prefetch" in paths(caught)
    with pytest.raises(ConfigError) as caught:
        declared({"queue": "q", "routing_key": "r", "durable": "maybe"})
    assert "declare.p.durable" in paths(caught)


# -- the global section -------------------------------------------------------------------------


def test_tls_settings_are_checked(tmp_path: Path) -> None:
    cert, key, ca = (tmp_path / n for n in ("c.pem", "k.pem", "ca.pem"))
    for f in (cert, key, ca):
        f.write_text("x")
    ok = validate(
        AMQPSection,
        {
            "addr": "amqps://h/",
            "tls": {
                "cert": str(cert),
                "key": str(key),
                "root_ca": str(ca),
                "client_auth_type": "require_and_verify_client_cert",
            },
        },
        "amqp",
    )
    assert ok.tls is not None and ok.tls.client_auth_type == "require_and_verify_client_cert"
    assert validate(AMQPSection, {"addr": "amqps://h/", "tls": {"root_ca": str(ca)}}, "amqp")
    bad = [
        ({"addr": "amqp://h/", "tls": {"root_ca": str(ca)}}, "amqps://"),
        ({"addr": "amqps://h/", "tls": {"cert": str(cert)}}, "tls.key"),
        ({"addr": "amqps://h/", "tls": {"key": str(key)}}, "tls.cert"),
        ({"addr": "amqps://h/", "tls": {"root_ca": str(tmp_path / "nope.pem")}}, "does not exist"),
        (
            {"addr": "amqps://h/", "tls": {"client_auth_type": "verify_client_cert_if_given"}},
            "client certificate",
        ),
        ({"addr": "amqps://h/", "tls": {"client_auth_type": "sometimes"}}, "client_auth_type"),
        ({"addr": "http://h/"}, "amqp://"),
    ]
    for data, text in bad:
        with pytest.raises(ConfigError) as caught:
            validate(AMQPSection, data, "amqp")
        assert text in str(caught.value), (data, str(caught.value))
        assert str(caught.value).startswith("amqp")


# -- the codec ------------------------------------------------------------------------------


def field_types(table: dict[str, Any]) -> dict[str, str]:
    """Each key's AMQP field type letter, read from pamqp's encoded bytes."""
    codec.install_typed_encoding()
    raw = encode.field_table(table)
    (size,) = struct.unpack(">I", raw[:4])
    data = raw[4 : 4 + size]
    out: dict[str, str] = {}
    offset = 0
    sizes = {"t": 1, "b": 1, "B": 1, "s": 2, "u": 2, "I": 4, "i": 4, "l": 8, "f": 4, "d": 8, "T": 8}
    while offset < len(data):
        klen = data[offset]
        key = data[offset + 1 : offset + 1 + klen].decode()
        offset += 1 + klen
        kind = chr(data[offset])
        offset += 1
        out[key] = kind
        if kind in ("S", "x", "A", "F"):
            (n,) = struct.unpack(">I", data[offset : offset + 4])
            offset += 4 + n
        else:
            offset += sizes[kind]
    return out


def test_pack_writes_roadrunner_field_types() -> None:
    table = codec.pack("id-1", "job.name", "p", {"h": ["1", "2"]}, 5, 10, True)
    assert field_types(table) == {
        "rr_id": "S",
        "rr_job": "S",
        "rr_pipeline": "S",
        "rr_headers": "x",
        "rr_delay": "I",
        "rr_priority": "l",
        "rr_auto_ack": "t",
    }
    # pamqp alone would pick the smallest type (b) for both.
    assert field_types({"a": 10, "b": 40000}) == {"a": "b", "b": "u"}
    assert field_types(
        codec.typed_arguments(
            {"x-max-priority": 10, "x-message-ttl": 2**40, "x-queue-type": "quorum", "f": 1.5}
        )
    ) == {"x-max-priority": "I", "x-message-ttl": "l", "x-queue-type": "S", "f": "d"}


def test_unpack_reads_any_integer_type_and_falls_back_for_foreign_messages() -> None:
    table = {
        "rr_id": "a",
        "rr_job": "j",
        "rr_priority": 3,
        "rr_delay": 7,
        "rr_auto_ack": True,
        "rr_headers": bytearray(b'{"k":["v1","v2"],"x-foreign":["from-json"]}'),
        "x-foreign": "native",
        "n": 12,
        "f": 1.5,
        "flag": False,
        "list": ["a", 1],
        "x-death": [{"count": 1, "reason": "expired"}],
    }
    got = codec.unpack(table, 10)
    assert (got.id, got.name, got.priority, got.delay, got.auto_ack) == ("a", "j", 3, 7, True)
    assert got.headers == {
        "k": ["v1", "v2"],
        "x-foreign": ["from-json"],
        "n": ["12"],
        "f": ["1.50000"],
        "flag": ["false"],
        "list": ["a", "1"],
    }
    foreign = codec.unpack({"kind": "raw"}, 10)
    assert foreign.name == DEDUCED_BY_RR and foreign.priority == 10 and foreign.id
    assert codec.unpack(None, 4).priority == 4
    assert codec.unpack({"rr_priority": 0}, 4).priority == 4
    # unreadable rr_headers: decoding fails, so the delivery becomes a failed job
    # with rr_error (rrjobs.core.fields, the rule of every driver)
    with pytest.raises(BadHeadersError, match="rr_headers is not JSON"):
        codec.unpack({"rr_job": "j", "rr_headers": bytearray(b"{oops")}, 1)


def test_x_routing_key_is_taken_out_of_the_headers() -> None:
    assert codec.split_routing_key({"x-routing-key": ["rk2"], "a": ["b"]}, "rk") == (
        {"a": ["b"]},
        "rk2",
    )
    assert codec.split_routing_key({"x-routing-key": ["", "x"]}, "rk") == ({}, "rk")
    assert codec.split_routing_key({"a": ["b"]}, "rk") == ({"a": ["b"]}, "rk")


def test_delays_round_up_to_whole_milliseconds() -> None:
    assert [delay_ms(d) for d in (1, 0.0015, 2.5, 0.0001)] == [1000, 2, 2500, 1]
    topo = options({"queue": "q", "routing_key": "rk", "exchange": "ex"}).topology()
    assert topo.delay_queue(5000, "rk") == "delayed-5000.ex.q"
    assert topo.delay_queue(5000, "other") == "delayed-5000.ex.other"
    push_only = options({"routing_key": "rk", "exchange": "ex"}).topology()
    assert push_only.delay_queue(1000, "rk") == "delayed-1000.ex.rk"
