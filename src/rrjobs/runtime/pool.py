"""The worker pool: ``num_workers`` tasks that take jobs from the priority
queue and run their handlers.

* Concurrency is bounded by ``num_workers`` (a worker takes the next job only
  when its handler finished), so the priority queue — not the workers — holds
  the backlog, and priorities stay meaningful.
* Per-job timeouts and lease extension are enforced by one watchdog task that
  ticks over the workers, so the hot path pays nothing for them.
* A job's time limit is its handler's ``timeout=``, else its pipeline's
  ``timeout``, else ``pool.supervisor.exec_ttl`` (none by default). Past it an
  async handler is cancelled; a sync handler's thread is abandoned (see
  :mod:`rrjobs.runtime.threads`); either way the job fails (retry policy).
* Sync handlers run in :class:`~rrjobs.runtime.threads.HandlerThreads`, where
  a hung handler does not reduce the capacity; process handlers in a process
  pool (``max_jobs`` = tasks per child process).

Graceful stop (``stop``): stop taking jobs; let running handlers finish
within the drain timeout; cancel the rest and hand their jobs back
(``nack(requeue=True)``), logging their ids in one line. A handler that
ignores its cancellation for :data:`CANCEL_GRACE` seconds more is left behind
(:attr:`WorkerPool.stuck`). The runtime stops drivers only after this.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import signal
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from rrjobs.core.base import BaseDriver
from rrjobs.core.errors import HandlerTimeoutError, NoHandlerError, PoisonMessageError
from rrjobs.core.headers import RR_ATTEMPTS, RR_TIMEOUT, attempts_of
from rrjobs.core.job import Job
from rrjobs.core.queue import PriorityQueue
from rrjobs.runtime.app import App, HandlerSpec, JobData
from rrjobs.runtime.context import timeout_of
from rrjobs.runtime.logcontext import CURRENT_JOB, register_worker
from rrjobs.runtime.outcomes import Outcomes
from rrjobs.runtime.stats import Counters
from rrjobs.runtime.threads import HandlerThreads
from rrjobs.tracing import Tracing

log = logging.getLogger("rrjobs.runtime")

#: Seconds a cancelled handler has, at stop, to let its cancellation through.
CANCEL_GRACE = 1.0


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """What one worker does now (a snapshot for observers: the dashboard)."""

    worker: int
    #: the running job, or empty strings when idle
    job_id: str = ""
    name: str = ""
    pipeline: str = ""
    #: seconds the running job's handler has run
    seconds: float = 0.0

    @property
    def busy(self) -> bool:
        return bool(self.job_id or self.name)


@dataclass(slots=True, eq=False)
class _Slot:
    """What one worker is doing."""

    task: asyncio.Task[None] | None = None
    job: Job | None = None
    started: float = 0.0
    deadline: float = 0.0
    next_lease: float = 0.0
    timed_out: bool = False
    #: the job being handled, its outcome included (what its log records are about)
    current: Job | None = None
    #: the current job's attempt, 1-based
    attempt: int = 0
    #: the handler ignored its timeout's cancellation: its job was failed and
    #: another worker took this one's place; it ends after this job
    retired: bool = False
    lease_task: asyncio.Task[None] | None = None


def _process_child_init() -> None:
    """In a process-pool child: forget the parent's signal handling. A forked
    child shares the event loop's signal wakeup descriptor, so a signal sent
    to it (a Ctrl-C to the process group) would reach the parent's loop as a
    second signal and force its stop. The parent stops the children."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _expected(job: Job, what: str, exc: BaseException) -> bool:
    """A settlement of ``job`` that failed as its driver expects (an outage, a lost ack):
    the driver logged it calmly (:meth:`BaseDriver.settlement_failed`)."""
    settler = job.settler
    return isinstance(settler, BaseDriver) and settler.settlement_failed(job, what, exc)


class PipelineView(Protocol):
    """What the pool uses of a pipeline (the runtime's pipeline entry)."""

    @property
    def timeout(self) -> float:
        """The pipeline's handler time limit in seconds (``0``: ``exec_ttl``)."""

    @property
    def counters(self) -> Counters:
        """Its outcome counters: the pool counts a success there itself
        (:meth:`Outcomes.count_ok` when the pipeline is gone or an observer
        listens)."""


def _context_of(job: Job, attempt: int) -> contextvars.Context:
    """A copy of this context in which log records are about ``job``
    (:data:`~rrjobs.runtime.logcontext.CURRENT_JOB`), for work done on the
    job's behalf outside its worker task."""
    context = contextvars.copy_context()
    context.run(CURRENT_JOB.set, (job.id, job.pipeline, attempt))
    return context


def _timeout_error(job: Job, ttl: float) -> HandlerTimeoutError:
    return HandlerTimeoutError(f"handler for {job.name!r} ran longer than {ttl:g}s")


class WorkerPool:
    """Runs handlers for jobs from ``queue``. Start once, stop once."""

    def __init__(self, queue: PriorityQueue, app: App, outcomes: Outcomes, *,
                 num_workers: int, exec_ttl: float = 0.0, max_jobs: int = 0,
                 tracing: Tracing | None = None,
                 pipelines: Mapping[str, PipelineView] | None = None) -> None:
        """``pipelines``: the runtime's pipelines by name (a live mapping),
        for their handler time limits (``timeout``, ``0``: ``exec_ttl``)."""
        self.queue = queue
        #: OpenTelemetry spans per job, when the application set up tracing
        self.tracing = tracing
        self.app = app
        self.outcomes = outcomes
        self.num_workers = num_workers
        self.exec_ttl = exec_ttl
        self.max_jobs = max_jobs
        self._pipelines: Mapping[str, PipelineView] = {} if pipelines is None else pipelines
        #: the app's handlers by job name (its live mapping; the fallback is resolved apart)
        self._specs = app.by_name
        self._slots = [_Slot() for _ in range(num_workers)]
        self.threads = HandlerThreads(num_workers)
        #: jobs whose handler was still running after stop's cancel and grace
        self.stuck: list[Job] = []
        self._processes_abandoned = 0
        #: workers retired while their handler ignores its cancellation
        self._retired: set[_Slot] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._processes: ProcessPoolExecutor | None = None
        self._watchdog: asyncio.Task[None] | None = None
        self._closing = False
        self._started = False
        #: the shortest job lease seen; the watchdog ticks often enough for it
        self._min_lease = 0.0
        #: the shortest handler time limit seen; the watchdog ticks often enough for it
        self._min_ttl = 0.0
        self._rearm = asyncio.Event()

    @property
    def busy(self) -> int:
        """Workers running a handler now."""
        return sum(1 for s in self._slots if s.job is not None)

    @property
    def left_behind(self) -> int:
        """Handlers still running that nothing waits for any more: async ones
        that ignored their cancellation (at a timeout or at stop), abandoned
        sync threads, and process-pool jobs given up on."""
        return (len(self.stuck) + len(self._retired) + self.threads.hung
                + self._processes_abandoned)

    def running_jobs(self) -> list[Job]:
        return [s.job for s in self._slots if s.job is not None]

    def workers(self) -> list[WorkerInfo]:
        """Every worker, busy or idle, with its running job and for how long."""
        now = time.monotonic()
        out: list[WorkerInfo] = []
        for i, slot in enumerate(self._slots):
            job = slot.job
            if job is None:
                out.append(WorkerInfo(i))
            else:
                out.append(WorkerInfo(i, job.id, job.name, job.pipeline,
                                      max(0.0, now - slot.started)))
        return out

    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        loop = asyncio.get_running_loop()
        if self.app.needs_processes():
            self._processes = ProcessPoolExecutor(
                os.cpu_count() or 1, max_tasks_per_child=self.max_jobs or None,
                initializer=_process_child_init,
            )
        for i, slot in enumerate(self._slots):
            slot.task = loop.create_task(self._worker(slot), name=f"rrjobs-worker-{i}")
        self._watchdog = loop.create_task(self._watch(), name="rrjobs-watchdog")

    # -- the hot path ------------------------------------------------------------------

    async def _worker(self, slot: _Slot) -> None:
        task = asyncio.current_task()
        assert task is not None
        register_worker(task, slot)  # its log records are about slot.current
        queue = self.queue
        while not self._closing and not slot.retired:
            job = queue.extract_nowait()
            if job is None:
                slot.current = None  # idle: about no job
                try:
                    job = await queue.extract_min()
                except asyncio.CancelledError:
                    if self._closing and slot.job is None:
                        return
                    raise
            if self.tracing is None:
                await self._execute(slot, job, True)
            else:
                await self._execute_traced(slot, job)
        slot.current = None
        if slot.retired:
            self._retired.discard(slot)
            log.warning("the handler that ignored its cancellation finished; its worker ends")

    async def _execute_traced(self, slot: _Slot, job: Job) -> None:
        """:meth:`_execute` of one job, inside its ``process`` span."""
        assert self.tracing is not None
        with self.tracing.process(job):
            await self._execute(slot, job, False)

    async def _without_handler(self, job: Job) -> HandlerSpec | None:
        """The fallback handler of a job that has no handler of its own, or
        ``None`` when the job was failed instead (it is unreadable, or there
        is no fallback)."""
        if job.failure is not None:  # unreadable: dead-lettered without a handler
            await self._settle_failure(job, PoisonMessageError(job.failure))
            return None
        try:
            return self.app.resolve(job.name)
        except NoHandlerError as exc:
            await self._settle_failure(job, exc)
            return None

    async def _execute(self, slot: _Slot, job: Job, more: bool) -> None:
        """Handle ``job``; with ``more``, then the jobs queued after it too,
        while there are any: one coroutine for a run of jobs, not one per job.

        Between jobs a slot's ``deadline`` is ``0.0`` and ``timed_out`` is
        ``False`` (each path that changes them puts them back), so a job
        without a time limit or a lease stores only what names it."""
        extract, specs, pipelines, outcomes = (self.queue.extract_nowait, self._specs,
                                               self._pipelines, self.outcomes)
        exec_ttl, monotonic = self.exec_ttl, time.monotonic
        while True:
            headers = job.headers
            slot.attempt = attempts_of(headers) + 1 if headers and RR_ATTEMPTS in headers else 1
            slot.current = job
            spec = specs.get(job.name)
            if spec is None or job.failure is not None:
                spec = await self._without_handler(job)
            if spec is not None:
                # the pipeline's entry now: its time limit, and its counters for the
                # outcome (a pipeline destroyed meanwhile counts on the entry it had)
                entry = pipelines.get(job.pipeline)
                ttl = spec.timeout or (entry.timeout if entry is not None else 0.0) or exec_ttl
                if headers and RR_TIMEOUT in headers:  # the producer's per-job timeout
                    ttl = timeout_of(headers) or ttl
                now = slot.started = monotonic()
                if ttl > 0.0:
                    slot.deadline = now + ttl
                    if not self._min_ttl or ttl < self._min_ttl:
                        self._min_ttl = ttl
                        self._rearm.set()  # wake the watchdog to tick often enough
                lease = job.lease
                if lease:
                    slot.next_lease = now + lease / 2
                    if not self._min_lease or lease < self._min_lease:
                        self._min_lease = lease
                        self._rearm.set()
                slot.job = job
                try:
                    if job.auto_ack:
                        await job.ack()
                    if spec.executor != "async":
                        await self._run_sync(slot, spec, job)
                    elif spec.signature is None:
                        await spec.func(job)
                    else:
                        await spec.func(*spec.signature.args(job, outcomes.context))
                    if slot.timed_out:  # the handler swallowed the watchdog's cancel, finished
                        task = asyncio.current_task()
                        if task is not None:
                            task.uncancel()
                        slot.timed_out = False
                except asyncio.CancelledError:
                    slot.deadline = 0.0
                    task = asyncio.current_task()
                    if slot.timed_out and task is not None:
                        task.uncancel()
                        slot.timed_out = False
                        if not slot.retired:  # a retired slot's job was failed already
                            await self._settle_failure(job, _timeout_error(job, ttl))
                    else:
                        await asyncio.shield(outcomes.abandoned(job))
                        raise
                except Exception as exc:
                    slot.deadline = 0.0
                    slot.timed_out = False  # cancelled by the watchdog, it raised something else
                    if not slot.retired:
                        await self._settle_failure(job, exc)
                else:
                    if not slot.retired:
                        # Outcomes.succeeded without a coroutine (a synchronous ack)
                        # and counted here (Outcomes.count_ok when it must tell more)
                        try:
                            if job.settled is None and not job.ack_nowait():
                                slot.deadline = 0.0  # the watchdog leaves the ack alone
                                await job.ack()
                            if entry is not None and outcomes.observer is None:
                                entry.counters.ok += 1
                            else:
                                outcomes.count_ok(job)
                        except Exception as exc:
                            if not _expected(job, "acknowledging", exc):
                                log.exception("acknowledging job %s (%s) failed; the broker "
                                              "will redeliver it", job.id, job.name)
                finally:
                    slot.job = None
                    if ttl > 0.0:
                        slot.deadline = 0.0
                    if slot.lease_task is not None:
                        slot.lease_task.cancel()
                        slot.lease_task = None
            if not more or self._closing or slot.retired:
                return
            following = extract()
            if following is None:
                return
            job = following

    def _retire(self, slot: _Slot, job: Job, now: float) -> None:
        """``slot``'s handler ignored its cancellation: fail its job now, and
        put a new worker in its place (the old one ends with the handler)."""
        slot.retired = True
        self._retired.add(slot)
        new = _Slot()
        self._slots[self._slots.index(slot)] = new
        loop = asyncio.get_running_loop()
        new.task = loop.create_task(self._worker(new), name="rrjobs-worker-replacement")
        log.error("the handler of job %s (%s) ignored its cancellation for %.3gs; it is left "
                  "running, the job fails, and a new worker takes its place (%d left running)",
                  job.id, job.name, now - slot.deadline, len(self._retired))
        failing = loop.create_task(self._settle_failure(
            job, _timeout_error(job, slot.deadline - slot.started)),
            context=_context_of(job, slot.attempt))
        self._background.add(failing)
        failing.add_done_callback(self._background.discard)

    async def _run_sync(self, slot: _Slot, spec: HandlerSpec, job: Job) -> None:
        loop = asyncio.get_running_loop()
        sig = spec.signature
        if spec.executor == "process":
            assert self._processes is not None
            args = (JobData.of(job),) if sig is None else sig.args(job, self.outcomes.context)
            try:
                await loop.run_in_executor(self._processes, spec.func, *args)
            except asyncio.CancelledError:
                self._processes_abandoned += 1  # the child process runs it to its end
                raise
        else:
            args = (job,) if sig is None else sig.args(job, self.outcomes.context)
            # the thread logs with the job (CURRENT_JOB in a copy of this context)
            await self.threads.run(_context_of(job, slot.attempt).run, spec.func, *args,
                                   label=f"job {job.id} ({job.name})")

    async def _settle_failure(self, job: Job, exc: BaseException) -> None:
        if self.tracing is not None:
            self.tracing.failed(exc)
        try:
            await self.outcomes.failed(job, exc)
        except Exception as error:
            if not _expected(job, "settling failed", error):
                log.exception("settling failed job %s (%s) failed; the broker will redeliver "
                              "it", job.id, job.name)

    # -- timeouts and leases -------------------------------------------------------------

    async def _watch(self) -> None:
        """Tick over the workers: cancel handlers past their deadline, extend
        leases of long-running jobs."""
        while True:
            try:
                await asyncio.wait_for(self._rearm.wait(), self._tick())
            except TimeoutError:
                pass
            self._rearm.clear()
            now = time.monotonic()
            for slot in list(self._slots):
                job = slot.job
                if job is None:
                    continue
                if slot.timed_out and now >= slot.deadline + CANCEL_GRACE and not self._closing:
                    self._retire(slot, job, now)
                    continue
                if slot.deadline and now >= slot.deadline and not slot.timed_out:
                    slot.timed_out = True
                    log.error("job %s (%s) exceeded its timeout; cancelling its handler",
                              job.id, job.name)
                    if slot.task is not None:
                        slot.task.cancel()
                    continue
                lease = getattr(job, "lease", None)
                if lease and slot.next_lease and now >= slot.next_lease and (
                    slot.lease_task is None or slot.lease_task.done()
                ):
                    slot.next_lease = now + lease / 2
                    slot.lease_task = asyncio.get_running_loop().create_task(
                        self._extend(job, lease)
                    )

    def _tick(self) -> float:
        """How often to look: often enough for ``exec_ttl`` and for the shortest
        lease seen (a lease is extended at half-life, checked 8 times per lease)."""
        tick = 1.0
        if self.exec_ttl > 0:
            tick = min(tick, self.exec_ttl / 10)
        if self._min_ttl > 0:
            tick = min(tick, self._min_ttl / 10)
        if self._min_lease > 0:
            tick = min(tick, self._min_lease / 8)
        return max(0.05, tick)

    @staticmethod
    async def _extend(job: Job, lease: float) -> None:
        try:
            await job.extend_lease(lease)
        except Exception as exc:
            if not _expected(job, "extending the lease of", exc):
                log.warning("extending the lease of job %s (%s) failed: %r", job.id, job.name,
                            exc)

    # -- stop ---------------------------------------------------------------------------------

    async def stop(self, drain_timeout: float) -> None:
        """Stop taking jobs, drain running handlers for up to ``drain_timeout`` s, then
        cancel what is left and requeue its jobs."""
        self._closing = True
        tasks = [s.task for s in (*self._slots, *self._retired) if s.task is not None]
        for slot in self._slots:
            if slot.job is None and slot.task is not None:
                slot.task.cancel()  # idle: waiting in extract_min, holds no job
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=drain_timeout)
            if pending:
                running = [s.job for s in self._slots if s.task in pending and s.job is not None]
                if running:
                    log.warning("%d handlers still running after %.3gs; handing their jobs "
                                "back for redelivery: %s", len(running), drain_timeout,
                                ", ".join(f"{j.id} ({j.name})" for j in running))
                for t in pending:
                    t.cancel()
                _, stuck = await asyncio.wait(pending, timeout=CANCEL_GRACE)
                for slot in self._slots:  # retired ones are counted already
                    if slot.task in stuck and slot.job is not None:
                        self.stuck.append(slot.job)
                        await self.outcomes.abandoned(slot.job)
                if self.stuck:
                    log.error("%d async handlers ignored their cancellation; left behind: %s",
                              len(self.stuck),
                              ", ".join(f"{j.id} ({j.name})" for j in self.stuck))
        await asyncio.gather(*self._background, return_exceptions=True)
        if self._watchdog is not None:
            self._watchdog.cancel()
            try:
                await self._watchdog
            except asyncio.CancelledError:
                pass
        self.threads.shutdown()
        if self._processes is not None:
            children = list((getattr(self._processes, "_processes", None) or {}).values())
            self._processes.shutdown(wait=False, cancel_futures=True)
            if self._processes_abandoned:  # hung children: nothing else would end them
                for child in children:
                    with contextlib.suppress(Exception):
                        child.kill()
