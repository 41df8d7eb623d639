"""What a driver gives ``rrjobs bench``: the spec a baseline runs, its result,
and :class:`DriverBench`, the object a driver registers.

A driver registers its bench entry as a third-party driver does, in its
distribution's metadata::

    [project.entry-points."rrjobs.bench"]
    my_awesome_driver = "my_awesome_driver.bench:BENCH"

The entry point names a :class:`DriverBench` (or a bare baseline function).
It is loaded only when ``rrjobs bench`` runs that driver. This module imports
nothing outside ``rrjobs.core``, so a baseline needs only the core and the
broker's own client (:mod:`rrjobs.bench` runs the runtime phase).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

PushMode = Literal["batch", "single"]


@dataclass(frozen=True, slots=True)
class BenchSpec:
    """One benchmark, as the runtime phase and the baseline both see it.

    Attributes:
        driver: the driver name.
        pipeline: the pipeline name.
        jobs: how many jobs to push and consume.
        workers: consumers (the runtime's ``pool.num_workers``; the baseline's
            consumer tasks).
        batch: messages per ``push_batch`` call (per loop yield with
            ``push="single"``).
        producers: concurrent producer tasks; each pushes its share of ``jobs``.
        push: ``"batch"`` (``push_batch``) or ``"single"`` (one ``push`` per job).
        payload_size: bytes of payload per job.
        options: the pipeline's driver options (``jobs.pipelines.<p>.config``).
        config: the whole configuration tree the runtime is built from (driver
            sections such as ``amqp:`` included), for baselines that need
            connection settings.
        gc_freeze: move everything allocated before the clock starts into the
            garbage collector's permanent generation (:func:`gc.freeze`, as a
            server may do after start-up), for both phases, so that full
            collections do not walk the imported modules again and again.
    """

    driver: str
    pipeline: str
    jobs: int
    workers: int
    batch: int = 1000
    producers: int = 1
    push: PushMode = "batch"
    payload_size: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)
    config: Mapping[str, Any] = field(default_factory=dict)
    gc_freeze: bool = False

    def shares(self) -> list[int]:
        """How many jobs each producer pushes (they add up to ``jobs``)."""
        base, extra = divmod(self.jobs, self.producers)
        return [base + (1 if i < extra else 0) for i in range(self.producers)]


@dataclass(frozen=True, slots=True)
class PhaseResult:
    """One timed phase: how long it took (wall clock and this process's CPU
    time) and how many items went through."""

    seconds: float
    processed: int
    cpu_seconds: float = 0.0

    @property
    def jobs_per_s(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    @property
    def jobs_per_cpu_s(self) -> float:
        return self.processed / self.cpu_seconds if self.cpu_seconds > 0 else 0.0


BaselineFn = Callable[[BenchSpec], Awaitable[PhaseResult]]
#: ``() -> (config sections, pipeline options)`` for ``--driver`` without ``--config``.
DefaultsFn = Callable[[], tuple[Mapping[str, Any], Mapping[str, Any]]]


@dataclass(frozen=True, slots=True)
class DriverBench:
    """A driver's part of ``rrjobs bench``.

    Attributes:
        baseline: times the same number of items as the runtime phase with the
            broker's bare client and no rrjobs code, with the pipeline's own
            settings (``spec.options``), so that the ratio compares like with like.
        defaults: the config sections and pipeline options the driver benches
            with when no ``--config`` is given (e.g. the broker address from the
            driver's ``RRJOBS_*`` variable); ``--option`` values override the
            options. ``None``: none.
        raw_client: the baseline is the broker's own client in a bare loop; the
            result then also names its figure ``raw_client_jobs_per_s``.
    """

    baseline: BaselineFn
    defaults: DefaultsFn | None = None
    raw_client: bool = False
