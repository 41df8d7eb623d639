"""The job a log record is about, read by :class:`JobLogFilter` so that every
record logged while a job is handled — the runtime's and the handler's own —
carries ``job_id``, ``pipeline`` and ``attempt``.

Two sources, so that the worker pool's hot path sets nothing per job:

* the worker tasks: the pool registers each worker task once with what it
  is handling (:func:`register_worker`); a record logged in a worker task
  (an async handler, the job's outcome, the driver's settlement) is about
  the worker's current job;
* :data:`CURRENT_JOB`, a context variable, for code that runs elsewhere on a
  job's behalf: the pool sets it in the context of a sync handler's thread
  and of a failure settled outside its worker.

A task that a handler starts is neither: it may outlive the job, so its
records carry no job.
"""

from __future__ import annotations

import asyncio
import logging
from contextvars import ContextVar
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from rrjobs.core.job import Job

#: ``(job id, pipeline, attempt)`` of the job being handled in this context
CURRENT_JOB: ContextVar[tuple[str, str, int] | None] = ContextVar("rrjobs_job", default=None)

JOB_FIELDS = ("job_id", "pipeline", "attempt")


class Handling(Protocol):
    """What a worker is handling now (the worker pool's slot)."""

    @property
    def current(self) -> Job | None:
        """The job, or ``None`` between jobs."""

    @property
    def attempt(self) -> int:
        """The job's attempt, 1-based."""


#: worker task → what it is handling (registered once per worker task)
_WORKERS: dict[asyncio.Task[None], Handling] = {}


def register_worker(task: asyncio.Task[None], handling: Handling) -> None:
    """Records logged in ``task`` are about ``handling``'s current job; until
    the task is done (it unregisters itself then)."""
    _WORKERS[task] = handling
    task.add_done_callback(_unregister)


def _unregister(task: asyncio.Task[None]) -> None:
    _WORKERS.pop(task, None)


def current_job() -> tuple[str, str, int] | None:
    """``(job id, pipeline, attempt)`` of the job being handled here, or ``None``."""
    job = CURRENT_JOB.get()
    if job is not None or not _WORKERS:
        return job
    loop = asyncio._get_running_loop()
    if loop is None:
        return None
    task = asyncio.current_task(loop)
    handling = _WORKERS.get(task) if task is not None else None
    if handling is None:
        return None
    running = handling.current
    if running is None:
        return None
    return running.id, running.pipeline, handling.attempt


class JobLogFilter(logging.Filter):
    """Adds ``job_id``, ``pipeline`` and ``attempt`` to records logged while a
    job is handled (values given with ``extra=`` win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = current_job()
        if job is not None:
            for name, value in zip(JOB_FIELDS, job, strict=True):
                if not hasattr(record, name):
                    setattr(record, name, value)
        return True
