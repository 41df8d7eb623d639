"""The jobs runtime end to end on the memory driver."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time

import pytest

from rrjobs import App, Config, Job, Jobs, Message
from rrjobs.core.errors import (
    ConfigError,
    JobAlreadySettledError,
    PipelineExistsError,
    PipelineNotFoundError,
    PipelineStateError,
)
from rrjobs.core.headers import RR_ATTEMPTS, RR_ERROR, RR_ORIGINAL_PIPELINE
from rrjobs.runtime.app import JobData
from tests.conftest import wait_for


def config(extra: str = "", consume: str = "[p]", workers: int = 4) -> Config:
    return Config.from_yaml(
        f"""
jobs:
  pool: {{num_workers: {workers}, destroy_timeout: 2}}
  consume: {consume}
  pipelines:
    p:
      driver: memory
      config: {{priority: 10}}
      retry: {{max_attempts: 3, backoff: 0.01, multiplier: 1}}
{extra}
"""
    )


def record(app: App, name: str = "a") -> list[Job]:
    seen: list[Job] = []

    @app.handler(name)
    async def handle(job: Job) -> None:
        seen.append(job)

    return seen


async def test_push_handle_ack_and_counters() -> None:
    app = App()
    seen = record(app)
    async with Jobs(config(), app) as jobs:
        await jobs.push(Message("a", b"x", "p", headers={"h": ["1", "2"]}))
        await wait_for(lambda: len(seen) == 1)
        job = seen[0]
        assert job.payload == b"x" and job.headers == {"h": ["1", "2"]}
        assert job.priority == 10  # priority 0 inherits the pipeline's
        assert job.settled == "ack"
        (st,) = await jobs.stat()
        assert st.counters.pushed == 1 and st.counters.ok == 1
        assert st.state.ready and st.state.active == 0 and st.state.reserved == 0


async def test_push_to_unknown_pipeline() -> None:
    async with Jobs(config(), App()) as jobs:
        with pytest.raises(PipelineNotFoundError):
            await jobs.push(Message("a", b"", "nope"))


async def test_priorities_across_pipelines_and_fifo() -> None:
    app = App()
    seen = record(app)
    gate, held = asyncio.Event(), asyncio.Event()

    @app.handler("gate")
    async def hold(job: Job) -> None:
        held.set()
        await gate.wait()

    extra = ("    q:\n      driver: memory\n      config: {priority: 1}\n"
             "    g:\n      driver: memory\n")
    async with Jobs(config(extra, consume="[g]", workers=1), app) as jobs:
        # The only worker is busy until both pipelines have queued their jobs.
        await jobs.push(Message("gate", b"", "g"))
        await held.wait()
        for i in range(5):
            await jobs.push(Message("a", f"p{i}".encode(), "p"))
            await jobs.push(Message("a", f"q{i}".encode(), "q"))
        await jobs.resume(["p", "q"])
        gate.set()
        await wait_for(lambda: len(seen) == 10)
    assert [j.payload.decode() for j in seen] == [f"q{i}" for i in range(5)] + [
        f"p{i}" for i in range(5)
    ]


async def test_delayed_job_runs_not_before_its_delay() -> None:
    app = App()
    times: list[float] = []

    @app.handler("a")
    async def handle(job: Job) -> None:
        times.append(time.monotonic())

    async with Jobs(config(), app) as jobs:
        t0 = time.monotonic()
        await jobs.push(Message("a", b"", "p", delay=0.3))
        (st,) = await jobs.stat()
        assert st.state.delayed == 1
        await wait_for(lambda: len(times) == 1)
        assert times[0] - t0 >= 0.3
        (st,) = await jobs.stat()
        assert st.state.delayed == 0


async def test_pause_accepts_pushes_and_consumes_nothing_until_resume() -> None:
    app = App()
    seen = record(app)
    async with Jobs(config(), app) as jobs:
        await jobs.pause(["p"])
        with pytest.raises(PipelineStateError, match="nothing to pause"):
            await jobs.pause(["p"])
        for i in range(20):
            await jobs.push(Message("a", str(i).encode(), "p"))
        await asyncio.sleep(0.05)
        assert seen == []
        (st,) = await jobs.stat()
        assert not st.state.ready and st.state.active == 20
        await jobs.resume(["p"])
        with pytest.raises(PipelineStateError, match="already in the active state"):
            await jobs.resume(["p"])
        await wait_for(lambda: len(seen) == 20)
        assert [int(j.payload) for j in seen] == list(range(20))


async def test_pause_takes_queued_jobs_back_out_of_the_priority_queue() -> None:
    app = App()
    gate = asyncio.Event()
    seen: list[Job] = []

    @app.handler("a")
    async def handle(job: Job) -> None:
        seen.append(job)
        await gate.wait()

    async with Jobs(config(workers=1), app) as jobs:
        for i in range(5):
            await jobs.push(Message("a", str(i).encode(), "p"))
        await wait_for(lambda: len(seen) == 1)
        await jobs.pause(["p"])
        assert len(jobs.queue) == 0
        gate.set()
        await asyncio.sleep(0.05)
        assert len(seen) == 1
        (st,) = await jobs.stat()
        assert st.state.active == 4
        await jobs.resume(["p"])
        await wait_for(lambda: len(seen) == 5)
        assert [int(j.payload) for j in seen] == [0, 1, 2, 3, 4]


async def test_stat_reports_a_pipeline_whose_state_raises_and_the_others() -> None:
    async with Jobs(config(consume="[p, q]", extra="""
    q:
      driver: memory
"""), App()) as jobs:
        broken = jobs._pipelines["q"].driver

        async def state() -> None:
            raise OSError("queue 'q' vanished")

        broken.state = state  # type: ignore[method-assign,assignment]
        stats = {s.state.pipeline: s.state for s in await jobs.stat()}
        assert (stats["q"].ready, stats["q"].error_message) == (False, "queue 'q' vanished")
        assert (stats["q"].driver, stats["q"].priority) == ("memory", 10)
        assert stats["p"].ready is True and stats["p"].error_message == ""


async def test_declare_runs_only_if_in_consume_otherwise_resume_starts_it() -> None:
    app = App()
    seen = record(app)
    async with Jobs(config(consume="[p, auto]"), app) as jobs:
        await jobs.declare({"name": "idle", "driver": "memory", "priority": "3",
                            "prefetch": "10"})
        await jobs.declare({"name": "auto", "driver": "memory"})
        assert jobs.list() == ["auto", "idle", "p"]
        await jobs.push(Message("a", b"idle", "idle"))
        await jobs.push(Message("a", b"auto", "auto"))
        await wait_for(lambda: len(seen) == 1)
        await asyncio.sleep(0.05)
        assert [j.payload for j in seen] == [b"auto"]
        stats = {s.state.pipeline: s.state for s in await jobs.stat()}
        assert not stats["idle"].ready and stats["idle"].active == 1
        assert stats["idle"].priority == 3
        await jobs.resume(["idle"])
        await wait_for(lambda: len(seen) == 2)
        assert seen[1].payload == b"idle" and seen[1].priority == 3
        with pytest.raises(PipelineExistsError):
            await jobs.declare({"name": "idle", "driver": "memory"})


async def test_declare_errors_name_the_key() -> None:
    async with Jobs(config(), App()) as jobs:
        with pytest.raises(ConfigError, match=r"^declare\.x\.prefetch: must be ≥ 1"):
            await jobs.declare({"name": "x", "driver": "memory", "prefetch": "0"})
        with pytest.raises(ConfigError, match=r"^declare\.y\.driver"):
            await jobs.declare({"name": "y"})
        with pytest.raises(ConfigError, match=r"^declare\.z\.bogus: unknown key"):
            await jobs.declare({"name": "z", "driver": "memory", "bogus": "1"})
        assert "x" not in jobs.list()


async def test_destroy_removes_queued_jobs_from_the_priority_queue() -> None:
    app = App()
    gate = asyncio.Event()

    @app.handler("block")
    async def block(job: Job) -> None:
        await gate.wait()

    async with Jobs(config(workers=1), app) as jobs:
        await jobs.push(Message("block", b"", "p"))
        await wait_for(lambda: jobs.pool.busy == 1)
        await jobs.declare({"name": "d", "driver": "memory"})
        await jobs.resume(["d"])
        for _ in range(3):
            await jobs.push(Message("a", b"", "d"))
        assert jobs.queue.count("d") == 3
        assert await jobs.destroy(["d"]) == ["d"]
        assert jobs.queue.count("d") == 0
        assert "d" not in jobs.list()
        with pytest.raises(PipelineNotFoundError):
            await jobs.push(Message("a", b"", "d"))
        gate.set()


async def test_destroy_while_handlers_are_busy_leaves_no_job_queued() -> None:
    app = App()
    gate = asyncio.Event()

    @app.handler("a")
    async def handle(job: Job) -> None:
        await gate.wait()

    async with Jobs(config(workers=1), app) as jobs:
        for _ in range(5):
            await jobs.push(Message("a", b"", "p"))
        await wait_for(lambda: jobs.pool.busy == 1)
        assert jobs.queue.count("p") == 4
        await jobs.destroy(["p"])
        assert len(jobs.queue) == 0
        gate.set()


async def test_failing_job_is_retried_with_attempts_then_dead_lettered() -> None:
    app = App()
    attempts: list[int] = []
    dead: list[Job] = []

    @app.handler("boom")
    async def boom(job: Job) -> None:
        if job.pipeline == "dl":
            dead.append(job)
            return
        attempts.append(job.attempts)
        raise RuntimeError("kaput")

    extra = (
        "    dl:\n      driver: memory\n"
        "    r:\n      driver: memory\n"
        "      retry: {max_attempts: 3, backoff: 0.01, dead_letter: dl}\n"
    )
    async with Jobs(config(extra, consume="[r, dl]"), app) as jobs:
        await jobs.push(Message("boom", b"data", "r", id="job-1", headers={"k": ["v"]}))
        await wait_for(lambda: len(dead) == 1)
        assert attempts == [0, 1, 2]
        stats = {s.state.pipeline: s for s in await jobs.stat()}
        assert stats["r"].counters.failed == 3 and stats["r"].counters.retried == 2
        assert stats["r"].counters.dead_lettered == 1
        copy = dead[0]
        assert copy.id == "job-1" and copy.payload == b"data"
        assert copy.headers["k"] == ["v"]
        assert copy.headers[RR_ATTEMPTS] == ["3"]
        assert copy.headers[RR_ORIGINAL_PIPELINE] == ["r"]
        assert "kaput" in copy.headers[RR_ERROR][0]


async def test_exhausted_retries_without_dead_letter_drop_loudly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = App()
    calls = 0

    @app.handler("boom")
    async def boom(job: Job) -> None:
        nonlocal calls
        calls += 1
        raise ValueError("bad input")

    async with Jobs(config(), app) as jobs:
        with caplog.at_level(logging.ERROR, logger="rrjobs.runtime"):
            await jobs.push(Message("boom", b"", "p"))

            async def dropped() -> int:
                (st,) = await jobs.stat()
                return st.counters.dropped

            for _ in range(500):
                if await dropped():
                    break
                await asyncio.sleep(0.01)
        assert calls == 3
        assert "DROPPED" in caplog.text and "bad input" in caplog.text
        await asyncio.sleep(0.05)
        assert calls == 3  # no endless loop


async def test_explicit_settlement_in_the_handler_wins() -> None:
    app = App()
    seen: list[Job] = []
    double_settle: list[BaseException] = []

    @app.handler("a")
    async def handle(job: Job) -> None:
        seen.append(job)
        if b"requeue" in job.payload and "x" not in job.headers:
            await job.requeue({"x": ["y"]})
            raise RuntimeError("after settling: ignored")
        if b"nack" in job.payload:
            await job.nack()
            try:
                await job.ack()
            except JobAlreadySettledError as exc:
                double_settle.append(exc)

    async with Jobs(config(), app) as jobs:
        await jobs.push(Message("a", b"requeue", "p"))
        await wait_for(lambda: len(seen) == 2)
        assert seen[1].headers == {"x": ["y"]}
        assert seen[0].settled == "requeue" and seen[1].settled == "ack"
        await jobs.push(Message("a", b"nack", "p"))
        await wait_for(lambda: len(seen) == 3)
        await asyncio.sleep(0.05)
        assert len(seen) == 3
        assert seen[2].settled == "nack" and len(double_settle) == 1
        (st,) = await jobs.stat()
        assert st.counters.failed == 1 and st.counters.retried == 0


async def test_auto_ack_is_never_redelivered() -> None:
    app = App()
    calls: list[str] = []

    @app.handler("a")
    async def handle(job: Job) -> None:
        calls.append(job.settled or "")
        raise RuntimeError("fails")

    async with Jobs(config(), app) as jobs:
        await jobs.push(Message("a", b"", "p", auto_ack=True))
        await wait_for(lambda: len(calls) == 1)
        await asyncio.sleep(0.05)
        assert calls == ["ack"]  # acknowledged before the handler ran


async def test_no_handler_is_a_failure_with_retry_policy() -> None:
    async with Jobs(config(), App()) as jobs:
        await jobs.push(Message("unknown", b"", "p"))
        for _ in range(500):
            (st,) = await jobs.stat()
            if st.counters.dropped:
                break
            await asyncio.sleep(0.01)
        assert st.counters.failed == 3 and st.counters.dropped == 1


async def test_fallback_handler() -> None:
    app = App()
    got: list[str] = []

    @app.fallback
    async def anything(job: Job) -> None:
        got.append(job.name)

    async with Jobs(config(), app) as jobs:
        await jobs.push(Message("whatever", b"", "p"))
        await wait_for(lambda: got == ["whatever"])


async def test_sync_handlers_run_in_threads() -> None:
    import threading

    app = App()
    threads: list[str] = []

    @app.handler("sync")
    def handle(job: Job) -> None:
        threads.append(threading.current_thread().name)

    async with Jobs(config(), app) as jobs:
        await jobs.push(Message("sync", b"", "p"))
        await wait_for(lambda: len(threads) == 1)
    assert threads[0].startswith("rrjobs-handler")


def cpu_handler(job: JobData) -> None:
    import os

    if job.payload != b"ok":
        raise ValueError(f"pid {os.getpid()}")


async def test_process_handlers_receive_jobdata_and_failures_are_retried() -> None:
    app = App()
    app.add_handler("cpu", cpu_handler, executor="process")
    async with Jobs(config(), app) as jobs:
        await jobs.push(Message("cpu", b"ok", "p"))
        await jobs.push(Message("cpu", b"bad", "p"))
        for _ in range(1500):
            (st,) = await jobs.stat()
            if st.counters.ok == 1 and st.counters.dropped == 1:
                break
            await asyncio.sleep(0.01)
        assert st.counters.ok == 1 and st.counters.failed == 3 and st.counters.dropped == 1


async def test_handler_timeout_is_a_failure_and_frees_the_worker() -> None:
    app = App()
    started: list[int] = []

    @app.handler("hang", timeout=0.2)
    async def hang(job: Job) -> None:
        started.append(job.attempts)
        await asyncio.sleep(3600)

    cfg = config().data
    cfg["jobs"]["pipelines"]["p"]["retry"] = {"max_attempts": 2, "backoff": 0.01}
    async with Jobs(Config(cfg), app) as jobs:
        await jobs.push(Message("hang", b"", "p"))
        for _ in range(500):
            (st,) = await jobs.stat()
            if st.counters.dropped:
                break
            await asyncio.sleep(0.01)
        assert started == [0, 1]
        assert st.counters.failed == 2 and st.counters.retried == 1
        assert jobs.pool.busy == 0


async def test_exec_ttl_from_config_applies_to_all_handlers() -> None:
    app = App()
    done = asyncio.Event()

    @app.handler("hang")
    async def hang(job: Job) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            done.set()

    cfg = config().data
    cfg["jobs"]["pool"]["supervisor"] = {"exec_ttl": "100ms"}
    async with Jobs(Config(cfg), app) as jobs:
        await jobs.push(Message("hang", b"", "p"))
        await asyncio.wait_for(done.wait(), 5)


async def test_graceful_stop_drains_in_flight_jobs_before_stopping_drivers() -> None:
    app = App()
    finished: list[str] = []
    started = asyncio.Event()

    @app.handler("slow")
    async def slow(job: Job) -> None:
        started.set()
        await asyncio.sleep(0.2)
        finished.append(job.id)

    jobs = Jobs(config(workers=2), app)
    await jobs.start()
    await jobs.push(Message("slow", b"", "p", id="a"))
    await jobs.push(Message("slow", b"", "p", id="b"))
    await asyncio.wait_for(started.wait(), 2)
    driver = jobs._pipelines["p"].driver
    await jobs.stop()
    assert sorted(finished) == ["a", "b"]
    (st,) = [await driver.state()]
    assert st.reserved == 0  # both acked before the driver stopped
    assert driver.stopped


async def test_stop_requeues_jobs_whose_handlers_overrun_the_drain_timeout() -> None:
    app = App()
    started = asyncio.Event()
    settled: list[str | None] = []
    seen: list[Job] = []

    @app.handler("hang")
    async def hang(job: Job) -> None:
        seen.append(job)
        started.set()
        await asyncio.sleep(3600)

    cfg = config(workers=1).data
    cfg["jobs"]["pool"]["destroy_timeout"] = 0.1
    jobs = Jobs(Config(cfg), app)
    await jobs.start()
    await jobs.push(Message("hang", b"", "p"))
    await asyncio.wait_for(started.wait(), 2)
    await jobs.stop()
    settled.append(seen[0].settled)
    assert settled == ["nack"]  # handed back with requeue=True, not acked


async def test_start_fails_on_a_dead_letter_to_an_unknown_pipeline() -> None:
    cfg = config().data
    cfg["jobs"]["pipelines"]["p"]["retry"] = {"dead_letter": "nowhere"}
    with pytest.raises(ConfigError, match=r"jobs\.pipelines\.p\.retry\.dead_letter"):
        await Jobs(Config(cfg), App()).start()


async def test_push_batch_preserves_order_and_counts() -> None:
    app = App()
    seen = record(app)
    async with Jobs(config(workers=1), app) as jobs:
        await jobs.push_batch([Message("a", str(i).encode(), "p") for i in range(50)])
        await wait_for(lambda: len(seen) == 50)
        assert [int(j.payload) for j in seen] == list(range(50))
        (st,) = await jobs.stat()
        assert st.counters.pushed == 50


async def test_many_jobs_each_processed_once() -> None:
    app = App()
    seen = record(app)
    async with Jobs(config(workers=8), app) as jobs:
        await asyncio.gather(*(jobs.push(Message("a", b"", "p", id=str(i)))
                               for i in range(2000)))
        await wait_for(lambda: len(seen) == 2000)
    assert len({j.id for j in seen}) == 2000


async def test_worker_pool_extends_the_lease_of_a_long_running_job() -> None:
    from rrjobs.core.capabilities import Capabilities
    from rrjobs.core.queue import PriorityQueue
    from rrjobs.runtime.outcomes import Outcomes, RetryPolicy
    from rrjobs.runtime.pool import WorkerPool
    from rrjobs.runtime.stats import Counters
    from tests.test_core import calls, recording_job

    app = App()

    @app.handler("long")
    async def long(job: Job) -> None:
        await asyncio.sleep(1.0)

    queue = PriorityQueue()
    counters = Counters()

    async def no_push(msg: Message) -> None:
        raise AssertionError("unexpected push")

    pool = WorkerPool(queue, app, Outcomes(lambda _: RetryPolicy(), lambda _: counters, no_push),
                      num_workers=1)
    job = recording_job(caps=Capabilities(lease_extension=True), name="long", payload=b"",
                        headers={}, lease=0.4)
    await pool.start()
    await queue.insert(job)
    await wait_for(lambda: counters.ok == 1, within=5)
    await pool.stop(1)
    # extended at each half-life of the lease while the 1 s handler ran
    extended = [c for c in calls(job) if c[0] == "extend"]
    assert len(extended) >= 2 and set(extended) == {("extend", 0.4)}
    assert job.settled == "ack" and calls(job)[-1] == ("ack",)


async def test_a_driver_asking_to_restart_again_at_once_backs_off() -> None:
    from rrjobs.core.options import options_from_config
    from rrjobs.core.pipeline import Pipeline as _Pipeline
    from rrjobs.core.queue import PriorityQueue as _PQ
    from rrjobs.drivers.memory import MemoryConstructor
    from rrjobs.drivers.memory.config import MemoryOptions
    from rrjobs.drivers.memory.driver import MemoryDriver
    from rrjobs.registry import DriverRegistry

    built: list[float] = []

    class Failing(MemoryDriver):
        """Asks the runtime to restart it as soon as it consumes (a fatal error
        that comes straight back)."""

        async def _start_consuming(self) -> None:
            await super()._start_consuming()
            handler = self.command_handler
            assert handler is not None
            asyncio.get_running_loop().call_soon(handler, self.pipeline_name, "restart")

    class FailingConstructor(MemoryConstructor):
        async def driver_from_config(self, config_key: str, queue: _PQ,
                                     pipeline: _Pipeline) -> MemoryDriver:
            built.append(asyncio.get_running_loop().time())
            return Failing(pipeline, queue,
                           options_from_config(self.configurer, config_key, MemoryOptions))

    registry = DriverRegistry.from_entry_points()
    registry.register("failing", FailingConstructor)
    cfg = Config.from_yaml("jobs:\n  consume: [p]\n  pipelines:\n    p: {driver: failing}\n")
    async with Jobs(cfg, App(), registry=registry):
        await wait_for(lambda: len(built) >= 4, within=10)
    gaps = [b - a for a, b in itertools.pairwise(built)]
    # the first restart is immediate; a driver failing again at once waits 1 s, then 2 s
    assert gaps[0] < 0.5
    assert 0.9 <= gaps[1] < 1.9
    assert 1.9 <= gaps[2] < 3.5


async def test_concurrent_lifecycle_calls_on_one_pipeline_follow_the_drivers_rule() -> None:
    async with Jobs(config(), App()) as jobs:
        await asyncio.gather(jobs.pause(["p"]), jobs.pause(["p"]))
        with pytest.raises(PipelineStateError):
            await jobs.pause(["p"])  # on its own: RoadRunner's error
        await asyncio.gather(jobs.resume(["p"]), jobs.resume(["p"]))
        (st,) = await jobs.stat()
        assert st.state.ready
        results = await asyncio.gather(jobs.destroy(["p"]), jobs.destroy(["p"]),
                                       jobs.pause(["p"]), jobs.resume(["p"]))
        assert results == [["p"], [], None, None]  # only the first destroy removed it
        assert jobs.list() == [] and jobs._gates == {}
        with pytest.raises(PipelineNotFoundError):
            await jobs.destroy(["p"])
        with pytest.raises(PipelineNotFoundError):
            await jobs.pause(["p"])
