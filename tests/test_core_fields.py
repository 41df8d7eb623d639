"""rrjobs.core.fields: RoadRunner's rr_* job fields read by one rule, on every driver."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest

from rrjobs.core.fields import (
    INT_LIMIT,
    JobFields,
    as_bool,
    as_int,
    as_text,
    job_fields,
    read_rr_headers,
)
from rrjobs.core.headers import DEDUCED_BY_RR, BadHeadersError
from rrjobs.drivers.amqp import codec as amqp
from rrjobs.drivers.kafka import codec as kafka
from rrjobs.drivers.nats import codec as nats
from rrjobs.drivers.pubsub import codec as pubsub
from rrjobs.drivers.sqs import codec as sqs


def test_scalar_conversions() -> None:
    assert [as_text(v) for v in (None, b"\xffa", "x", 5)] == ["", "\ufffda", "x", "5"]
    assert [as_int(v) for v in (None, True, 7, " 8 ", b"9", "3.9", "x", "nan", "inf")] == [
        None, None, 7, 8, 9, 3, None, None, None]
    assert as_int("1e400") is None and as_int(10**40) == INT_LIMIT and as_int(-(10**40)) == (
        -INT_LIMIT)
    assert [as_bool(v) for v in (True, False, "TRUE", b"true", "yes", None, 1)] == [
        True, False, True, True, False, False, False]


def test_rr_headers_one_rule() -> None:
    for empty in (None, "", b"", "{}", b"{}", "null"):
        assert read_rr_headers(empty) == {}
    assert read_rr_headers('{"a":["1","2"],"s":"x","n":1,"b":true,"l":[1,"y"],"z":null}') == {
        "a": ["1", "2"], "s": ["x"], "n": ["1"], "b": ["true"], "l": ["1", "y"]}
    assert read_rr_headers(bytearray(b'{"a":["1"]}')) == {"a": ["1"]}
    for bad in ("{bad", "[1, 2]", '"text"', '{"a": {"b": 1}}', '{"a": [[1]]}', b"\xff\xfe",
                json.dumps({"k": "v" * 70_000}), json.dumps({str(i): "v" for i in range(300)})):
        with pytest.raises(BadHeadersError):
            read_rr_headers(bad)


def test_job_fields_defaults() -> None:
    f = job_fields(ident=None, name=b"", priority="0", auto_ack=None, delay="-5",
                   default_priority=4)
    assert (f.name, f.priority, f.auto_ack, f.delay, f.headers) == (DEDUCED_BY_RR, 4, False, 0, {})
    uuid.UUID(f.id)
    own = {"h": ["broker"], "k": ["broker"]}
    f = job_fields(ident="i", name="n", priority=-2, auto_ack="true", delay="3",
                   carried='{"k":["carried"]}', headers=own, fallback_id="key",
                   default_priority=4)
    assert f == JobFields("i", "n", {"h": ["broker"], "k": ["carried"]}, -2, True, 3)
    assert job_fields(ident="", name="n", priority=None, auto_ack=None, fallback_id="key",
                      default_priority=1).id == "key"


# One message with the same rr_* values, as each broker carries them.
RR = {"rr_id": "id-1", "rr_job": "app.Job", "rr_priority": "0", "rr_auto_ack": "true",
      "rr_headers": '{"k":["v1","v2"]}'}


def _amqp(rr: dict[str, str], default: int) -> JobFields:
    return amqp.unpack(dict(rr), default)


def _kafka(rr: dict[str, str], default: int) -> JobFields:
    return kafka.decode(None, b"", [(k, v.encode()) for k, v in rr.items()], default)


def _sqs(rr: dict[str, str], default: int) -> JobFields:
    attrs = {k: {"DataType": "String", "StringValue": v} for k, v in rr.items()}
    return sqs.decode({"Body": "b", "MessageAttributes": attrs}, default)


def _pubsub(rr: dict[str, str], default: int) -> JobFields:
    return pubsub.decode(dict(rr), default)


def _nats(rr: dict[str, str], default: int) -> JobFields:
    options = {"priority": int(rr["rr_priority"]), "auto_ack": rr["rr_auto_ack"] == "true"}
    body = json.dumps({"id": rr["rr_id"], "job": rr["rr_job"], "payload": None,
                       "options": options}).encode()
    msg: Any = SimpleNamespace(data=body, headers={"rr_headers": rr["rr_headers"]}, subject="s")
    job = nats.decode(None, msg, "p", default, 30.0)  # type: ignore[arg-type]
    del job.headers[nats.X_NATS_SUBJECT]
    return JobFields(job.id, job.name, job.headers, job.priority, job.auto_ack, 0)


READERS: list[Callable[[dict[str, str], int], JobFields]] = [_amqp, _kafka, _sqs, _pubsub,
                                                               _nats]


@pytest.mark.parametrize("read", READERS, ids=lambda r: r.__name__.strip("_"))
def test_every_driver_reads_the_fields_by_the_same_rule(
        read: Callable[[dict[str, str], int], JobFields]) -> None:
    f = read(RR, 9)
    assert (f.id, f.name, f.priority, f.auto_ack, f.headers) == (
        "id-1", "app.Job", 9, True, {"k": ["v1", "v2"]})
    with pytest.raises(BadHeadersError):
        read({**RR, "rr_headers": '{"k": {"nested": true}}'}, 9)
