"""The driver kit in ``rrjobs.core``: supervision, backoff, batching, delays,
lanes, settlement against lease extension, guarded decoding, lifecycle."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from rrjobs.core.base import BaseDriver
from rrjobs.core.batcher import Batcher, chunks
from rrjobs.core.capabilities import Capabilities
from rrjobs.core.delays import delay_units, round_up, whole_millis, whole_seconds
from rrjobs.core.errors import PipelineStateError, PoisonMessageError
from rrjobs.core.feed import Feed
from rrjobs.core.headers import (
    RR_ERROR,
    UNREADABLE,
    BadHeadersError,
    Headers,
    normalize_headers,
)
from rrjobs.core.job import Job
from rrjobs.core.lane import Lane
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.pull import PullDriver
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.resilience import Backoff, FailureWindow
from rrjobs.core.state import State
from rrjobs.core.supervise import Supervisor
from rrjobs.testing.suite.concurrent_lifecycle import end_state, start_state

from .conftest import wait_for

# -- delays ------------------------------------------------------------------------------


def test_delays_round_up_and_never_early() -> None:
    assert whole_seconds(1.0000001) == 2
    assert whole_seconds(1.0) == 1
    assert whole_seconds(0) == 0
    assert whole_millis(0.3) == 300
    assert whole_millis(1.0000001) == 1001
    assert delay_units(2.5, 1.0) == 3
    assert round_up(1.2, 0.5) == 1.5
    for ms in range(1, 5000, 7):
        d = ms / 1000
        assert whole_millis(d) == ms
        assert whole_seconds(d) >= d


# -- backoff and failure windows ---------------------------------------------------------


def test_backoff_doubles_up_to_the_cap_and_resets() -> None:
    b = Backoff(0.1, 1.0, jitter=0)
    assert [round(b.next(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.next() == 0.1
    j = Backoff(1.0, 1.0, jitter=0.5)
    assert all(0.5 <= j.next() <= 1.0 for _ in range(100))
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_failure_window_expires_after_its_limit() -> None:
    now = [0.0]
    w = FailureWindow(10.0, clock=lambda: now[0])
    assert not w.failing and not w.expired
    assert w.failed() == 0.0
    now[0] = 5.0
    assert w.failed() == 5.0 and not w.expired
    now[0] = 10.5
    assert w.expired
    w.ok()
    assert not w.failing and not w.expired and w.elapsed() == 0.0


# -- supervisor --------------------------------------------------------------------------


async def test_a_crashing_task_is_logged_once_marked_down_and_restarted(
        caplog: pytest.LogCaptureFixture) -> None:
    runs = []
    health: list[bool] = []
    sup = Supervisor("pipeline 'p'", logging.getLogger("test.sup"), first_backoff=0.2,
                     on_change=health.append)
    release = asyncio.Event()

    async def body() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("boom")
        await release.wait()

    with caplog.at_level(logging.ERROR, "test.sup"):
        sup.start("fetch", body)
        await wait_for(lambda: not sup.healthy, within=2)
        assert sup.down() == {"fetch": "RuntimeError: boom"}
        await wait_for(lambda: sup.healthy and len(runs) == 2, within=2)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert "boom" in errors[0].getMessage()
    assert sup.restarts("fetch") == 1
    assert health == [False, True]
    assert sup.names() == ["fetch"]
    release.set()
    await wait_for(lambda: not sup.running("fetch"), within=2)
    assert sup.names() == [] and sup.healthy  # a task that returns is not restarted
    await sup.stop()


async def test_inject_fault_goes_through_the_crash_path(
        caplog: pytest.LogCaptureFixture) -> None:
    sup = Supervisor("p", logging.getLogger("test.sup2"), first_backoff=0.3)
    started = []

    async def body() -> None:
        started.append(1)
        await asyncio.Event().wait()

    sup.start("fetch", body)
    await wait_for(lambda: len(started) == 1)
    with caplog.at_level(logging.ERROR, "test.sup2"):
        sup.inject_fault("fetch", RuntimeError("injected"))
        await wait_for(lambda: not sup.healthy, within=1)
        await wait_for(lambda: len(started) == 2 and sup.healthy, within=2)
    assert sup.restarts("fetch") == 1
    assert sum("injected" in r.getMessage() for r in caplog.records) == 1
    with pytest.raises(KeyError):
        sup.inject_fault("nope", RuntimeError())
    await sup.stop()
    assert not sup.running("fetch")


async def test_a_fault_injected_before_the_first_run_fails_that_run(
        caplog: pytest.LogCaptureFixture) -> None:
    health: list[bool] = []
    sup = Supervisor("p", logging.getLogger("test.sup4"), first_backoff=0.2,
                     on_change=health.append)
    started = []

    async def body() -> None:
        started.append(1)
        await asyncio.Event().wait()

    with caplog.at_level(logging.ERROR, "test.sup4"):
        sup.start("fetch", body)
        sup.inject_fault("fetch", RuntimeError("early"))  # the task has not run yet
        sup.inject_fault("fetch", RuntimeError("second"))  # one crash per run
        await wait_for(lambda: not sup.healthy, within=1)
        assert started == []  # the run failed as it began, not after
        assert sup.down() == {"fetch": "RuntimeError: early"}
        assert sup.names() == ["fetch"]  # waiting for its restart
        await wait_for(lambda: len(started) == 1 and sup.healthy, within=2)
    assert sup.restarts("fetch") == 1
    assert health == [False, True]
    errors = [r for r in caplog.records if r.name == "test.sup4" and r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None
    assert str(errors[0].exc_info[1]) == "early"
    await sup.stop()
    assert not sup.running("fetch")


async def test_a_fault_injected_while_waiting_to_restart_fails_the_next_run() -> None:
    sup = Supervisor("p", logging.getLogger("test.sup5"), first_backoff=0.1)
    started = []

    async def body() -> None:
        started.append(1)
        if len(started) == 1:
            raise ValueError("first")
        await asyncio.Event().wait()

    sup.start("fetch", body)
    await wait_for(lambda: not sup.healthy, within=1)
    sup.inject_fault("fetch", RuntimeError("during the backoff"))
    await wait_for(lambda: sup.restarts("fetch") == 1, within=2)
    await wait_for(lambda: sup.down() == {"fetch": "RuntimeError: during the backoff"},
                   within=1)
    assert started == [1]
    await wait_for(lambda: len(started) == 2 and sup.healthy, within=3)
    assert sup.restarts("fetch") == 2
    await sup.stop()


async def test_a_body_that_swallows_the_cancellation_still_fails_with_the_fault() -> None:
    sup = Supervisor("p", logging.getLogger("test.sup6"), first_backoff=0.1)
    started = []

    async def body() -> None:
        started.append(1)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            return  # a loop that treats cancellation as "done"

    sup.start("fetch", body)
    await wait_for(lambda: len(started) == 1)
    sup.inject_fault("fetch", RuntimeError("injected"))
    await wait_for(lambda: not sup.healthy, within=1)
    await wait_for(lambda: len(started) == 2 and sup.healthy, within=2)
    assert sup.restarts("fetch") == 1
    await sup.stop()
    assert not sup.running("fetch")


async def test_stop_cancels_supervised_and_spawned_tasks(
        caplog: pytest.LogCaptureFixture) -> None:
    sup = Supervisor("p", logging.getLogger("test.sup3"))
    cancelled = []

    async def forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append(1)
            raise

    async def failing() -> None:
        raise ValueError("once")

    sup.start("a", forever)
    sup.spawn("b", forever())
    with caplog.at_level(logging.ERROR, "test.sup3"):
        sup.spawn("c", failing())
        await asyncio.sleep(0.05)
    assert any("once" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)
    await sup.stop()
    assert cancelled == [1, 1]
    with pytest.raises(RuntimeError):
        sup.start("a", forever)
        sup.start("a", forever)
    await sup.stop()


# -- batcher -----------------------------------------------------------------------------


async def test_batcher_coalesces_one_turn_and_answers_each_caller() -> None:
    sent: list[list[int]] = []

    async def send(items: Sequence[int]) -> Sequence[int | BaseException]:
        sent.append(list(items))
        await asyncio.sleep(0.01)
        return [ValueError(i) if i == 3 else i * 10 for i in items]

    b: Batcher[int, int] = Batcher(send, size=4, concurrency=1)
    futs = [b.submit(i) for i in range(6)]
    results = await asyncio.gather(*futs, return_exceptions=True)
    assert sent == [[0, 1, 2, 3], [4, 5]]
    assert results[:3] == [0, 10, 20] and isinstance(results[3], ValueError)
    assert results[4:] == [40, 50]


async def test_batcher_post_reports_errors_and_drain_waits() -> None:
    errors: list[BaseException] = []

    async def send(items: Sequence[str]) -> Sequence[BaseException | None]:
        raise ConnectionError("down")

    b: Batcher[str, None] = Batcher(send, on_error=errors.append)
    b.post("x")
    b.post("y")
    await b.drain()
    assert len(errors) == 2 and all(isinstance(e, ConnectionError) for e in errors)
    assert len(b) == 0


async def test_batcher_hold_keeps_items_for_a_carry_that_gives_their_outcomes() -> None:
    sent: list[list[int]] = []
    errors: list[BaseException] = []

    async def send(items: Sequence[int]) -> Sequence[BaseException | None]:
        sent.append(list(items))
        return [None] * len(items)

    b: Batcher[int, None] = Batcher(send, size=10, on_error=errors.append)
    b.hold = 60.0
    b.post(1)
    b.post(2)
    fut = b.submit(3)
    for _ in range(5):
        await asyncio.sleep(0)
    assert sent == [] and len(b) == 3  # held, not sent at the next loop turn
    carried: list[list[int]] = []

    async def along(items: list[int]) -> tuple[str, list[BaseException | None]]:
        carried.append(items)
        return "rows", [ValueError(items[0]), None]

    assert await b.carry(2, along) == "rows"
    assert carried == [[1, 2]] and len(b) == 1
    assert [str(e) for e in errors] == ["1"]  # a posted item's failure goes to on_error
    b.hold = 0.0  # what is still held goes at the next turn
    assert await asyncio.wait_for(fut, 1) is None
    assert sent == [[3]]


async def test_batcher_sends_a_held_item_after_hold_and_a_full_batch_at_the_next_turn(
        ) -> None:
    sent: list[list[str]] = []

    async def send(items: Sequence[str]) -> Sequence[None]:
        sent.append(list(items))
        return [None] * len(items)

    b: Batcher[str, None] = Batcher(send, size=2)
    b.hold = 60.0
    b.post("a")
    b.post("b")  # a full batch: sent at the next loop turn, unless carried before

    async def along(items: list[str]) -> tuple[list[str], list[None]]:
        return items, [None] * len(items)

    assert await b.carry(1, along) == ["a"]
    await wait_for(lambda: sent == [["b"]])
    b.hold = 0.01
    b.post("c")
    await wait_for(lambda: sent == [["b"], ["c"]])


async def test_batcher_carry_failing_fails_its_items_and_drain_waits_for_a_carry() -> None:
    async def send(items: Sequence[int]) -> Sequence[int]:
        return list(items)

    b: Batcher[int, int] = Batcher(send)
    b.hold = 60.0
    futs = [b.submit(i) for i in range(2)]

    async def broken(items: list[int]) -> tuple[None, list[int]]:
        raise ConnectionError("down")

    with pytest.raises(ConnectionError):
        await b.carry(5, broken)
    assert all(isinstance(f.exception(), ConnectionError) for f in futs)
    gate = asyncio.Event()
    fut = b.submit(7)

    async def slow(items: list[int]) -> tuple[int, list[int]]:
        await gate.wait()
        return len(items), [i * 2 for i in items]

    carry = asyncio.create_task(b.carry(5, slow))
    await asyncio.sleep(0)
    drain = asyncio.create_task(b.drain())
    await asyncio.sleep(0.01)
    assert not drain.done()  # the carried item is not answered yet
    gate.set()
    await asyncio.wait_for(drain, 1)
    assert await carry == 1 and fut.result() == 14


def test_chunks_cut_by_count_bytes_and_key() -> None:
    sizes = [3, 3, 3, 9, 1, 1, 1, 1, 1]
    assert chunks(sizes, 4, 6, size=int) == [[3, 3], [3], [9], [1, 1, 1, 1], [1]]
    items = [("a", 1), ("a", 1), ("b", 1), ("a", 1)]
    by_topic = chunks(items, 10, 100, size=lambda i: i[1], key=lambda i: i[0])
    assert by_topic == [[("a", 1), ("a", 1)], [("b", 1)], [("a", 1)]]
    assert chunks([], 10, 100, size=int) == []


# -- headers -----------------------------------------------------------------------------


def test_normalize_headers_one_rule_for_every_driver() -> None:
    assert normalize_headers({"a": "1", "b": ["x", "y"], "c": 2, "d": None, "e": b"z"}) == {
        "a": ["1"], "b": ["x", "y"], "c": ["2"], "e": ["z"]}
    assert normalize_headers(None) == {}
    for bad in ({"a": {"nested": 1}}, {"a": [["x"]]}, "text", {"k": "v" * 70_000},
                {str(i): "" for i in range(300)}):
        with pytest.raises(BadHeadersError):
            normalize_headers(bad)


# -- lane --------------------------------------------------------------------------------


class _Settler:
    name = "fake"
    ack_now = None

    def __init__(self, caps: Capabilities | None = None) -> None:
        self.capabilities = caps or Capabilities(lease_extension=True)
        self.calls: list[str] = []
        self.extend_gate = asyncio.Event()
        self.in_extend = False
        self.overlap = False

    async def ack(self, job: Job) -> None:
        self.overlap |= self.in_extend
        self.calls.append("ack")

    async def nack(self, job: Job, requeue: bool, delay: float) -> None:
        self.overlap |= self.in_extend
        self.calls.append(f"nack:{requeue}")

    async def requeue(self, job: Job, headers: Headers, delay: float) -> None:
        self.overlap |= self.in_extend
        self.calls.append("requeue")

    async def extend(self, job: Job, seconds: float) -> None:
        self.in_extend = True
        self.calls.append("extend")
        await self.extend_gate.wait()
        self.in_extend = False

    def queue_name(self, job: Job) -> str:
        return "q"


def _job(settler: Any, n: int = 0, pipeline: str = "p") -> Job:
    return Job(settler, id=str(n), name="n", payload=b"", headers={}, pipeline=pipeline,
               priority=1)


async def test_lane_window_and_gate() -> None:
    queue = PriorityQueue()
    lane = Lane(queue, "p", 2)
    s = _Settler()
    assert lane.room() == 0  # closed until opened
    lane.open()
    assert await lane.wait_room() == 2
    await lane.deliver(_job(s, 1))
    await lane.deliver(_job(s, 2))
    assert (lane.out, lane.queued, lane.room()) == (2, 2, 0)
    waiter = asyncio.create_task(lane.wait_room())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    queue.extract_nowait()
    assert lane.reserved == 1
    lane.release()
    assert await asyncio.wait_for(waiter, 1) == 1
    taken = lane.close()
    assert [j.id for j in taken] == ["2"] and lane.out == 0 and lane.room() == 0
    waiter = asyncio.create_task(lane.wait_room())
    await asyncio.sleep(0.01)
    assert not waiter.done()  # closed: no room whatever the window
    lane.open()
    assert await asyncio.wait_for(waiter, 1) == 2


async def test_lane_wakes_a_waiter_only_once_it_has_the_room_it_wants() -> None:
    queue = PriorityQueue()
    lane = Lane(queue, "p", 4)
    s = _Settler()
    lane.open()
    for i in range(4):
        await lane.deliver(_job(s, i))
    waiter = asyncio.create_task(lane.wait_room(3))
    small = asyncio.create_task(lane.wait_room(1))
    await asyncio.sleep(0)
    lane.release()
    assert await asyncio.wait_for(small, 1) == 1  # it has the one slot it wants
    await asyncio.sleep(0.01)
    lane.release()
    assert not lane._room.is_set()  # 2 free of the 3 wanted: nobody is woken
    await asyncio.sleep(0.01)
    assert not waiter.done()
    lane.release()
    assert await asyncio.wait_for(waiter, 1) == 3


# -- settlement against lease extension ---------------------------------------------------


@pytest.mark.parametrize("settle", ["ack", "nack", "nack_requeue", "requeue"])
async def test_a_settlement_waits_for_an_extension_in_flight(settle: str) -> None:
    s = _Settler()
    job = _job(s)
    ext = asyncio.create_task(job.extend_lease(5))
    await asyncio.sleep(0)
    assert s.in_extend
    calls = {"ack": job.ack, "nack": job.nack, "requeue": job.requeue,
             "nack_requeue": lambda: job.nack(requeue=True)}
    settling = asyncio.create_task(calls[settle]())
    await asyncio.sleep(0.01)
    assert not settling.done()  # waits for the extension
    s.extend_gate.set()
    await asyncio.gather(ext, settling)
    assert not s.overlap
    assert s.calls[0] == "extend" and len(s.calls) == 2
    await job.extend_lease(5)  # after settling: a no-op
    assert len(s.calls) == 2


async def test_extend_lease_needs_the_capability() -> None:
    from rrjobs.core.errors import UnsupportedFeatureError
    job = _job(_Settler(Capabilities(lease_extension=False)))
    with pytest.raises(UnsupportedFeatureError):
        await job.extend_lease(1)
    await job.ack()
    assert job.context().startswith(b'{"id":"0"')


# -- a pull driver on the kit --------------------------------------------------------------


class _PullDriver(PullDriver):
    """A pull driver over a list of raw messages, to exercise the template."""

    name = "fakepull"
    capabilities = Capabilities(lease_extension=True)

    def __init__(self, queue: PriorityQueue, prefetch: int = 4) -> None:
        super().__init__(Pipeline(name="p", driver="fakepull"), queue, prefetch)
        self.raw: list[Any] = []
        self.fail_fetches = 0
        self.settled_calls: list[tuple[str, str]] = []
        self.given_back: list[str] = []

    async def fetch(self, max_messages: int) -> Sequence[Any]:
        if self.fail_fetches:
            self.fail_fetches -= 1
            raise ConnectionError("broker away")
        out, self.raw = self.raw[:max_messages], self.raw[max_messages:]
        if not out:
            await asyncio.sleep(0.01)
        return out

    def decode(self, raw: Any) -> Job | None:
        import json
        data = json.loads(raw)
        return Job(self, id=str(data["id"]), name="n", payload=raw, headers={},
                   pipeline=self.pipeline_name, priority=self.priority, handle=data["id"])

    def poison(self, raw: Any, reason: str) -> Job:
        return self.poison_job(None, raw, reason)

    async def give_back(self, jobs: Sequence[Job]) -> None:
        self.given_back.extend(j.id for j in jobs)
        self.lane.release(len(jobs))

    async def ack(self, job: Job) -> None:
        self.settled_calls.append(("ack", job.id))
        self.settled(job)

    async def nack(self, job: Job, requeue: bool, delay: float) -> None:
        self.settled_calls.append(("nack", job.id))
        self.settled(job)

    async def requeue(self, job: Job, headers: Headers, delay: float) -> None:
        self.settled(job)

    async def extend(self, job: Job, seconds: float) -> None:
        pass

    async def _send(self, msg: Message) -> None:
        self.raw.append(msg.payload)

    async def state(self) -> State:
        return State(pipeline=self.pipeline_name, driver=self.name, ready=self.ready,
                     active=self.lane.queued)


async def test_pull_template_window_poison_and_recovery(caplog: pytest.LogCaptureFixture) -> None:
    queue = PriorityQueue()
    d = _PullDriver(queue, prefetch=2)
    d.fetch_backoff = Backoff(0.05, 0.05, jitter=0)
    d.raw = [b"[" * 100_000 + b"]" * 100_000, b"\xff garbage", b'{"id": 1}', b'{"id": 2}']
    await d.run(d.pipeline)
    await wait_for(lambda: len(queue) == 2)
    a, b = queue.extract_nowait(), queue.extract_nowait()
    assert a is not None and b is not None
    for job in (a, b):
        assert job.name == UNREADABLE and job.failure is not None
        assert job.headers[RR_ERROR][0] == job.failure
    assert "RecursionError" in a.failure or "JSONDecodeError" in a.failure  # type: ignore[operator]
    await asyncio.sleep(0.05)
    assert len(queue) == 0  # the window is full until the poison jobs are settled
    await a.nack()
    await b.nack()
    await wait_for(lambda: len(queue) == 2)
    assert sorted(j.id for j in queue) == ["1", "2"]
    # an outage: not ready, one WARNING, one INFO on recovery
    d.fail_fetches = 3
    for job in list(queue):
        queue.extract_nowait()
        await job.ack()
    with caplog.at_level(logging.INFO, "rrjobs.drivers.fakepull"):
        await wait_for(lambda: not d.ready, within=2)
        d.raw.append(b'{"id": 3}')
        await wait_for(lambda: len(queue) == 1 and d.ready, within=3)
    levels = [(r.levelname, r.getMessage()) for r in caplog.records
              if r.name == "rrjobs.drivers.fakepull" and ("fetching" in r.getMessage()
                                                           or "works again" in r.getMessage())]
    assert [lv for lv, _ in levels] == ["WARNING", "INFO"], levels
    assert levels[0][1].startswith("pipeline 'p': fetching failed (ConnectionError: "), levels
    assert levels[0][1].endswith("; retrying every 0.05 s, the pipeline is restarted after "
                                 "60 s of failures"), levels
    assert levels[1][1].startswith("pipeline 'p': the broker works again after "), levels
    assert levels[1][1].endswith("(3 failed calls)"), levels
    await d.pause("p")
    assert d.given_back == ["3"] and d.lane.out == 0
    await d.stop()


async def test_the_default_give_back_frees_each_slot_once() -> None:
    queue = PriorityQueue()
    d = _PullDriver(queue, prefetch=4)
    d.give_back = PullDriver.give_back.__get__(d)  # type: ignore[method-assign]
    d.raw = [b'{"id": 1}', b'{"id": 2}', b'{"id": 3}']
    await d.run(d.pipeline)
    await wait_for(lambda: len(queue) == 3)
    held = queue.extract_nowait()  # in a handler across the pause
    assert held is not None
    await d.pause("p")
    assert sorted(c for c in d.settled_calls) == [("nack", "2"), ("nack", "3")]
    assert d.lane.out == 1  # the job still in a handler keeps its slot
    await held.ack()
    assert d.lane.out == 0
    await d.stop()


async def test_hold_at_pause_keeps_the_jobs_and_resume_delivers_those_still_held() -> None:
    queue = PriorityQueue()
    d = _PullDriver(queue, prefetch=4)
    d.hold_at_pause = True  # type: ignore[misc]
    lost: set[str] = set()
    d.still_held = lambda job: job.id not in lost  # type: ignore[method-assign]
    d.raw = [b'{"id": 1}', b'{"id": 2}', b'{"id": 3}']
    await d.run(d.pipeline)
    await wait_for(lambda: len(queue) == 3)
    await d.pause("p")
    assert [j.id for j in d.held] == ["1", "2", "3"] and d.given_back == []
    assert len(queue) == 0 and d.lane.out == 0
    lost.add("2")  # its lease ended while paused
    await d.resume("p")
    assert d.held == [] and [j.id for j in queue] == ["1", "3"] and d.lane.out == 2
    await d.stop()
    assert d.given_back == []  # the driver's _close gives back what is held


async def test_pause_waits_for_the_fetch_in_flight_for_pause_wait() -> None:
    queue = PriorityQueue()
    d = _PullDriver(queue)
    release = asyncio.Event()
    fetched: list[str] = []

    async def fetch(max_messages: int) -> Sequence[Any]:
        if fetched:
            await asyncio.sleep(3600)
        with d.in_flight:
            await release.wait()
            fetched.append("done")
        return [b'{"id": 1}']

    d.fetch = fetch  # type: ignore[method-assign]
    d.pause_wait = 5.0
    await d.run(d.pipeline)
    await wait_for(lambda: d.in_flight.busy)
    pausing = asyncio.create_task(d.pause("p"))
    await asyncio.sleep(0.01)
    assert not pausing.done() and not d.lane.is_open
    release.set()
    await pausing
    assert fetched == ["done"] and d.given_back == ["1"]  # received while paused: given back
    await d.stop()


async def test_pull_template_asks_for_a_restart_when_failing_too_long() -> None:
    d = _PullDriver(PriorityQueue())
    d.fetch_backoff = Backoff(0.01, 0.01, jitter=0)
    d.fetch_failures = FailureWindow(0.05)
    asked: list[tuple[str, str]] = []
    d.command_handler = lambda p, c: asked.append((p, c))
    d.fail_fetches = 10_000
    await d.run(d.pipeline)
    await wait_for(lambda: asked == [("p", "restart")], within=3)
    await d.stop()


# -- lifecycle -----------------------------------------------------------------------------


class _SlowDriver(BaseDriver):
    name = "slow"

    def __init__(self) -> None:
        super().__init__(Pipeline(name="p", driver="slow"), PriorityQueue())
        self.inside = 0
        self.overlap = False
        self.log_calls: list[str] = []

    async def _enter(self, what: str) -> None:
        self.inside += 1
        self.overlap |= self.inside > 1
        await asyncio.sleep(0.01)
        self.log_calls.append(what)
        self.inside -= 1

    async def _start_consuming(self) -> None:
        await self._enter("start")

    async def _stop_consuming(self) -> None:
        await self._enter("stop")

    async def _close(self) -> None:
        await self._enter("close")

    async def _send(self, msg: Message) -> None:
        pass

    async def state(self) -> State:
        return State(pipeline="p", driver="slow", ready=self.ready)


@pytest.mark.parametrize("order", list(itertools.permutations(["pause", "resume", "stop"])))
async def test_concurrent_lifecycle_calls_are_serialised_and_never_raise(
        order: tuple[str, ...]) -> None:
    d = _SlowDriver()
    await d.run(d.pipeline)
    calls = {"pause": lambda: d.pause("p"), "resume": lambda: d.resume("p"), "stop": d.stop}
    results = await asyncio.gather(*(calls[c]() for c in order), return_exceptions=True)
    # Only a call that found nothing inside follows RoadRunner's sequential rule
    # (a resume of a consuming pipeline raises); every call that waited is a no-op.
    for call, result in zip(order, results, strict=True):
        if call == "resume" and order[0] == "resume":
            assert isinstance(result, PipelineStateError)
        else:
            assert result is None, (call, result)
    assert not d.overlap
    assert d.stopped and not d.consuming
    assert d.log_calls[-1] == "close"


async def test_sequential_redundant_calls_still_raise_roadrunners_errors() -> None:
    d = _SlowDriver()
    await d.run(d.pipeline)
    with pytest.raises(PipelineStateError):
        await d.resume("p")
    await d.pause("p")
    with pytest.raises(PipelineStateError):
        await d.pause("p")
    await d.stop()
    await d.stop()
    with pytest.raises(PipelineStateError):
        await d.resume("p")


class _InstantDriver(_SlowDriver):
    """Starting, stopping and closing never yield to the loop (as in memory)."""

    name = "instant"

    async def _enter(self, what: str) -> None:
        self.inside += 1
        self.overlap |= self.inside > 1
        self.log_calls.append(what)
        self.inside -= 1


def _state_of(d: BaseDriver) -> str:
    return "stopped" if d.stopped else "running" if d.consuming else "paused"


_ORDERS = [("pause", "pause"), ("resume", "resume"), ("stop", "stop"),
           *itertools.permutations(["pause", "resume", "stop"], 2),
           *itertools.permutations(["pause", "resume", "stop"])]


@pytest.mark.parametrize("driver", [_InstantDriver, _SlowDriver])
@pytest.mark.parametrize("order", _ORDERS, ids="-".join)
async def test_calls_issued_together_see_each_other_even_when_the_work_does_not_yield(
        driver: type[_SlowDriver], order: tuple[str, ...]) -> None:
    d = driver()
    await d.run(d.pipeline)
    start = start_state(order)
    if start == "paused":
        await d.pause("p")
    calls = {"pause": lambda: d.pause("p"), "resume": lambda: d.resume("p"), "stop": d.stop}
    results = await asyncio.gather(*(calls[c]() for c in order), return_exceptions=True)
    assert results == [None] * len(order)
    assert _state_of(d) == end_state(start, order)
    assert not d.overlap
    assert not d._lifecycle.busy


async def test_a_stop_during_a_stop_returns_once_the_driver_is_closed() -> None:
    closing, release = asyncio.Event(), asyncio.Event()

    class Gated(_SlowDriver):
        async def _close(self) -> None:
            closing.set()
            await release.wait()
            self.log_calls.append("close")

    d = Gated()
    await d.run(d.pipeline)
    first = asyncio.get_running_loop().create_task(d.stop())
    await closing.wait()
    assert d.stopped  # refuses pushes already, but is not closed yet
    second = asyncio.get_running_loop().create_task(d.stop())
    await asyncio.sleep(0.01)
    assert not second.done()
    release.set()
    await second
    assert d.log_calls[-1] == "close"
    await first


async def test_a_call_after_the_others_finished_follows_the_sequential_rule() -> None:
    d = _InstantDriver()
    await d.run(d.pipeline)
    await asyncio.gather(d.pause("p"), d.pause("p"))
    with pytest.raises(PipelineStateError):
        await d.pause("p")
    await asyncio.gather(d.resume("p"), d.resume("p"))
    with pytest.raises(PipelineStateError):
        await d.resume("p")
    await d.stop()


# -- the runtime dead-letters unreadable jobs -----------------------------------------------


async def test_the_runtime_dead_letters_an_unreadable_job_without_a_handler() -> None:
    from rrjobs.runtime.app import App
    from rrjobs.runtime.outcomes import Outcomes, RetryPolicy
    from rrjobs.runtime.pool import WorkerPool
    from rrjobs.runtime.stats import Counters

    app = App()
    handled = []

    @app.handler("*")
    async def anything(job: Job) -> None:
        handled.append(job)

    pushed: list[Message] = []

    async def push(msg: Message) -> None:
        pushed.append(msg)

    queue = PriorityQueue()
    counters = Counters()
    pool = WorkerPool(queue, app, Outcomes(lambda _: RetryPolicy(dead_letter="dlq"),
                                           lambda _: counters, push), num_workers=1)
    d = _PullDriver(queue)
    job = d.poison_job(None, b"\x00bad", "ValueError: nope")
    await pool.start()
    await queue.insert(job)
    await wait_for(lambda: counters.dead_lettered == 1, within=3)
    await pool.stop(1)
    assert handled == []
    assert pushed[0].pipeline == "dlq" and pushed[0].payload == b"\x00bad"
    assert "ValueError: nope" in pushed[0].headers[RR_ERROR][0]
    assert PoisonMessageError.__name__ in pushed[0].headers[RR_ERROR][0]


# -- a call in flight at pause -------------------------------------------------------------


async def test_in_flight_settle_closes_the_gate_and_waits_for_the_call() -> None:
    from rrjobs.core.inflight import InFlight

    lane = Lane(PriorityQueue(), "p", 4)
    lane.open()
    tracked = InFlight()
    release = asyncio.Event()

    async def call() -> None:
        with tracked:
            await release.wait()

    task = asyncio.get_running_loop().create_task(call())
    await asyncio.sleep(0)
    assert tracked.busy
    assert not await tracked.settle(lane, 0.05)  # still in flight: bounded wait
    assert not lane.is_open and lane.room() == 0
    release.set()
    assert await tracked.wait(1.0) and not tracked.busy
    await task


# -- settlement defaults and the declarative constructor -----------------------------------


class _Settling(_SlowDriver):
    """Only ack_now, requeue and dead_letter: the defaults route ack and nack."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, str, Any]] = []

    def ack_now(self, job: Job) -> None:  # type: ignore[override]
        self.calls.append(("ack_now", job.id, None))

    async def requeue(self, job: Job, headers: Headers, delay: float) -> None:
        self.calls.append(("requeue", job.id, (headers, delay)))

    async def dead_letter(self, job: Job) -> None:
        self.calls.append(("dead_letter", job.id, None))


async def test_the_default_ack_and_nack_route_to_ack_now_requeue_and_dead_letter() -> None:
    d = _Settling()

    def job(n: int) -> Job:
        return Job(d, id=str(n), name="n", payload=b"", headers={"h": ["v"]}, pipeline="p",
                   priority=1)

    await d.ack(job(1))
    await job(2).nack()
    await job(3).nack(requeue=True, delay=2.0)
    assert d.calls == [("ack_now", "1", None), ("dead_letter", "2", None),
                       ("requeue", "3", ({"h": ["v"]}, 2.0))]


def test_a_constructor_takes_its_name_from_the_driver_and_its_section_key_from_the_name(
) -> None:
    from pydantic import BaseModel

    from rrjobs.config import Config
    from rrjobs.core.constructor import DriverConstructor

    class Section(BaseModel):
        size: int = 1

    class Ctor(DriverConstructor):
        driver_class = _SlowDriver
        options_model = Section
        section_model = Section

    assert Ctor.name == "slow"
    assert Ctor(Config.from_yaml("jobs: {}\nslow: {size: 7}")).section.size == 7
    assert Ctor(Config.from_yaml("jobs: {}")).section.size == 1


async def test_declare_defaults_fill_only_what_a_declared_pipeline_leaves_out() -> None:
    from pydantic import BaseModel

    from rrjobs.core.options import options_from_pipeline

    class Options(BaseModel):
        prefetch: int = 10

    def declared(**options: Any) -> Pipeline:
        return Pipeline(name="p", driver="slow", **options)

    defaults = {"prefetch": 100}
    assert options_from_pipeline(declared(), Options, defaults).prefetch == 100
    assert options_from_pipeline(declared(prefetch=""), Options, defaults).prefetch == 100
    assert options_from_pipeline(declared(prefetch="5"), Options, defaults).prefetch == 5
    assert options_from_pipeline(declared(), Options).prefetch == 10


async def test_options_problems_are_refused_by_the_constructor_with_every_key_path() -> None:
    from pydantic import BaseModel

    from rrjobs.config import Config
    from rrjobs.core.constructor import DriverConstructor, check_problems
    from rrjobs.core.errors import ConfigError

    class Options(BaseModel):
        a: int = 0
        b: int = 0

        def problems(self) -> list[tuple[str, str]]:
            return [(k, "must be 0") for k in ("a", "b") if getattr(self, k)]

    check_problems(Options(), "declare.p")  # nothing to say
    with pytest.raises(ConfigError) as exc:
        check_problems(Options(a=1, b=2), "declare.p")
    assert exc.value.path == "declare.p.a"
    assert exc.value.problems == [("declare.p.a", "must be 0"), ("declare.p.b", "must be 0")]

    class Ctor(DriverConstructor):
        driver_class = _SlowDriver
        options_model = Options

    ctor = Ctor(Config.from_yaml("jobs: {}"))
    with pytest.raises(ConfigError, match=r"declare\.p\.b: must be 0"):
        await ctor.driver_from_pipeline(Pipeline(name="p", driver="slow", b="1"), PriorityQueue())


def test_due_at_ms_is_never_early_and_comma_lists_split() -> None:
    import time

    from rrjobs.core.delays import due_at_ms
    from rrjobs.core.options import comma_list

    before = time.time_ns() / 1e6
    due = due_at_ms(0.0004)
    assert due >= before + 0.4 and due <= time.time_ns() / 1e6 + 2
    assert comma_list(" a, b ,,c") == ["a", "b", "c"]
    assert comma_list(["x"]) == ["x"]


async def test_send_all_waits_for_every_send_and_raises_the_first_failure() -> None:
    from rrjobs.core.batcher import send_all

    done: list[int] = []

    async def send(n: int) -> None:
        await asyncio.sleep(0.01 * (3 - n))
        if n % 2:
            raise ValueError(f"refused {n}")
        done.append(n)

    with pytest.raises(ValueError, match="refused 1") as exc:
        await send_all(map(send, range(4)))
    assert sorted(done) == [0, 2]
    assert exc.value.__notes__ == ["2 of the batch's 4 sends failed"]
    await send_all(send(n) for n in (0, 2))


async def test_confirm_all_fails_refused_items_and_sends_lost_ones_again() -> None:
    from rrjobs.core.batcher import confirm_all

    loop = asyncio.get_running_loop()
    futures: list[asyncio.Future[Any] | None] = [loop.create_future() for _ in range(4)]
    futures.append(None)  # never published
    again: list[str] = []

    async def send_again(item: str) -> None:
        again.append(item)

    def refused(exc: BaseException, item: str) -> BaseException | None:
        return ValueError(f"refused {item}") if isinstance(exc, KeyError) else None

    assert futures[0] and futures[1] and futures[2] and futures[3]
    loop.call_soon(futures[0].set_result, "ok")
    loop.call_soon(futures[1].set_exception, KeyError("returned"))
    loop.call_soon(futures[2].set_exception, ConnectionError("lost"))
    loop.call_soon(futures[3].cancel)
    with pytest.raises(ValueError, match="refused b") as exc:
        await confirm_all(list("abcde"), futures, refused, send_again)
    assert sorted(again) == ["c", "d", "e"]
    assert exc.value.__notes__ == ["1 of the batch's 5 sends failed"]


async def test_ack_runs_ack_the_settled_prefix_at_once_and_the_rest_one_by_one() -> None:
    from rrjobs.core.acks import AckRuns

    flushes: list[tuple[int | None, list[int]]] = []
    runs = AckRuns(lambda: flushes.append(runs.take()), batch=3, delay=0.001)
    for tag in range(1, 7):
        runs.delivered(tag)
    runs.settled(2, True)
    runs.settled(1, True)
    assert flushes == []  # two acks wait for the timer
    await asyncio.sleep(0.01)
    assert flushes == [(2, [])]
    runs.settled(3, False)  # a nack sent on its own: the run goes on past it
    runs.settled(5, True)
    runs.settled(6, True)
    assert runs.pending == 2
    assert runs.take(everything=False) == (None, [])  # 4 is still in a handler
    assert runs.take() == (None, [5, 6])
    runs.settled(4, True)
    assert runs.take() == (4, [])  # 5 and 6 were acked already: not covered again
    await asyncio.sleep(0.01)
    assert flushes == [(2, [])] and runs.pending == 0
    for tag in (7, 8, 9):
        runs.delivered(tag)
        runs.settled(tag, True)
    assert flushes[-1] == (9, [])  # the batch filled: flushed at once


async def test_state_of_and_dropped_fill_in_the_pipeline(caplog: pytest.LogCaptureFixture
                                                        ) -> None:
    d = _SlowDriver()
    assert d.dead_letter_store() is None
    await d.run(d.pipeline)
    assert d.state_of("q", 1, 2, 3) == State(pipeline="p", driver="slow", queue="q", active=1,
                                             delayed=2, reserved=3, ready=True, priority=10)
    job = Job(d, id="j1", name="n", payload=b"", headers={}, pipeline="p", priority=1)
    with caplog.at_level(logging.INFO, logger="rrjobs.drivers.slow"):
        d.dropped(job, "dead_letter_queue")
    assert "job j1 (n) nacked without requeue: dropped (no dead_letter_queue)" in caplog.text
    await d.stop()


def _feed(queue: PriorityQueue, prefetch: int, jobs: int,
          counted: bool = False) -> tuple[Lane, Supervisor, Feed, list[Job]]:
    """A feed of pipeline ``p`` into ``queue`` and ``jobs`` jobs to give it."""
    lane = Lane(queue, "p", prefetch=prefetch)
    supervisor = Supervisor("pipeline 'p'", logging.getLogger("test.feed"))
    settler = _SlowDriver()
    return (lane, supervisor, Feed(lane, supervisor, counted=counted),
            [_job(settler, n) for n in range(jobs)])


async def test_a_feed_moves_jobs_in_order_waits_for_room_and_takes_them_back() -> None:
    queue = PriorityQueue(maxsize=2)
    lane, supervisor, feed, jobs = _feed(queue, 3, 5)
    feed.add(jobs[0])
    assert len(queue) == 0 and list(feed.ready) == [jobs[0]]  # the gate is closed
    feed.open()
    assert supervisor.running("mover") and len(queue) == 1
    for job in jobs[1:]:
        feed.add(job)
    assert len(queue) == 2 and lane.out == 2  # the queue is full: the mover waits
    assert [await queue.extract_min(), await queue.extract_min()] == jobs[:2]
    await wait_for(lambda: lane.out == 3, within=2, what="the mover's delivery")
    assert [j.id for j in queue] == ["2"] and len(feed.ready) == 2  # the window is full
    lane.release()
    feed.pump()
    assert [j.id for j in queue] == ["2", "3"]
    await feed.close()
    assert len(queue) == 0 and [j.id for j in feed.ready] == ["2", "3", "4"]
    assert lane.out == 1  # job 1, still out; the taken-back jobs are not
    assert not lane.is_open
    await supervisor.stop()


async def test_a_settled_job_frees_its_slot_wakes_a_waiter_and_moves_a_ready_job() -> None:
    queue = PriorityQueue()
    lane, supervisor, feed, jobs = _feed(queue, 1, 2)
    feed.open()
    feed.add(jobs[0])
    feed.add(jobs[1])
    assert [j.id for j in queue] == ["0"] and list(feed.ready) == [jobs[1]]  # window full
    waiter = asyncio.create_task(lane.wait_room())
    await asyncio.sleep(0)
    assert not waiter.done()
    assert queue.extract_nowait() is jobs[0]
    feed.settled(jobs[0])
    assert [j.id for j in queue] == ["1"] and not feed.ready and lane.out == 1
    await asyncio.sleep(0)
    assert not waiter.done()  # the ready job took the freed slot: the waiter waits on
    assert queue.extract_nowait() is jobs[1]
    feed.settled(jobs[1])
    assert lane.out == 0
    assert await asyncio.wait_for(waiter, 1) == 1  # woken by the settlement
    feed.settled(jobs[1])  # a second settlement never takes the window below zero
    assert lane.out == 0
    await supervisor.stop()


async def test_a_counted_feed_keeps_its_jobs_counted_and_take_back_leaves_the_gate() -> None:
    queue = PriorityQueue()
    lane, supervisor, feed, jobs = _feed(queue, 1, 3, counted=True)
    feed.open()
    lane.take(3)  # fetched: counted out already, past the window
    for job in jobs:
        feed.add(job)
    assert [j.id for j in queue] == ["0", "1", "2"] and lane.out == 3
    assert await feed.take_back(lambda j: j.id == "1") == [jobs[1]]  # dropped, released
    assert lane.is_open and [j.id for j in queue] == ["0", "2"] and lane.out == 2
    assert not feed.ready  # the others pumped back
    await feed.close()
    assert lane.out == 2 and list(feed.ready) == [jobs[0], jobs[2]]
    await supervisor.stop()


async def test_settling_after_stop_copies_that_fail_and_delay_hops() -> None:
    d = _SlowDriver()
    job = Job(d, id="j1", name="n", payload=b"", headers={}, pipeline="p", priority=1)
    d.check_not_stopped(job)  # running: nothing to say
    given_back: list[str] = []

    async def refused() -> None:
        raise RuntimeError("refused")

    async def back() -> None:
        given_back.append("async")

    with pytest.raises(RuntimeError, match="refused"):
        await d.copy_or_give_back(refused(), lambda: given_back.append("sync"))
    with pytest.raises(RuntimeError, match="refused"):
        await d.copy_or_give_back(refused(), back)
    await d.copy_or_give_back(asyncio.sleep(0), lambda: given_back.append("never"))
    assert given_back == ["sync", "async"]
    steps: list[str] = []

    async def step(name: str) -> None:
        steps.append(name)

    d.spawn_hop(lambda: step("send"), lambda: step("settle"))
    d.spawn_hop(refused, lambda: step("not after a failed send"))
    await wait_for(lambda: steps == ["send", "settle"], within=2, what="the hop")
    await d.stop()
    with pytest.raises(PipelineStateError, match="job j1 was not settled"):
        d.check_not_stopped(job)
    assert d.queue_name(job) == "p"


def test_headers_json_and_url_scheme() -> None:
    from rrjobs.core.headers import headers_json
    from rrjobs.core.secret_types import url_scheme

    assert headers_json({"a": ["é", "2"]}) == '{"a":["é","2"]}'
    assert url_scheme("AMQPS://u:p@h/", ("amqp", "amqps"), "an amqp:// URI") == "amqps"
    with pytest.raises(ValueError) as exc:
        url_scheme("http://u:secret@h/", ("amqp",), "an amqp:// URI")
    assert "addr must be an amqp:// URI" in str(exc.value) and "secret" not in str(exc.value)


def test_an_existing_file_option_names_a_missing_file(tmp_path: Any) -> None:
    from pydantic import BaseModel

    from rrjobs.core.errors import ConfigError
    from rrjobs.core.options import ExistingFile, validate

    class Section(BaseModel):
        credentials: ExistingFile = ""

    here = tmp_path / "user.creds"
    here.write_text("x")
    assert validate(Section, {"credentials": str(here)}, "nats").credentials == str(here)
    assert validate(Section, {}, "nats").credentials == ""
    with pytest.raises(ConfigError, match=r"nats\.credentials: file '/no/such' does not exist"):
        validate(Section, {"credentials": "/no/such"}, "nats")
