"""Core value types: Pipeline getters, Message, Capabilities, Job settlement, DelayQueue."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from rrjobs.core.capabilities import Capabilities
from rrjobs.core.errors import (
    JobAlreadySettledError,
    PayloadTooLargeError,
    UnsupportedFeatureError,
)
from rrjobs.core.headers import (
    DEAD_LETTER_KEYS,
    RR_ATTEMPTS,
    RR_ERROR_LIMIT,
    Headers,
    attempts_of,
    dead_letter_headers,
    error_text,
    headers_from_json,
    merge_headers,
)
from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.timers import DelayQueue


def test_pipeline_getters_look_at_top_level_then_config() -> None:
    p = Pipeline(name="p", driver="amqp", priority=3,
                 config={"prefetch": "20", "durable": True, "queue": "q", "headers": '{"a": 1}'})
    assert p.name() == "p" and p.driver() == "amqp" and p.priority() == 3
    assert p.get_int("prefetch") == 20
    assert p.get_bool("durable") is True
    assert p.get_str("queue") == "q" and p.get_str("missing", "d") == "d"
    assert p.get_map("headers") == {"a": 1}
    assert p.has("queue") and not p.has("nope")
    assert p.driver_options()["prefetch"] == "20"


def test_pipeline_getters_for_declare_string_maps() -> None:
    p = Pipeline({"name": "d", "driver": "sqs", "priority": "7", "durable": "false",
                  "exclusive": "true", "delay": "1.5", "attributes": "{}"})
    assert p.priority() == 7
    assert p.get_bool("durable") is False and p.get_bool("exclusive") is True
    assert p.get_float("delay") == 1.5
    assert p.get_map("attributes") == {}
    assert "name" not in p.driver_options() and p.driver_options()["durable"] == "false"
    assert Pipeline(queue="legacy").name() == "legacy"  # the PHP client's old key
    assert Pipeline().priority() == 10


@pytest.mark.parametrize(
    ("value", "getter"),
    [("abc", "get_int"), ("maybe", "get_bool"), ("[1]", "get_map"), ("x", "get_float")],
)
def test_pipeline_getters_reject_unreadable_values(value: str, getter: str) -> None:
    with pytest.raises(ValueError, match="k:"):
        getattr(Pipeline(k=value), getter)("k")


def test_message_defaults_and_validation() -> None:
    m = Message("n")
    assert len(m.id) == 36 and m.priority == 0 and m.delay == 0 and m.headers == {}
    assert Message("n").id != m.id
    with pytest.raises(TypeError):
        Message("n", payload="text")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Message("n", delay=-1)


def test_capabilities_raise_clear_errors() -> None:
    caps = Capabilities(delay=True, max_delay=900, max_payload=10)
    caps.check_delay(900, "sqs")
    with pytest.raises(UnsupportedFeatureError, match="up to 900s"):
        caps.check_delay(901, "sqs")
    with pytest.raises(UnsupportedFeatureError, match="does not support delayed"):
        Capabilities(delay=False).check_delay(1, "x")
    Capabilities(delay=False).check_delay(0, "x")
    with pytest.raises(PayloadTooLargeError, match="11 bytes"):
        caps.check_payload(11, "sqs")
    assert caps.as_dict()["max_delay"] == 900


def test_headers_helpers() -> None:
    base: Headers = {"a": ["1"], "b": ["2", "3"]}
    merged = merge_headers(base, {"b": ["x"], "c": ["y"]})
    assert merged == {"a": ["1"], "b": ["x"], "c": ["y"]} and base["b"] == ["2", "3"]
    assert attempts_of({RR_ATTEMPTS: ["4"]}) == 4
    assert attempts_of({RR_ATTEMPTS: ["junk"]}) == 0 and attempts_of({}) == 0


class RecordingSettler:
    """A :class:`~rrjobs.core.job.Settler` that records what it is asked to do (the
    driver of the jobs of the core tests)."""

    name = "rec"
    ack_now = None

    def __init__(self, caps: Capabilities | None = None) -> None:
        self.capabilities = caps or Capabilities()
        self.calls: list[tuple[object, ...]] = []

    async def ack(self, job: Job) -> None:
        self.calls.append(("ack",))

    async def nack(self, job: Job, requeue: bool, delay: float) -> None:
        self.calls.append(("nack", requeue, delay))

    async def requeue(self, job: Job, headers: Headers, delay: float) -> None:
        self.calls.append(("requeue", headers, delay))

    async def extend(self, job: Job, seconds: float) -> None:
        self.calls.append(("extend", seconds))

    def queue_name(self, job: Job) -> str:
        return ""


def recording_job(caps: Capabilities | None = None, settler: RecordingSettler | None = None,
                  **kw: Any) -> Job:
    """A job of ``settler`` (a new :class:`RecordingSettler` with ``caps`` by default)."""
    fields: dict[str, Any] = dict(id="1", name="n", payload=b"p", headers={"h": ["v"]},
                                  pipeline="p", priority=1)
    fields.update(kw)
    return Job(settler or RecordingSettler(caps), **fields)


def calls(job: Job) -> list[tuple[object, ...]]:
    settler = job.settler
    assert isinstance(settler, RecordingSettler)
    return settler.calls


async def test_job_is_settled_exactly_once() -> None:
    job = recording_job()
    await job.nack(requeue=True, delay=2)
    assert calls(job) == [("nack", True, 2)] and job.settled == "nack"
    with pytest.raises(JobAlreadySettledError):
        await job.ack()
    with pytest.raises(JobAlreadySettledError):
        await job.requeue()


async def test_requeue_merges_headers_and_checks_the_delay() -> None:
    job = recording_job(caps=Capabilities(max_delay=5))
    with pytest.raises(UnsupportedFeatureError):
        await job.requeue({"x": ["1"]}, delay=6)
    assert job.settled is None  # a refused operation does not settle the job
    await job.requeue({"x": ["1"]}, delay=5)
    assert calls(job) == [("requeue", {"h": ["v"], "x": ["1"]}, 5)]


class SyncAckSettler(RecordingSettler):
    """A settler whose ack is synchronous (``ack_now``), as the memory driver's."""

    def ack_now(self, job: Job) -> None:  # type: ignore[override]
        self.calls.append(("ack_now",))


async def test_ack_nowait_acks_without_a_coroutine_only_when_it_can() -> None:
    job = recording_job(settler=SyncAckSettler())
    assert job.ack_nowait() and job.settled == "ack" and calls(job) == [("ack_now",)]
    assert not job.ack_nowait()  # settled: nothing more
    with pytest.raises(JobAlreadySettledError):
        await job.ack()
    assert calls(job) == [("ack_now",)]
    plain = recording_job()  # no ack_now: the caller awaits ack()
    assert not plain.ack_nowait() and plain.settled is None and calls(plain) == []
    extending = recording_job(settler=SyncAckSettler())
    extending._extending = asyncio.get_running_loop().create_future()
    assert not extending.ack_nowait() and extending.settled is None  # waits for the extension


async def test_nack_rejects_a_delay_without_requeue_and_auto_ack_is_a_noop() -> None:
    job = recording_job()
    with pytest.raises(ValueError):
        await job.nack(requeue=False, delay=1)
    auto = recording_job(auto_ack=True)
    await auto.ack()
    await auto.ack()
    await auto.nack(requeue=True)
    assert calls(auto) == [("ack",)]


async def test_a_nack_without_requeue_gives_the_dead_letter_its_headers() -> None:
    job = recording_job(headers={"h": ["v"], RR_ATTEMPTS: ["2"]})
    with pytest.raises(ValueError):
        await job.nack(requeue=True, headers={"x": ["1"]})
    assert job.settled is None and job.headers == {"h": ["v"], RR_ATTEMPTS: ["2"]}
    await job.nack(headers={"rr_error": ["ValueError: no"]})
    assert calls(job) == [("nack", False, 0.0)]
    stamp = job.headers.pop("rr_failed_at")[0]
    assert stamp.endswith("Z") and datetime.fromisoformat(stamp).utcoffset() == timedelta(0)
    assert job.headers == {"h": ["v"], RR_ATTEMPTS: ["3"], "rr_error": ["ValueError: no"],
                           "rr_original_pipeline": ["p"]}


def test_context_is_roadrunners_json() -> None:
    ctx = json.loads(recording_job().context())
    assert ctx == {"id": "1", "job": "n", "driver": "rec", "queue": "", "headers": {"h": ["v"]},
                   "pipeline": "p"}


async def test_lease_extension_is_refused_unless_the_driver_supports_it() -> None:
    with pytest.raises(UnsupportedFeatureError, match="lease"):
        await recording_job().extend_lease(10)
    job = recording_job(caps=Capabilities(lease_extension=True))
    await job.extend_lease(10)
    await job.ack()
    await job.extend_lease(10)  # settled: a no-op
    assert calls(job) == [("extend", 10), ("ack",)]


def test_every_job_settles_through_its_settler() -> None:
    """No job without a driver to settle it, and no per-job settlement overrides."""
    with pytest.raises(TypeError):
        Job(id="1", name="n", payload=b"", headers={}, pipeline="p",  # type: ignore[call-arg]
            priority=1)
    for shim in ("_ack", "_nack", "_requeue", "_set_fields"):
        assert not hasattr(Job, shim)
    settler = RecordingSettler()
    job = Job.make(settler, "handle", "1", "n", b"", {}, "p", 1, False)
    assert (job.settler, job.handle, job.driver_name, job.capabilities) == (
        settler, "handle", "rec", settler.capabilities)


async def test_delay_queue_fires_in_due_order_with_one_timer() -> None:
    fired: list[tuple[str, float]] = []
    t0 = time.monotonic()
    dq: DelayQueue[str] = DelayQueue(lambda item: fired.append((item, time.monotonic() - t0)))
    dq.add(0.15, "late")
    dq.add(0.05, "early")
    dq.add(0.05, "early-2")
    dq.add(0.0, "now")
    assert len(dq) == 4 and dq.next_due_in() is not None
    for _ in range(100):
        if len(fired) == 4:
            break
        await asyncio.sleep(0.01)
    assert [f[0] for f in fired] == ["now", "early", "early-2", "late"]
    assert fired[1][1] >= 0.05 and fired[3][1] >= 0.15
    assert len(dq) == 0 and dq.next_due_in() is None


async def test_delay_queue_drain_cancels_pending() -> None:
    fired: list[int] = []
    dq: DelayQueue[int] = DelayQueue(fired.append)
    for i in range(1000):
        dq.add(0.05 + i / 1e6, i)
    assert dq.drain()[:3] == [0, 1, 2]
    await asyncio.sleep(0.1)
    assert fired == [] and len(dq) == 0


def test_headers_from_json_reads_every_driver_s_rr_headers_leniently() -> None:
    assert headers_from_json('{"a":["1","2"]}') == {"a": ["1", "2"]}
    assert headers_from_json(b'{"a":["1"]}') == {"a": ["1"]}
    for empty in (None, "", "{}", b"{}", "null"):
        assert headers_from_json(empty) == {}
    # other producers: a bare string, numbers, booleans, nulls
    assert headers_from_json('{"s":"x","n":1,"b":true,"l":[1,"y"],"z":null}') == {
        "s": ["x"], "n": ["1"], "b": ["true"], "l": ["1", "y"]}
    # unreadable: the caller decides
    assert headers_from_json("{bad") is None
    assert headers_from_json("[1, 2]") is None


def test_dead_letter_headers_hold_the_attempts_error_time_and_pipeline() -> None:
    when = datetime(2026, 12, 3, 7, 54, 41, 123456, tzinfo=UTC)
    letter = dead_letter_headers("orders", 3, KeyError("no such order"), when)
    assert tuple(letter) == DEAD_LETTER_KEYS
    assert letter == {"rr_attempts": ["3"], "rr_error": ["KeyError: 'no such order'"],
                      "rr_failed_at": ["2026-12-03T07:54:41.123Z"],
                      "rr_original_pipeline": ["orders"]}
    assert "rr_error" not in dead_letter_headers("orders", 1)
    long = error_text(ValueError("ü" * RR_ERROR_LIMIT + "\n  tail"))
    assert long.startswith("ValueError: üü") and long.endswith("…") and "\n" not in long
    assert RR_ERROR_LIMIT - 1 <= len(long.encode()) <= RR_ERROR_LIMIT
    assert error_text("a\nb") == "a b"
