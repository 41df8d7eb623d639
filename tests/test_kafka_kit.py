"""The kafka driver on the driver kit, without a broker: a failed start closes its
producer, unreadable records become failed jobs, delays round up to milliseconds."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer, TopicPartition

from rrjobs.config import Config
from rrjobs.core.headers import RR_ERROR, UNREADABLE
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.drivers.kafka import KafkaConstructor, KafkaUnavailableError
from rrjobs.drivers.kafka.codec import RR_DUE
from rrjobs.drivers.kafka.config import KafkaOptions, KafkaSection
from rrjobs.drivers.kafka.delays import due_headers
from rrjobs.drivers.kafka.driver import KafkaDriver

TP = TopicPartition("t", 0)


def make_driver() -> KafkaDriver:
    data: dict[str, Any] = {"consumer_options": {"topics": ["t"]}}
    pipeline = Pipeline(name="p", driver="kafka", config=data)
    return KafkaDriver(pipeline, PriorityQueue(), KafkaOptions.model_validate(data),
                       KafkaSection())


async def test_a_failed_start_stops_the_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    events: list[str] = []

    async def start(self: AIOKafkaProducer) -> None:
        events.append("start")
        raise TimeoutError

    async def stop(self: AIOKafkaProducer) -> None:
        events.append("stop")

    monkeypatch.setattr(AIOKafkaProducer, "start", start)
    monkeypatch.setattr(AIOKafkaProducer, "stop", stop)
    config = Config({"kafka": {"brokers": ["127.0.0.1:9"]}, "jobs": {}}, source="test")
    pipeline = Pipeline(name="p", driver="kafka", config={"consumer_options": {"topics": ["t"]}})
    with pytest.raises(KafkaUnavailableError, match=r"ping\.timeout"):
        await KafkaConstructor(config).driver_from_pipeline(pipeline, PriorityQueue())
    assert events == ["start", "stop"]


async def test_closing_a_driver_that_never_opened_is_safe() -> None:
    driver = make_driver()
    await driver.stop()  # nothing was started: no producer, consumer or task to close
    assert driver.stopped and driver.supervisor.names() == []


def record(offset: int, headers: list[tuple[str, bytes]], value: bytes = b"body") -> Any:
    return SimpleNamespace(offset=offset, key=None, value=value, headers=headers)


@pytest.mark.parametrize("headers", [
    [("rr_headers", b"{not json")],
    [("rr_headers", b'["a list"]')],
    [("rr_headers", b'{"a": {"nested": 1}}')],
    [("h", b"x" * 70_000)],
])
async def test_an_unreadable_record_becomes_a_failed_job(headers: list[tuple[str, bytes]]) -> None:
    driver = make_driver()
    driver.lane.open()
    driver.consuming = True
    driver._accept({TP: [record(7, headers)]})
    job = driver.queue.extract_nowait()
    assert job is not None
    assert job.name == UNREADABLE and job.failure and job.headers[RR_ERROR] == [job.failure]
    assert job.payload == b"body" and job.handle == (TP, 7)
    assert driver.lane.out == 1
    await job.nack()  # the runtime's dead-lettering without a dead_letter_topic: dropped
    assert driver.lane.out == 0
    part = driver.tracker.get(TP)
    assert part is not None and part.commit_point == 8
    await driver.stop()


async def test_a_record_is_a_job_settled_through_the_driver() -> None:
    driver = make_driver()
    driver.lane.open()
    driver.consuming = True
    driver._accept({TP: [record(3, [("rr_id", b"i"), ("rr_job", b"j")])]})
    job = driver.queue.extract_nowait()
    assert job is not None
    assert (job.id, job.name, job.queue_name()) == ("i", "j", "t")
    assert b'"offset":3' in job.context() and b'"partition":0' in job.context()
    await job.ack()
    assert driver.lane.out == 0 and driver.tracker.get(TP).commit_point == 4  # type: ignore[union-attr]
    await driver.stop()


async def test_delays_round_up_to_the_millisecond() -> None:
    before = time.time_ns() // 1_000_000
    due = int(dict(due_headers(0.0001, "t", None))[RR_DUE])
    assert before + 1 <= due <= time.time_ns() // 1_000_000 + 2
    assert make_driver().capabilities.delay_granularity == 0.001
