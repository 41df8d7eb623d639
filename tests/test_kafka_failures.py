"""Fatal Kafka client errors: the rule (``fatal_error`` and the kit's ``FailureWindow``) and
the driver's loops asking the runtime to restart the pipeline, with fake consumers (no broker)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from rrjobs.core.options import validate
from rrjobs.core.outage import Outage
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.resilience import FailureWindow
from rrjobs.core.supervise import Supervisor
from rrjobs.drivers.kafka import delays as delays_module
from rrjobs.drivers.kafka import driver as driver_module
from rrjobs.drivers.kafka.client import fatal_error
from rrjobs.drivers.kafka.config import KafkaOptions, KafkaSection
from rrjobs.drivers.kafka.delays import DelayForwarder
from rrjobs.drivers.kafka.driver import KafkaDriver
from tests.conftest import wait_for

TP = TopicPartition("t", 0)
OUTAGE = Outage("the broker", "pipeline 'p'", logging.getLogger("test.kafka"))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# -- the rule -----------------------------------------------------------------------------------


def failed(outage: FailureWindow, exc: BaseException, *, by_kind: bool = True) -> bool:
    return outage.give_up("fetch", fatal_error(exc, by_kind=by_kind)) is not None


def test_a_non_retriable_kafka_error_or_a_foreign_exception_is_fatal_at_once() -> None:
    assert fatal_error(TopicAuthorizationFailedError())
    assert fatal_error(RuntimeError("client broken"))
    assert not fatal_error(KafkaConnectionError())
    assert failed(FailureWindow.until(60.0), TopicAuthorizationFailedError())
    assert failed(FailureWindow.until(60.0), ValueError("x"))


def test_retriable_errors_are_fatal_only_after_error_timeout_without_a_success() -> None:
    clock = Clock()
    outage = FailureWindow.until(5.0, clock)
    assert not failed(outage, KafkaConnectionError())
    clock.now += 4.9
    assert outage.give_up("fetch") is None
    clock.now += 0.1
    assert outage.give_up("fetch") == "fetch failing for 5s"
    assert outage.elapsed() == 0.0  # given up: counting starts again
    assert not failed(outage, KafkaConnectionError())
    outage.ok()  # a success: counting starts again
    assert not failed(outage, KafkaConnectionError())
    clock.now += 4.0
    assert not failed(outage, KafkaConnectionError())
    assert FailureWindow.until(5.0, clock).give_up("fetch", fatal=True) == "fetch failed"


def test_error_timeout_zero_never_restarts_for_retriable_errors() -> None:
    clock = Clock()
    outage = FailureWindow.until(0.0, clock)
    failed(outage, KafkaConnectionError())
    clock.now += 1e6
    assert not failed(outage, KafkaConnectionError())
    assert failed(outage, TopicAuthorizationFailedError())


def test_commits_judge_kafka_errors_by_duration_only() -> None:
    clock = Clock()
    outage = FailureWindow.until(2.0, clock)
    assert not failed(outage, CommitFailedError("rebalanced"), by_kind=False)
    clock.now += 2.0
    assert failed(outage, CommitFailedError("rebalanced"), by_kind=False)
    assert failed(FailureWindow.until(2.0, clock), RuntimeError("broken"), by_kind=False)


# -- the driver's loops ---------------------------------------------------------------------------


class FakeConsumer:
    """``getmany`` raises the next error of ``errors`` (then returns nothing);
    ``commit`` raises ``commit_error`` when set."""

    def __init__(self, errors: list[BaseException] | Callable[[], BaseException | None],
                 commit_error: BaseException | None = None) -> None:
        self.errors = errors
        self.commit_error = commit_error
        self.polls = 0
        self.commits = 0

    def assignment(self) -> set[Any]:
        return {TP}

    def pause(self, *tps: Any) -> None:
        pass

    def resume(self, *tps: Any) -> None:
        pass

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[Any, Any]:
        self.polls += 1
        await asyncio.sleep(0)
        error = self.errors() if callable(self.errors) else (
            self.errors.pop(0) if self.errors else None)
        if error is not None:
            raise error
        await asyncio.sleep(0.001)
        return {}

    async def topics(self) -> set[str]:  # the driver's probe while no records come
        return {"t"}

    async def commit(self, offsets: dict[Any, int]) -> None:
        self.commits += 1
        if self.commit_error is not None:
            raise self.commit_error


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(driver_module, "RETRY_BACKOFF", 0.001)
    monkeypatch.setattr(delays_module, "RETRY_BACKOFF", 0.001)


_made: list[KafkaDriver] = []


@pytest.fixture(autouse=True)
async def close_producers() -> AsyncIterator[None]:
    yield
    while _made:
        await _made.pop().producer.client.stop()  # never started: only marks it closed


def make_driver(consumer: FakeConsumer, restarts: list[tuple[str, str]] | None,
                **extra: Any) -> KafkaDriver:
    data: dict[str, Any] = {"consumer_options": {"topics": ["t"]}, **extra}
    options = validate(KafkaOptions, data, "jobs.pipelines.p.config")
    pipeline = Pipeline(name="p", driver="kafka", config=data)
    driver = KafkaDriver(pipeline, PriorityQueue(), options, KafkaSection())
    _made.append(driver)
    driver._consumer = consumer
    driver.commits.consumer = consumer
    driver.consuming = True
    driver.lane.open()
    if restarts is not None:
        driver.command_handler = lambda name, command: restarts.append((name, command))
    return driver


async def test_a_non_retriable_fetch_error_asks_the_runtime_to_restart_and_ends_the_loop(
) -> None:
    restarts: list[tuple[str, str]] = []
    consumer = FakeConsumer([KafkaConnectionError(), TopicAuthorizationFailedError()])
    driver = make_driver(consumer, restarts)
    async with asyncio.timeout(5):
        await driver._fetch()  # returns: the fetch loop is over
    assert restarts == [("p", "restart")]
    assert consumer.polls == 2


async def test_an_unexpected_exception_from_the_client_is_fatal_too() -> None:
    restarts: list[tuple[str, str]] = []
    driver = make_driver(FakeConsumer([AssertionError("aiokafka state")]), restarts)
    async with asyncio.timeout(5):
        await driver._fetch()
    assert restarts == [("p", "restart")]


async def test_retriable_fetch_errors_restart_only_after_error_timeout() -> None:
    restarts: list[tuple[str, str]] = []
    consumer = FakeConsumer(lambda: KafkaConnectionError())
    driver = make_driver(consumer, restarts, error_timeout="300ms")
    loop = asyncio.get_running_loop()
    start = loop.time()
    async with asyncio.timeout(5):
        await driver._fetch()
    assert loop.time() - start >= 0.3
    assert restarts == [("p", "restart")]
    assert consumer.polls > 2


async def test_a_success_between_retriable_errors_resets_the_count() -> None:
    restarts: list[tuple[str, str]] = []
    state = {"n": 0}

    def every_other() -> BaseException | None:
        state["n"] += 1
        return KafkaConnectionError() if state["n"] % 2 else None

    consumer = FakeConsumer(every_other)
    driver = make_driver(consumer, restarts, error_timeout="50ms")
    task = asyncio.create_task(driver._fetch())
    try:
        await wait_for(lambda: consumer.polls >= 200, within=10, what="polls")
        assert not task.done() and restarts == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_errors_while_paused_count_like_fetch_errors() -> None:
    restarts: list[tuple[str, str]] = []
    driver = make_driver(FakeConsumer([TopicAuthorizationFailedError()]), restarts)
    driver.lane.close()
    async with asyncio.timeout(5):
        await driver._fetch()
    assert restarts == [("p", "restart")]


async def test_without_a_runtime_a_fatal_error_is_logged_and_fetching_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    consumer = FakeConsumer([TopicAuthorizationFailedError()] * 3)
    driver = make_driver(consumer, None)
    task = asyncio.create_task(driver._fetch())
    try:
        await wait_for(lambda: consumer.polls >= 10, within=5, what="polls after the errors")
        assert not task.done()
        assert "no runtime to restart it" in caplog.text
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_stopped_driver_asks_for_nothing() -> None:
    restarts: list[tuple[str, str]] = []
    driver = make_driver(FakeConsumer([TopicAuthorizationFailedError()]), restarts)
    driver.stopped = True
    async with asyncio.timeout(5):
        await driver._fetch()
    assert restarts == []


async def test_commits_failing_past_error_timeout_ask_for_a_restart() -> None:
    restarts: list[tuple[str, str]] = []
    consumer = FakeConsumer([], commit_error=CommitFailedError("group rebalanced"))
    driver = make_driver(consumer, restarts, error_timeout="200ms",
                         group_options={"group_id": "g", "commit_interval": "10ms"})
    driver.tracker.assign(TP)
    driver.tracker.track_many(TP, (0,))
    driver.tracker.settle(TP, 0)
    driver.commits.event.set()
    async with asyncio.timeout(5):
        await driver.commits.loop()  # retried, then gave up
    assert consumer.commits > 2  # a non-retriable commit error alone is not fatal
    assert restarts == [("p", "restart")]


async def test_a_commit_that_succeeds_again_asks_for_nothing() -> None:
    restarts: list[tuple[str, str]] = []
    consumer = FakeConsumer([], commit_error=CommitFailedError("group rebalanced"))
    driver = make_driver(consumer, restarts, error_timeout="10s",
                         group_options={"group_id": "g", "commit_interval": "10ms"})
    driver.tracker.assign(TP)
    driver.tracker.track_many(TP, (0,))
    driver.tracker.settle(TP, 0)
    driver.commits.event.set()
    task = asyncio.create_task(driver.commits.loop())
    try:
        await wait_for(lambda: consumer.commits >= 2, within=5, what="a retried commit")
        consumer.commit_error = None
        part = driver.tracker.get(TP)
        await wait_for(lambda: part is not None and part.committed == 1, within=5,
                       what="the commit")
        assert restarts == [] and not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


# -- the delay forwarder ------------------------------------------------------------------------


def make_forwarder(consumer: FakeConsumer, reports: list[str], restart: bool,
                   error_timeout: float = 60.0) -> DelayForwarder:
    def on_fatal(what: str, exc: BaseException) -> bool:
        reports.append(f"{what}: {type(exc).__name__}")
        return restart

    forwarder = DelayForwarder(topic="t.rrjobs-delayed", group_id="g", conn={},
                               producer=None,  # type: ignore[arg-type]  # not used here
                               group_timings={}, commit_interval=0.01, buffer=3,
                               supervisor=Supervisor("t"), outage=OUTAGE,
                               error_timeout=error_timeout, on_fatal=on_fatal)
    forwarder._consumer = forwarder.commits.consumer = consumer
    return forwarder


async def test_a_fatal_error_of_the_forwarders_fetch_is_reported_and_ends_its_loop() -> None:
    reports: list[str] = []
    forwarder = make_forwarder(FakeConsumer([TopicAuthorizationFailedError()]), reports,
                               restart=True)
    async with asyncio.timeout(5):
        await forwarder._read()
    assert reports == ["delay topic 't.rrjobs-delayed': fetch failed: "
                       "TopicAuthorizationFailedError"]


async def test_forwarder_commits_failing_past_error_timeout_are_reported() -> None:
    reports: list[str] = []
    consumer = FakeConsumer([], commit_error=KafkaConnectionError())
    forwarder = make_forwarder(consumer, reports, restart=True, error_timeout=0.1)
    forwarder.tracker.assign(TP)
    forwarder.tracker.track_many(TP, (0,))
    forwarder.commits.settle(TP, 0)
    async with asyncio.timeout(5):
        await forwarder.commits.loop()
    assert consumer.commits > 1
    assert len(reports) == 1 and reports[0].endswith("KafkaConnectionError")


async def test_without_a_restart_the_forwarder_keeps_fetching() -> None:
    reports: list[str] = []
    consumer = FakeConsumer([TopicAuthorizationFailedError()] * 2)
    forwarder = make_forwarder(consumer, reports, restart=False)
    task = asyncio.create_task(forwarder._read())
    try:
        await wait_for(lambda: consumer.polls >= 5, within=5, what="polls after the errors")
        assert len(reports) == 2 and not task.done()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_the_forwarder_refuses_an_empty_buffer() -> None:
    with pytest.raises(ValueError, match="buffer must be > 0"):
        DelayForwarder(topic="t", group_id="g", conn={}, producer=None,  # type: ignore[arg-type]
                       group_timings={}, commit_interval=0.1, buffer=0,
                       supervisor=Supervisor("t"), outage=OUTAGE, on_fatal=lambda w, e: True)
