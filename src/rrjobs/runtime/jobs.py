"""``Jobs``: the runtime (RoadRunner's jobs plugin).

It owns the priority queue, the pipelines and their drivers, and the worker
pool, and offers the operations of RoadRunner's RPC: push, push_batch, pause,
resume, list, declare, destroy and stat, and the dead-letter operations of
``rrjobs dlq`` (:attr:`Jobs.dead_letters`, :mod:`.deadletters`).

Life of a job::

    push(Message) → pipeline's Driver.push → broker → Driver consumes →
    PriorityQueue.insert → WorkerPool worker extract_min → handler (App) →
    Outcomes: ack | requeue with backoff | dead-letter

Start (``start``): every config pipeline is built with
``driver_from_config("jobs.pipelines.<name>.config", ...)``; those named in
``jobs.consume`` start consuming; any error fails the start. Declared pipelines
start only if named in ``consume``; otherwise ``resume`` starts them (exactly
RoadRunner's gating).

Stop (``stop``): stop taking jobs → drain running handlers within
``pool.destroy_timeout`` → requeue the rest → stop the drivers.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
from bisect import bisect_left
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import groupby
from operator import attrgetter
from time import perf_counter
from typing import TYPE_CHECKING, Any

from rrjobs.config import Config, RetryConfig
from rrjobs.core.deadletters import DeadLetterStore
from rrjobs.core.errors import (
    CapabilityError,
    ConfigError,
    PipelineExistsError,
    PipelineNotFoundError,
)
from rrjobs.core.gate import CallGate
from rrjobs.core.interfaces import Constructor, Driver
from rrjobs.core.message import Message
from rrjobs.core.options import parse_duration, validate
from rrjobs.core.pipeline import DEFAULT_PRIORITY, Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.secrets import remember_tree, scrub
from rrjobs.core.state import State
from rrjobs.registry import DriverRegistry
from rrjobs.runtime.app import App
from rrjobs.runtime.deadletters import DeadLetters, require_store
from rrjobs.runtime.outcomes import Failure, Outcomes, RetryPolicy
from rrjobs.runtime.pool import WorkerInfo, WorkerPool
from rrjobs.runtime.stats import Counters, PipelineStat
from rrjobs.tracing import Tracing

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider


#: A message's pipeline (``push_batch`` groups consecutive messages by it).
_pipeline_of = attrgetter("pipeline")
log = logging.getLogger("rrjobs.runtime")

#: A driver asking to restart within this many seconds of its last rebuild
#: waits first (see :meth:`Jobs._restart`).
RESTART_SETTLE = 60.0


#: Upper bounds (seconds) of the push latency buckets: Prometheus' default
#: buckets, which RoadRunner's ``rr_jobs_push_latency`` uses.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                   10.0)


@dataclass(slots=True)
class PushStats:
    """Pushes to one pipeline through one of ``push``/``push_batch``: plain
    numbers updated once per driver call, read by observers (``rrjobs.metrics``)."""

    #: jobs whose driver call raised
    failed: int = 0
    #: jobs pushed, and the seconds their driver calls took in all
    observed: int = 0
    seconds: float = 0.0
    #: ``observed`` per latency bucket (not cumulative; the last is +Inf)
    buckets: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS) + 1))

    def observe(self, seconds: float, jobs: int) -> None:
        """``jobs`` jobs pushed by one driver call of ``seconds``: each one is
        observed at ``seconds / jobs``, its share of the call."""
        self.observed += jobs
        self.seconds += seconds
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds / jobs)] += jobs

    @property
    def jobs(self) -> int:
        """Jobs asked to be pushed (RoadRunner's ``requests_total``)."""
        return self.observed + self.failed


@dataclass
class PipelineEntry:
    """A registered pipeline."""

    name: str
    pipeline: Pipeline
    driver: Driver
    policy: RetryPolicy
    declared: bool
    #: the handlers' time limit in seconds (``0``: ``pool.supervisor.exec_ttl``)
    timeout: float = 0.0
    counters: Counters = field(default_factory=Counters)
    single_pushes: PushStats = field(default_factory=PushStats)
    batch_pushes: PushStats = field(default_factory=PushStats)


class Jobs:
    """The jobs runtime. Use from one event loop. Operations are
    concurrency-safe with respect to each other.

    ``pause``, ``resume`` and ``destroy`` are serialised per pipeline with the
    drivers' rule (:mod:`rrjobs.core.gate`): a call made while another one on
    the same pipeline is in progress waits for it, and is a no-op when its
    work is then already done: a pause behind a pause, a resume behind a
    resume, and any call (a ``destroy`` too) behind the ``destroy`` of that
    pipeline, which returns once it is gone instead of raising
    :class:`~rrjobs.core.errors.PipelineNotFoundError`. Issued on its own, each
    call keeps RoadRunner's errors (an unknown pipeline, a pause of a paused
    one). ``destroy`` returns the names it removed.

    ``registry``: the drivers (default: the installed ``rrjobs.drivers`` entry
    points). ``tracer_provider``: the OpenTelemetry provider of the runtime's
    spans (default: the global one, if the application set one before
    :meth:`start`; see :mod:`rrjobs.tracing`)."""

    def __init__(self, config: Config, app: App | None = None,
                 registry: DriverRegistry | None = None, *,
                 tracer_provider: TracerProvider | None = None) -> None:
        self.config = config
        self.jobs_config = config.jobs
        self.app = app or App()
        self.registry = registry or DriverRegistry.from_entry_points()
        self.queue = PriorityQueue(self.jobs_config.pipeline_size)
        self.timeout = self.jobs_config.timeout or None
        self.consume = set(self.jobs_config.consume)
        self._pipelines: dict[str, PipelineEntry] = {}
        self._constructors: dict[str, Constructor] = {}
        self._lock = asyncio.Lock()
        #: per pipeline: its pause/resume/destroy calls in progress
        self._gates: dict[str, CallGate] = {}
        self._default_counters = Counters()
        #: what destroyed pipelines counted, so that totals never decrease
        self._retired_counters = Counters()
        self._retired_push_failed = 0
        self.outcomes = Outcomes(self._policy_of, self._counters_of, self.push)
        #: list, peek, replay and purge a pipeline's dead letters
        self.dead_letters = DeadLetters(self._dead_letter_store, self.push)
        pool = self.jobs_config.pool
        self.pool = WorkerPool(self.queue, self.app, self.outcomes,
                               num_workers=pool.num_workers,
                               exec_ttl=pool.supervisor.exec_ttl,
                               max_jobs=pool.max_jobs, pipelines=self._pipelines)
        self.started = False
        #: OpenTelemetry spans and trace propagation (set at start, see rrjobs.tracing)
        self.tracing: Tracing | None = None
        self._tracer_provider = tracer_provider
        self.stopped = False
        #: pipelines being restarted at their driver's request
        self._restarts: dict[str, asyncio.Task[None]] = {}
        #: per pipeline: when its driver was last rebuilt (loop time) and the
        #: wait that preceded it, so that a driver failing again at once backs off
        self._restarted: dict[str, tuple[float, float]] = {}
        #: pipelines whose new driver asked to restart while being rebuilt
        self._restart_again: set[str] = set()

    # -- helpers ---------------------------------------------------------------------------

    def _policy_of(self, pipeline: str) -> RetryPolicy:
        entry = self._pipelines.get(pipeline)
        return entry.policy if entry is not None else RetryPolicy()

    def _counters_of(self, pipeline: str) -> Counters:
        entry = self._pipelines.get(pipeline)
        return entry.counters if entry is not None else self._default_counters

    def _constructor(self, driver: str, where: str) -> Constructor:
        c = self._constructors.get(driver)
        if c is None:
            c = self.registry.constructor(driver, self.config, where=where)
            self._constructors[driver] = c
        return c

    def _entry(self, name: str) -> PipelineEntry:
        entry = self._pipelines.get(name)
        if entry is None:
            raise PipelineNotFoundError(f"pipeline {name!r} is not registered")
        return entry

    def _dead_letter_store(self, name: str) -> DeadLetterStore:
        entry = self._entry(name)
        try:
            return require_store(entry.driver, name)
        except CapabilityError as exc:
            moved_to = entry.policy.dead_letter
            if not moved_to:
                raise
            raise CapabilityError(
                f"{exc}; its failed jobs go to pipeline {moved_to!r} (retry.dead_letter) as "
                "ordinary jobs", driver=exc.driver, pipeline=exc.pipeline,
                capability=exc.capability) from None

    async def _op(self, coro: Any) -> Any:
        async with asyncio.timeout(self.timeout):
            return await coro

    def _check_dead_letters(self) -> None:
        for name, entry in self._pipelines.items():
            dl = entry.policy.dead_letter
            if dl and dl not in self._pipelines:
                raise ConfigError(f"jobs.pipelines.{name}.retry.dead_letter",
                                  f"unknown pipeline {dl!r}")
            if dl == name:
                raise ConfigError(f"jobs.pipelines.{name}.retry.dead_letter",
                                  "a pipeline cannot dead-letter to itself")

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Build every config pipeline, run those in ``consume``, start the workers."""
        if self.started:
            return
        self.started = True
        self.tracing = self.pool.tracing = Tracing.detect(self._tracer_provider)
        sem = asyncio.Semaphore(self.jobs_config.parallelism)

        async def build(name: str) -> None:
            pcfg = self.jobs_config.pipelines[name]
            key = f"jobs.pipelines.{name}.config"
            pipe = Pipeline(name=name, driver=pcfg.driver,
                            priority=pcfg.config.get("priority", DEFAULT_PRIORITY),
                            config=dict(pcfg.config), created_with_config=key)
            async with sem:
                ctor = self._constructor(pcfg.driver, f"jobs.pipelines.{name}.driver")
                driver = await self._op(ctor.driver_from_config(key, self.queue, pipe))
            driver.command_handler = self._command_handler(driver)
            self._pipelines[name] = PipelineEntry(
                name, pipe, driver, RetryPolicy.from_config(pcfg.retry), declared=False,
                timeout=pcfg.timeout)

        try:
            async with asyncio.TaskGroup() as tg:
                for name in self.jobs_config.pipelines:
                    tg.create_task(build(name))
        except BaseExceptionGroup as eg:
            await self._stop_drivers()
            raise _first(eg) from None
        try:
            self._check_dead_letters()
            for entry in self._pipelines.values():  # forwarding delays, consuming or not
                await self._op(entry.driver.serve())
            for name, entry in self._pipelines.items():
                if name in self.consume:
                    await self._op(entry.driver.run(entry.pipeline))
        except BaseException:
            await self._stop_drivers()
            raise
        await self.pool.start()
        self.app.attach_runtime(self)
        for hook in self.app.startup_hooks:
            await hook()
        log.info("jobs runtime started: %d pipelines, %d workers",
                 len(self._pipelines), self.pool.num_workers)

    async def stop(self) -> None:
        """Graceful stop: drain handlers, requeue the rest, then stop drivers."""
        if self.stopped:
            return
        self.stopped = True
        for hook in self.app.shutdown_hooks:
            try:
                await hook()
            except Exception:
                log.exception("shutdown hook failed")
        await self.pool.stop(self.jobs_config.pool.destroy_timeout)
        for task in list(self._restarts.values()):
            task.cancel()
        await asyncio.gather(*self._restarts.values(), return_exceptions=True)
        await self._stop_drivers()
        self.app.detach_runtime(self)
        log.info("jobs runtime stopped")

    async def _stop_drivers(self) -> None:
        sem = asyncio.Semaphore(self.jobs_config.parallelism)

        async def stop_one(entry: PipelineEntry) -> None:
            async with sem:
                try:
                    await self._op(entry.driver.stop())
                except Exception:
                    log.exception("stopping pipeline %r failed", entry.name)

        await asyncio.gather(*(stop_one(e) for e in self._pipelines.values()))

    # -- driver commands -------------------------------------------------------------------

    def _command_handler(self, driver: Driver) -> Callable[[str, str], None]:
        """The ``command_handler`` given to ``driver``: its requests, and only while
        it is its pipeline's driver."""
        def handle(pipeline: str, command: str) -> None:
            self._driver_command(pipeline, command, driver)
        return handle

    def _driver_command(self, pipeline: str, command: str, driver: Driver) -> None:
        """A driver's request (RoadRunner's driver → plugin commands): ``restart``
        stops the driver and builds the pipeline again, in the background. A
        request from a driver that is no longer the pipeline's is ignored; one
        made while the pipeline is being rebuilt is carried out after that."""
        if command != "restart":
            log.warning("pipeline %r: unknown driver command %r ignored", pipeline, command)
            return
        entry = self._pipelines.get(pipeline)
        if self.stopped or entry is None or entry.driver is not driver:
            return
        if pipeline in self._restarts:
            self._restart_again.add(pipeline)
            return
        task = asyncio.get_running_loop().create_task(
            self._restart(pipeline), name=f"rrjobs-restart-{pipeline}")
        self._restarts[pipeline] = task
        task.add_done_callback(lambda _t: self._restart_done(pipeline))

    def _restart_done(self, pipeline: str) -> None:
        self._restarts.pop(pipeline, None)
        if pipeline in self._restart_again:
            self._restart_again.discard(pipeline)
            entry = self._pipelines.get(pipeline)
            if entry is not None:
                self._driver_command(pipeline, "restart", entry.driver)

    async def _restart(self, name: str) -> None:
        """Rebuild pipeline ``name`` with a new driver (consuming again if it was),
        retrying with backoff (1 s doubling to 30 s) until it works, the pipeline
        is destroyed or the runtime stops.

        A driver that asks again within :data:`RESTART_SETTLE` seconds of its
        last rebuild (an error that comes straight back) is stopped and rebuilt
        only after a wait that doubles each time, from 1 s to 30 s."""
        entry = self._pipelines.get(name)
        if entry is None:
            return
        consuming = entry.driver.consuming
        loop = asyncio.get_running_loop()
        last, waited = self._restarted.get(name, (-RESTART_SETTLE, 0.0))
        backoff = min(max(waited * 2, 1.0), 30.0) if loop.time() - last < RESTART_SETTLE else 0.0
        delay = 1.0
        while not self.stopped and self._pipelines.get(name) is entry:
            try:
                await self._op(entry.driver.stop())
            except Exception:
                log.exception("pipeline %r: stopping the driver for a restart failed", name)
            if backoff:
                log.warning("pipeline %r asked to restart again %.1fs after its last restart; "
                            "rebuilding it in %.0fs", name, loop.time() - last, backoff)
                await asyncio.sleep(backoff)
                if self.stopped or self._pipelines.get(name) is not entry:
                    return
            self._restarted[name] = (loop.time(), backoff)
            backoff = 0.0
            try:
                ctor = self._constructor(entry.pipeline.driver(), f"pipeline {name}")
                if entry.declared:
                    driver = await self._op(ctor.driver_from_pipeline(entry.pipeline, self.queue))
                else:
                    key = f"jobs.pipelines.{name}.config"
                    driver = await self._op(ctor.driver_from_config(key, self.queue,
                                                                    entry.pipeline))
                driver.command_handler = self._command_handler(driver)
                if self.stopped or self._pipelines.get(name) is not entry:
                    await driver.stop()
                    return
                entry.driver = driver
                await self._op(driver.serve())
                if consuming:
                    await self._op(driver.run(entry.pipeline))
                log.warning("pipeline %r restarted at its driver's request", name)
                return
            except Exception as exc:
                log.error("restarting pipeline %r failed (%r); retrying in %.0fs",
                          name, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def __aenter__(self) -> Jobs:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- RPC operations ------------------------------------------------------------------------

    async def push(self, msg: Message) -> None:
        """Push one job to ``msg.pipeline``. Returns once its driver accepted it.

        With tracing on, the push is a ``publish`` span whose context is
        written into the job's headers (unless it carries one already)."""
        entry = self._pipelines.get(msg.pipeline)
        if entry is None:
            raise PipelineNotFoundError(f"pipeline {msg.pipeline!r} is not registered")
        stats = entry.single_pushes
        start = perf_counter()
        try:
            if self.tracing is None:
                await entry.driver.push(msg)
            else:
                with self.tracing.publish(msg.pipeline, entry.pipeline.driver(), (msg,)):
                    await entry.driver.push(msg)
        except BaseException:
            stats.failed += 1
            raise
        stats.observe(perf_counter() - start, 1)
        entry.counters.pushed += 1

    async def push_batch(self, msgs: Sequence[Message]) -> None:
        """Push several jobs; consecutive jobs of one pipeline go in one driver batch."""
        start = perf_counter()
        # groupby and attrgetter split the runs without a Python step per message
        for pipeline, run in groupby(msgs, _pipeline_of):
            entry = self._entry(pipeline)
            stats = entry.batch_pushes
            chunk = list(run)
            n = len(chunk)
            try:
                if self.tracing is None:
                    await entry.driver.push_batch(chunk)
                else:
                    with self.tracing.publish(entry.name, entry.pipeline.driver(), chunk):
                        await entry.driver.push_batch(chunk)
            except BaseException:
                stats.failed += n
                raise
            end = perf_counter()
            stats.observe(end - start, n)
            start = end
            entry.counters.pushed += n

    @asynccontextmanager
    async def _lifecycle_call(self, name: str) -> AsyncIterator[bool]:
        """One pause/resume/destroy of pipeline ``name``, after those made
        before it; yields whether one was in progress (see the class)."""
        gate = self._gates.setdefault(name, CallGate())
        try:
            async with gate.call() as waited:
                yield waited
        finally:
            if not gate.busy and self._gates.get(name) is gate:
                del self._gates[name]

    async def pause(self, names: Iterable[str]) -> None:
        for name in names:
            async with self._lifecycle_call(name) as waited:
                entry = self._pipelines.get(name)
                if waited and (entry is None or not entry.driver.consuming):
                    continue
                await self._op(self._entry(name).driver.pause(name))

    async def resume(self, names: Iterable[str]) -> None:
        """Resume consuming; also starts a pipeline that never ran."""
        for name in names:
            async with self._lifecycle_call(name) as waited:
                entry = self._pipelines.get(name)
                if waited and (entry is None or entry.driver.consuming):
                    continue
                await self._op(self._entry(name).driver.resume(name))

    def list(self) -> list[str]:
        return sorted(self._pipelines)

    def file_options(self, driver: str) -> tuple[str, ...]:
        """The options of ``driver`` that name a file it opens or creates
        (its constructor's ``file_options``)."""
        return self._constructor(driver, "declare.driver").file_options

    def pipeline(self, name: str) -> Pipeline:
        return self._entry(name).pipeline

    async def declare(self, options: Mapping[str, Any]) -> None:
        """Declare a pipeline at run time (RoadRunner's string map).

        Requires ``name`` and ``driver``. Runs it only if its name is in
        ``jobs.consume``; otherwise ``resume`` starts it. ``timeout`` is the
        pipeline's handler time limit (as ``jobs.pipelines.<name>.timeout``).
        """
        pipe = Pipeline({k: v for k, v in options.items() if k != "timeout"})
        remember_tree(pipe)  # masked in every log record from now on
        name = pipe.name()
        if not name:
            raise ConfigError("declare.name", "required key is missing")
        driver_name = pipe.driver()
        if not driver_name:
            raise ConfigError(f"declare.{name}.driver", "required key is missing")
        pipe["name"] = name
        try:
            pipe["priority"] = pipe.priority()
        except ValueError:
            raise ConfigError(f"declare.{name}.priority", "expected an integer") from None
        pipe["created_with_declare"] = "true"
        retry_raw: Any = pipe.get("retry")
        if isinstance(retry_raw, str):
            try:
                retry_raw = pipe.get_map("retry")
            except ValueError as exc:
                raise ConfigError(f"declare.{name}.retry", str(exc)) from None
        retry = validate(RetryConfig, retry_raw, f"declare.{name}.retry")
        try:
            timeout = parse_duration(options.get("timeout") or 0)
        except ValueError as exc:
            raise ConfigError(f"declare.{name}.timeout", str(exc)) from None
        if timeout < 0:
            raise ConfigError(f"declare.{name}.timeout", "must be ≥ 0")
        async with self._lock:
            if name in self._pipelines:
                raise PipelineExistsError(f"pipeline {name!r} already exists")
            if retry.dead_letter and retry.dead_letter not in self._pipelines:
                raise ConfigError(f"declare.{name}.retry.dead_letter",
                                  f"unknown pipeline {retry.dead_letter!r}")
            ctor = self._constructor(driver_name, f"declare.{name}.driver")
            driver = await self._op(ctor.driver_from_pipeline(pipe, self.queue))
            driver.command_handler = self._command_handler(driver)
            entry = PipelineEntry(name, pipe, driver, RetryPolicy.from_config(retry),
                                  declared=True, timeout=timeout)
            self._pipelines[name] = entry
            try:
                await self._op(driver.serve())
                if name in self.consume:
                    await self._op(driver.run(pipe))
            except BaseException:
                del self._pipelines[name]
                await driver.stop()
                raise

    async def destroy(self, names: Iterable[str]) -> builtins.list[str]:
        """Stop and remove pipelines; their queued jobs leave the priority queue
        (a durable broker keeps and later redelivers them)."""
        destroyed: list[str] = []
        for name in names:
            async with self._lifecycle_call(name) as waited:
                async with self._lock:
                    if waited and name not in self._pipelines:
                        continue
                    entry = self._entry(name)
                    del self._pipelines[name]
                    self._retired_counters.add(entry.counters)
                    self._retired_push_failed += (entry.single_pushes.failed
                                                  + entry.batch_pushes.failed)
                await self._op(entry.driver.stop())
                destroyed.append(name)
        return destroyed

    async def stat(self, state_timeout: float | None = None) -> builtins.list[PipelineStat]:
        """State of every pipeline; a failing ``state()`` sets ``error_message``.
        ``state_timeout`` bounds each driver's ``state()`` (default ``jobs.timeout``)."""
        limit = self.timeout if state_timeout is None else state_timeout

        async def one(entry: PipelineEntry) -> PipelineStat:
            try:
                async with asyncio.timeout(limit):
                    state = await entry.driver.state()
            except Exception as exc:
                state = State(pipeline=entry.name, driver=entry.driver.name,
                              priority=entry.pipeline.priority(),
                              error_message=str(exc) or type(exc).__name__)
            # a broker client's text, or a URL, may carry credentials
            state.queue, state.error_message = scrub(state.queue), scrub(state.error_message)
            return PipelineStat(state, entry.counters)

        return list(await asyncio.gather(*(one(e) for e in self.entries())))

    def entries(self) -> builtins.list[PipelineEntry]:
        """The registered pipelines, by name (a snapshot; read-only for observers)."""
        return [self._pipelines[n] for n in sorted(self._pipelines)]

    def recent_failures(self) -> builtins.list[Failure]:
        """The last handler failures (at most ``outcomes.RECENT_FAILURES``), newest first."""
        return builtins.list(reversed(self.outcomes.recent))

    def workers(self) -> builtins.list[WorkerInfo]:
        """Every worker of the pool, busy or idle, with its running job."""
        return self.pool.workers()

    def totals(self) -> tuple[Counters, int]:
        """The outcome counters and the failed pushes summed over every pipeline
        this runtime has had (destroyed ones included) and over jobs that finished
        after their pipeline was gone: they never decrease."""
        total = Counters()
        total.add(self._retired_counters)
        total.add(self._default_counters)
        push_failed = self._retired_push_failed
        for entry in self._pipelines.values():
            total.add(entry.counters)
            push_failed += entry.single_pushes.failed + entry.batch_pushes.failed
        return total, push_failed


def _first(eg: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first leaf exception of a task group's failure, raised as itself."""
    exc: BaseException = eg
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
