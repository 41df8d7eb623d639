"""Handler outcomes: what happens to a job after its handler.

One place decides, for every driver alike:

* the handler returned and did not settle the job → ``ack``;
* the handler settled the job itself (``ack``/``nack``/``requeue``) → that wins;
* the handler raised (or timed out) → the pipeline's :class:`RetryPolicy`:
  requeue with exponential backoff and an ``rr_attempts`` header until
  ``max_attempts`` failures, then dead-letter: to the ``dead_letter`` pipeline
  when one is set, otherwise ``nack(requeue=False)``, which the driver maps to
  its native dead-letter (or a logged drop where it has none). Nothing is lost
  silently and nothing loops forever;
* the handler raised :class:`~rrjobs.Reject`, its payload failed
  validation, or the message could not be read (``PoisonMessageError``) →
  dead-letter at once, whatever attempts are left;
* the handler raised :class:`~rrjobs.Retry` → requeue after its ``delay`` (the
  policy's backoff when ``None``), counting a failed attempt.

A job's ``rr_max_attempts`` header (set at push) overrides its pipeline's
``max_attempts``. An ``observer``, when set, is told every outcome (the
application testing harness records them).

Every failure is also remembered in a bounded ring buffer
(:attr:`Outcomes.recent`, the last :data:`RECENT_FAILURES`) for operators: the
dashboard's "Recent failures". Only the failure path pays for it; a job that
succeeds costs nothing more.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from rrjobs.config import RetryConfig
from rrjobs.core.errors import NoHandlerError, PoisonMessageError
from rrjobs.core.headers import RR_ATTEMPTS, dead_letter_headers, merge_headers
from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.runtime.context import JobContext, max_attempts_of
from rrjobs.runtime.control import Reject, Retry
from rrjobs.runtime.stats import Counters

log = logging.getLogger("rrjobs.runtime")


def _trace(exc: BaseException) -> BaseException | None:
    """What a failure's log line carries as ``exc_info``: the handler's
    exception with its traceback, logged once, on the one line that reports
    the failure; none for outcomes a handler chose (``Reject``, ``Retry``) or
    failures without a handler's frames (no handler, unreadable job, timeout)."""
    if isinstance(exc, Reject | Retry | PoisonMessageError | NoHandlerError) \
            or exc.__traceback__ is None:
        return None
    return exc

PushFn = Callable[[Message], Awaitable[None]]
#: What became of one run of a handler: ``ok``; ``retried`` (requeued);
#: ``dead_lettered`` (moved to the dead-letter pipeline or the driver's own);
#: ``dropped`` (dead-lettered on a driver that has no store for it); ``failed``
#: (raised, but not retried: an ``auto_ack`` job, or one the handler had settled).
OutcomeKind = Literal["ok", "retried", "dead_lettered", "dropped", "failed"]
Observer = Callable[[Job, OutcomeKind, BaseException | None], None]

#: Failures kept in :attr:`Outcomes.recent`.
RECENT_FAILURES = 100
#: Characters of a traceback kept per failure (its end: the innermost frames).
TRACEBACK_LIMIT = 8000


@dataclass(frozen=True, slots=True)
class Failure:
    """One handler failure, as text only (it holds neither the job nor the exception)."""

    #: when it failed (Unix time)
    time: float
    job_id: str
    name: str
    pipeline: str
    #: the failed attempt, 1-based
    attempt: int
    #: what the runtime did about it: ``retried in 2s``, ``dead-lettered to failed``, ...
    outcome: str
    #: the exception's last line (``ValueError: bad address``)
    error: str
    #: the formatted traceback, cut to its last :data:`TRACEBACK_LIMIT` characters
    traceback: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def describe_failure(job: Job, exc: BaseException, attempt: int, outcome: str) -> Failure:
    """A :class:`Failure` record of ``job`` failing with ``exc``."""
    tb = "".join(traceback.format_exception(exc)).rstrip()
    if len(tb) > TRACEBACK_LIMIT:
        tb = "…" + tb[-TRACEBACK_LIMIT:]
    return Failure(time=time.time(), job_id=job.id, name=job.name, pipeline=job.pipeline,
                   attempt=attempt, outcome=outcome, error=_error_line(exc), traceback=tb)


def _error_line(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(exc)).strip()


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How a failing job is retried. See :class:`rrjobs.config.RetryConfig`."""

    max_attempts: int = 3
    backoff: float = 1.0
    multiplier: float = 2.0
    max_backoff: float = 60.0
    dead_letter: str | None = None

    @classmethod
    def from_config(cls, cfg: RetryConfig) -> RetryPolicy:
        return cls(cfg.max_attempts, cfg.backoff, cfg.multiplier, cfg.max_backoff,
                   cfg.dead_letter)

    def delay_for(self, failures: int) -> float:
        """The backoff before retry number ``failures`` (1-based)."""
        return min(self.max_backoff, self.backoff * self.multiplier ** max(0, failures - 1))


class Outcomes:
    """Applies outcomes. Concurrency-safe on one loop (no awaits between a
    check and its update)."""

    def __init__(self, policy_of: Callable[[str], RetryPolicy],
                 counters_of: Callable[[str], Counters], push: PushFn) -> None:
        self._policy_of = policy_of
        self._counters_of = counters_of
        self._push = push
        #: told every outcome when set (see :data:`Observer`)
        self.observer: Observer | None = None
        #: False: retries are requeued at once, whatever the backoff or
        #: ``Retry(delay=...)`` says (the application testing harness)
        self.delay_retries = True
        #: the last :data:`RECENT_FAILURES` failures, oldest first
        self.recent: deque[Failure] = deque(maxlen=RECENT_FAILURES)
        #: failures recorded since the start (tells an observer that ``recent`` changed)
        self.failures_seen = 0

    def _remember(self, job: Job, exc: BaseException, attempt: int, outcome: str) -> None:
        try:
            self.recent.append(describe_failure(job, exc, attempt, outcome))
            self.failures_seen += 1
        except Exception:  # a record must never change the job's outcome
            log.exception("recording the failure of job %s failed", job.id)

    def context(self, job: Job) -> JobContext:
        """The :class:`JobContext` of ``job`` on its pipeline."""
        return JobContext.of(job, self._policy_of(job.pipeline).max_attempts)

    def _observe(self, job: Job, kind: OutcomeKind, exc: BaseException | None) -> None:
        observer = self.observer
        if observer is not None:
            try:
                observer(job, kind, exc)
            except Exception:
                log.exception("the outcome observer failed")

    async def succeeded(self, job: Job) -> None:
        """The handler returned: ack the job (unless it settled itself) and count it."""
        if job.settled is None:
            await job.ack()
        self.count_ok(job)

    def count_ok(self, job: Job) -> None:
        """Count a job as succeeded whose handler returned and which is settled
        (what :meth:`succeeded` does after the ack; the worker pool's hot path)."""
        self._counters_of(job.pipeline).ok += 1
        if self.observer is not None:
            self._observe(job, "ok", None)

    async def failed(self, job: Job, exc: BaseException) -> None:
        counters = self._counters_of(job.pipeline)
        counters.failed += 1
        failures = job.attempts + 1
        if job.settled is not None:
            # The handler settled the job and then raised: its decision stands.
            self._remember(job, exc, failures, f"kept the handler's {job.settled}")
            log.warning("job %s (%s) on pipeline %r raised after settling (%s): %r",
                        job.id, job.name, job.pipeline, job.settled, exc, exc_info=_trace(exc))
            self._observe(job, "failed", exc)
            return
        if job.auto_ack:
            self._remember(job, exc, failures, "not retried (auto_ack)")
            log.error("auto_ack job %s (%s) on pipeline %r failed and is not retried: %r",
                      job.id, job.name, job.pipeline, exc, exc_info=_trace(exc))
            self._observe(job, "failed", exc)
            return
        policy = self._policy_of(job.pipeline)
        if isinstance(exc, Reject | PoisonMessageError):
            await self.dead_letter(job, exc, failures, policy)
            return
        max_attempts = max_attempts_of(job.headers) or policy.max_attempts
        if failures < max_attempts:
            delay = policy.delay_for(failures)
            if isinstance(exc, Retry) and exc.delay is not None:
                delay = exc.delay
            caps = job.capabilities
            if not caps.delay or not self.delay_retries:
                delay = 0.0
            elif caps.max_delay is not None:
                delay = min(delay, caps.max_delay)
            self._remember(job, exc, failures, f"retried in {delay:.3g}s")
            log.info("job %s (%s) on pipeline %r failed (attempt %d of %d), retrying in "
                     "%.3gs: %r", job.id, job.name, job.pipeline, failures, max_attempts, delay,
                     exc, exc_info=_trace(exc))
            await job.requeue({RR_ATTEMPTS: [str(failures)]}, delay)
            counters.retried += 1
            self._observe(job, "retried", exc)
            return
        await self.dead_letter(job, exc, failures, policy)

    async def dead_letter(self, job: Job, exc: BaseException, failures: int,
                          policy: RetryPolicy) -> None:
        """Give ``job`` up after ``failures`` attempts: a copy to the policy's
        dead-letter pipeline, else ``nack(requeue=False)`` (the driver's
        dead letter, or a drop). Either way the dead letter carries
        :func:`~rrjobs.core.headers.dead_letter_headers`, and one ERROR line
        names the job, its pipeline and the error, with the handler's traceback."""
        counters = self._counters_of(job.pipeline)
        error = _error_line(exc)
        caps = job.capabilities
        if policy.dead_letter:
            outcome = f"dead-lettered to {policy.dead_letter}"
        elif caps.dead_letter:
            outcome = f"dead-lettered by the {job.driver_name} driver"
        else:
            outcome = "dropped (no dead-letter)"
        self._remember(job, exc, failures, outcome)
        letter = dead_letter_headers(job.pipeline, failures, exc)
        if policy.dead_letter:
            await self._push(Message(name=job.name, payload=job.payload, id=job.id,
                                     headers=merge_headers(job.headers, letter),
                                     pipeline=policy.dead_letter))
            await job.ack()
            counters.dead_lettered += 1
            log.error("job %s (%s) on pipeline %r failed %d times, moved to pipeline %r: %s",
                      job.id, job.name, job.pipeline, failures, policy.dead_letter, error,
                      exc_info=_trace(exc))
            self._observe(job, "dead_lettered", exc)
            return
        await job.nack(requeue=False, headers=letter)
        if caps.dead_letter:
            counters.dead_lettered += 1
            log.error("job %s (%s) on pipeline %r failed %d times, dead-lettered by the %s "
                      "driver: %s", job.id, job.name, job.pipeline, failures, job.driver_name,
                      error, exc_info=_trace(exc))
            self._observe(job, "dead_lettered", exc)
        else:
            counters.dropped += 1
            log.error("job %s (%s) on pipeline %r failed %d times and was DROPPED (the "
                      "pipeline has no retry.dead_letter and the %s driver no dead-letter "
                      "store): %s", job.id, job.name, job.pipeline, failures, job.driver_name,
                      error, exc_info=_trace(exc))
            self._observe(job, "dropped", exc)

    async def abandoned(self, job: Job) -> None:
        """A job whose handler did not finish before stop: give it back to the broker."""
        if job.settled is not None or job.auto_ack:
            return
        try:
            await job.nack(requeue=True)
        except Exception as exc:  # the broker redelivers unsettled jobs anyway
            log.warning("could not requeue unfinished job %s (%s) at stop: %r",
                        job.id, job.name, exc)
