"""The machinery behind the suite: one :class:`Harness` per test.

The harness builds pipelines out of a :class:`~rrjobs.testing.DriverFactory`
and tears every one of them down when the test ends, pass or fail. A
:class:`Pipe` is one driver on its own private :class:`PriorityQueue`, with the
test as the consumer (it takes jobs from the queue and settles them by hand);
:meth:`Harness.runtime` builds a whole :class:`~rrjobs.Jobs` runtime for the
tests that go through handlers.

Every wait here is event driven with a timeout (the priority queue, an
``asyncio.Condition``), except :meth:`Harness.eventually`, which polls a
driver's ``state()`` because states have no events.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, TypeVar

import pytest

from rrjobs.config import Config
from rrjobs.core.capabilities import Capabilities
from rrjobs.core.errors import UnsupportedFeatureError
from rrjobs.core.headers import DEDUCED_BY_RR
from rrjobs.core.job import Job
from rrjobs.core.pipeline import DEFAULT_PRIORITY, Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.state import State
from rrjobs.runtime.app import App
from rrjobs.runtime.jobs import Jobs
from rrjobs.testing.factory import DriverFactory, HookUnsupported, declare_value
from rrjobs.testing.pipe import Pipe as Pipe
from rrjobs.testing.pipe import Via
from rrjobs.testing.pipe import poll as poll

S = TypeVar("S")

#: The job name of what :meth:`Harness.publish_foreign` pushes on a driver
#: without a wire format.
PUSHED = "conformance.pushed"

#: Slack for "not before" checks: event-loop timers may fire a hair early.
CLOCK_SLACK = 0.01


class Recorder:
    """An :class:`App` whose fallback handler records every delivered job.

    ``behaviour(job, delivery_number)`` runs after recording (raise to fail the
    job, wait on an event to hold it). Waits are event driven.
    """

    def __init__(self, behaviour: Callable[[Job, int], Awaitable[None]] | None = None, *,
                 timeout: float | None = None) -> None:
        self.jobs: list[Job] = []
        self.app = App("rrjobs-conformance")
        self._behaviour = behaviour
        self._changed = asyncio.Condition()
        self.app.fallback(self._handle, timeout=timeout)

    async def _handle(self, job: Job) -> None:
        async with self._changed:
            self.jobs.append(job)
            number = len(self.jobs)
            self._changed.notify_all()
        if self._behaviour is not None:
            await self._behaviour(job, number)

    async def wait_for(self, count: int, within: float) -> list[Job]:
        """Wait until at least ``count`` jobs were handled; fail after ``within`` s."""
        try:
            async with asyncio.timeout(within):
                async with self._changed:
                    await self._changed.wait_for(lambda: len(self.jobs) >= count)
        except TimeoutError:
            raise AssertionError(
                f"{len(self.jobs)} of {count} jobs were handled within {within:g}s"
            ) from None
        return list(self.jobs)

    async def expect_count(self, count: int, within: float) -> None:
        """Fail if more than ``count`` jobs get handled within ``within`` seconds."""
        try:
            async with asyncio.timeout(within):
                async with self._changed:
                    await self._changed.wait_for(lambda: len(self.jobs) > count)
        except TimeoutError:
            return
        raise AssertionError(
            f"expected {count} handled jobs, got {len(self.jobs)}: "
            f"{[(j.name, j.id, j.pipeline) for j in self.jobs]}"
        )


class Harness:
    """Builds a test's pipelines and runtimes; tears them all down at the end."""

    def __init__(self, factory: DriverFactory) -> None:
        self.factory = factory
        self.names: list[str] = []
        self._pipes: list[Pipe] = []
        self._runtimes: list[Jobs] = []

    async def __aenter__(self) -> Harness:
        await self.factory.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        limit = self.factory.delivery_timeout
        try:
            for jobs in reversed(self._runtimes):
                await _quietly(jobs.stop(), limit)
            for pipe in reversed(self._pipes):
                await _quietly(pipe.driver.stop(), limit)
            await self.factory.cleanup(list(self.names))
        finally:
            await self.factory.close()

    # -- names and options ----------------------------------------------------------------

    def new_name(self, hint: str = "p") -> str:
        """A pipeline name unique to this test run."""
        name = f"rrjobs-{hint}-{uuid.uuid4().hex[:12]}"
        self.names.append(name)
        return name

    def options(self, name: str, *, lease: float | None = None,
                extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The factory's options for ``name`` plus lease and test extras."""
        opts = dict(self.factory.pipeline_options(name))
        if lease is not None:
            opts.update(self.factory.lease_options(lease))
        if extra:
            opts.update(extra)
        return opts

    def short_lease(self) -> float | None:
        """The factory's short ack deadline when it can configure one."""
        deadline = self.factory.ack_deadline
        if deadline is None:
            return None
        try:
            self.factory.lease_options(deadline)
        except HookUnsupported:
            return None
        return deadline

    def config(self, pipelines: Mapping[str, Mapping[str, Any]] | None = None, *,
               consume: Iterable[str] = (), num_workers: int = 4,
               destroy_timeout: float = 1.0, exec_ttl: float = 0.0) -> Config:
        """A :class:`Config` with the factory's global sections and ``pipelines``
        (name → full pipeline mapping: ``driver``, ``config``, ``retry``)."""
        data: dict[str, Any] = dict(self.factory.global_config())
        data["jobs"] = {
            "pool": {"num_workers": num_workers, "destroy_timeout": destroy_timeout,
                     "supervisor": {"exec_ttl": exec_ttl}},
            "consume": list(consume),
            "pipelines": {k: dict(v) for k, v in (pipelines or {}).items()},
        }
        return Config(data, source="rrjobs.testing")

    # -- pipes -----------------------------------------------------------------------------

    async def pipe(self, *, via: Via = "config", name: str | None = None,
                   priority: int | None = None, lease: float | None = None,
                   extra: Mapping[str, Any] | None = None, run: bool = True,
                   queue_size: int | None = None) -> Pipe:
        """Build a driver for a fresh pipeline, as the runtime would.

        ``via="config"`` goes through ``driver_from_config`` with a
        :class:`Config`; ``via="declare"`` through ``driver_from_pipeline`` with
        the string options ``Declare`` sends. ``run`` starts consuming (``run``
        for a config pipeline, ``resume`` for a declared one, as the runtime).
        ``queue_size`` bounds the pipe's priority queue (``jobs.pipeline_size``).
        """
        queue = PriorityQueue() if queue_size is None else PriorityQueue(queue_size)
        name = name or self.new_name()
        if via == "config":
            options = self.options(name, lease=lease, extra=extra)
            if priority is not None:
                options["priority"] = priority
            pipe = await self._from_config(name, options, queue)
        else:
            options = self.factory.declare_options(name)
            if lease is not None:
                options.update({k: declare_value(v)
                                for k, v in self.factory.lease_options(lease).items()})
            if extra:
                options.update({k: declare_value(v) for k, v in extra.items()})
            if priority is not None:
                options["priority"] = str(priority)
            pipe = await self._from_declare(name, options, queue)
        if run:
            if via == "config":
                await pipe.run()
            else:
                await pipe.resume()
        return pipe

    async def _from_config(self, name: str, options: dict[str, Any],
                           queue: PriorityQueue) -> Pipe:
        config = self.config({name: {"driver": self.factory.driver, "config": options}})
        key = f"jobs.pipelines.{name}.config"
        pipeline = Pipeline(name=name, driver=self.factory.driver,
                            priority=options.get("priority", DEFAULT_PRIORITY),
                            config=dict(options), created_with_config=key)
        ctor = self.factory.registry().constructor(self.factory.driver, config)
        driver = await ctor.driver_from_config(key, queue, pipeline)
        return self._track(Pipe(self.factory, name, driver, queue, pipeline, options, "config"))

    async def _from_declare(self, name: str, options: dict[str, Any],
                            queue: PriorityQueue) -> Pipe:
        pipeline = Pipeline({**options, "name": name, "driver": self.factory.driver})
        with contextlib.suppress(ValueError):  # else left as sent: the driver must refuse it
            pipeline["priority"] = pipeline.priority()
        pipeline["created_with_declare"] = "true"
        ctor = self.factory.registry().constructor(self.factory.driver, self.config())
        driver = await ctor.driver_from_pipeline(pipeline, queue)
        return self._track(Pipe(self.factory, name, driver, queue, pipeline, options, "declare"))

    def declared(self, pipe: Pipe) -> Capabilities:
        """What the constructor declares for ``pipe``'s options before any driver is
        built (``Constructor.declared_capabilities``: what ``rrjobs serve --processes``
        reads, opening nothing)."""
        if pipe.via == "config":
            config = self.config({pipe.name: {"driver": self.factory.driver,
                                              "config": dict(pipe.options)}})
            ctor = self.factory.registry().constructor(self.factory.driver, config)
            return ctor.declared_capabilities(f"jobs.pipelines.{pipe.name}.config")
        ctor = self.factory.registry().constructor(self.factory.driver, self.config())
        return ctor.declared_capabilities(pipe.pipeline)

    def _track(self, pipe: Pipe) -> Pipe:
        self._pipes.append(pipe)
        return pipe

    async def second_consumer(self, pipe: Pipe, *, run: bool = True) -> Pipe:
        """Another driver on ``pipe``'s broker queue (same name and options),
        on its own priority queue. Only for a factory whose ``shared_broker``
        is true: a test checks :meth:`assert_not_shared` otherwise."""
        if not self.factory.shared_broker:
            raise AssertionError(
                f"driver {self.factory.driver!r}: a second driver does not share the broker "
                "queue (factory.shared_broker is false); the test must check "
                "Harness.assert_not_shared instead")
        return await self._same_options(pipe, run=run)

    async def _same_options(self, pipe: Pipe, *, run: bool) -> Pipe:
        queue = PriorityQueue(pipe.queue.maxsize)
        if pipe.via == "config":
            other = await self._from_config(pipe.name, dict(pipe.options), queue)
        else:
            other = await self._from_declare(pipe.name, dict(pipe.options), queue)
        if run:
            if pipe.via == "config":
                await other.run()
            else:
                await other.resume()
        return other

    async def assert_not_shared(self, pipe: Pipe, what: str) -> None:
        """What ``shared_broker = False`` declares: another driver built with
        ``pipe``'s name and options consumes none of ``pipe``'s jobs (``what``
        says which)."""
        assert not self.factory.shared_broker
        other = await self._same_options(pipe, run=True)
        try:
            await other.expect_nothing()
        except AssertionError as exc:
            raise AssertionError(f"{what}: a second driver with the same options got one of "
                                 f"them, though factory.shared_broker is false: {exc}") from None
        await other.stop()

    # -- from outside the driver ---------------------------------------------------------------

    async def publish_foreign(self, pipe: Pipe, body: bytes,
                              headers: Mapping[str, str] | None = None) -> str:
        """Put ``body`` with native ``headers`` on ``pipe``'s queue as no rrjobs
        producer would (``factory.publish_raw``); returns the job name it must
        arrive with, ``deduced_by_rr``. A driver with no wire format
        (``factory.wire`` false) can be given jobs only by a push: the body and
        headers are pushed as a job of :data:`PUSHED` and arrive as such."""
        if self.factory.wire:
            await hook(self.factory.publish_raw(pipe, body, headers or {}))
            return DEDUCED_BY_RR
        await pipe.push(PUSHED, body, headers={k: [v] for k, v in (headers or {}).items()})
        return PUSHED

    # -- runtimes ----------------------------------------------------------------------------

    def pipeline_entry(self, name: str, *, retry: Mapping[str, Any] | None = None,
                       lease: float | None = None,
                       extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """``jobs.pipelines.<name>`` for this driver."""
        entry: dict[str, Any] = {"driver": self.factory.driver,
                                 "config": self.options(name, lease=lease, extra=extra)}
        if retry is not None:
            entry["retry"] = dict(retry)
        return entry

    def runtime(self, app: App, pipelines: Mapping[str, Mapping[str, Any]] | None = None, *,
                consume: Iterable[str] = (), num_workers: int = 4,
                exec_ttl: float = 0.0) -> Jobs:
        """A :class:`Jobs` runtime (not started) over ``pipelines``
        (name → :meth:`pipeline_entry`); stopped at the end of the test."""
        config = self.config(pipelines, consume=consume, num_workers=num_workers,
                             exec_ttl=exec_ttl)
        jobs = Jobs(config, app, registry=self.factory.registry())
        self._runtimes.append(jobs)
        return jobs

    def declaration(self, name: str, **extra: str) -> dict[str, str]:
        """The string map ``Jobs.declare`` takes for a new pipeline ``name``."""
        options = self.factory.declare_options(name)
        options.update(extra)
        return {**options, "name": name, "driver": self.factory.driver}

    # -- waiting -----------------------------------------------------------------------------

    async def eventually(self, pipe: Pipe, check: Callable[[State], bool],
                         what: str, within: float | None = None) -> State:
        """Poll ``pipe.state()`` until ``check`` holds; fail with the last state."""
        limit = self.factory.delivery_timeout if within is None else within
        loop = asyncio.get_running_loop()
        end = loop.time() + limit
        while True:
            state = await pipe.state()
            if check(state):
                return state
            if loop.time() > end:
                raise AssertionError(f"{pipe}: state never showed {what}: {state!r}")
            await asyncio.sleep(0.02)

    # -- capabilities -------------------------------------------------------------------------

    async def declares(self, pipe: Pipe, capability: str) -> bool:
        """Whether the driver declares ``capability``. When it does not, first
        assert that the driver refuses what the capability would allow (see
        :data:`REFUSALS`), so the test's other branch checks the refusal. A
        lease extension is refused per job (:func:`refuses_extension`)."""
        if getattr(pipe.capabilities, capability):
            return True
        refusal = REFUSALS.get(capability)
        if refusal is None:
            raise TypeError(f"{capability!r} has no refusal to check: the test must check "
                            "what the driver does without it")
        await refusal(pipe)
        return False


async def refuses_delays(pipe: Pipe) -> None:
    """Without ``delay``: a delayed push, ``nack`` and ``requeue`` each raise
    :class:`UnsupportedFeatureError`; nothing is ignored, the job stays unsettled."""
    with pytest.raises(UnsupportedFeatureError):
        await pipe.push(payload=b"delayed", delay=1)
    sent = await pipe.push(payload=b"refused-delay")
    job = await pipe.receive()
    assert job.id == sent.id
    with pytest.raises(UnsupportedFeatureError):
        await job.nack(requeue=True, delay=1)
    with pytest.raises(UnsupportedFeatureError):
        await job.requeue(delay=1)
    assert job.settled is None, "a refused delay must leave the job unsettled"
    await job.ack()


async def refuses_pause(pipe: Pipe) -> None:
    """Without ``pause``: ``pause`` raises :class:`UnsupportedFeatureError`."""
    with pytest.raises(UnsupportedFeatureError):
        await pipe.pause()


async def refuses_headers(pipe: Pipe) -> None:
    """Without ``headers``: a job with headers is refused, never sent without them."""
    with pytest.raises(UnsupportedFeatureError):
        await pipe.push(payload=b"headers", headers={"x-refused": ["1", "2"]})


async def refuses_extension(job: Job) -> None:
    """``job``'s driver declares no ``lease_extension``: extending is refused."""
    with pytest.raises(UnsupportedFeatureError):
        await job.extend_lease(30)
    assert job.settled is None, "a refused extension must leave the job unsettled"


#: The refusal each capability stands for, checked by :meth:`Harness.declares`
#: on a driver that does not declare it.
REFUSALS: dict[str, Callable[[Pipe], Awaitable[None]]] = {
    "delay": refuses_delays,
    "pause": refuses_pause,
    "headers": refuses_headers,
}


async def hook(call: Awaitable[S]) -> S:
    """Await a factory hook the test needs; a :class:`HookUnsupported` fails
    the test with its reason (the suite skips nothing)."""
    try:
        return await call
    except HookUnsupported as exc:
        raise AssertionError(f"the factory cannot provide a hook this test needs: {exc}") from None


async def _quietly(aw: Awaitable[Any], within: float) -> None:
    # Teardown must not hide the test's own failure, nor hang on a broken driver.
    with contextlib.suppress(Exception):
        async with asyncio.timeout(within):
            await aw


def now() -> float:
    """The clock the timing checks use."""
    return time.monotonic()


AsyncCase = Callable[[Any, Harness], Awaitable[None]]


def conformance_case(fn: AsyncCase) -> Callable[[Any, DriverFactory], None]:
    """Turn ``async def test_x(self, h: Harness)`` into a pytest test.

    The test requests the ``driver_factory`` fixture, runs in a fresh event
    loop inside a :class:`Harness` and within ``factory.test_timeout``. It needs
    no asyncio plugin mode, so the suite runs the same under pytest-asyncio's
    strict and auto modes.
    """

    def test(self: Any, driver_factory: DriverFactory) -> None:
        if not isinstance(driver_factory, DriverFactory):
            raise TypeError("the driver_factory fixture must return a "
                            f"rrjobs.testing.DriverFactory, not {type(driver_factory).__name__}")
        asyncio.run(_run_case(fn, self, driver_factory))

    test.__name__ = fn.__name__
    test.__qualname__ = fn.__qualname__
    test.__doc__ = fn.__doc__
    test.__module__ = fn.__module__
    # Report the async function's source location, but keep the wrapper's
    # signature (``driver_factory``) for fixture resolution.
    test.__signature__ = inspect.signature(test)  # type: ignore[attr-defined]
    test.__wrapped__ = fn  # type: ignore[attr-defined]
    return test


async def _run_case(fn: AsyncCase, self: Any, factory: DriverFactory) -> None:
    async with Harness(factory) as h:
        budget = asyncio.timeout(factory.test_timeout)
        try:
            async with budget:
                await fn(self, h)
        except TimeoutError as exc:
            if budget.expired():
                raise AssertionError(
                    f"the test did not finish within {factory.test_timeout:g}s"
                ) from exc
            raise
