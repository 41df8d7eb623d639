"""The job a log record is about: set by the worker pool around each handler
(and its outcome), read by :class:`JobLogFilter` so that every record logged
meanwhile — the runtime's and the handler's own — carries ``job_id``,
``pipeline`` and ``attempt``."""

from __future__ import annotations

import logging
from contextvars import ContextVar

#: ``(job id, pipeline, attempt)`` of the job being handled in this context
CURRENT_JOB: ContextVar[tuple[str, str, int] | None] = ContextVar("rrjobs_job", default=None)

JOB_FIELDS = ("job_id", "pipeline", "attempt")


class JobLogFilter(logging.Filter):
    """Adds ``job_id``, ``pipeline`` and ``attempt`` to records logged while a
    job is handled (values given with ``extra=`` win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = CURRENT_JOB.get()
        if job is not None:
            for name, value in zip(JOB_FIELDS, job, strict=True):
                if not hasattr(record, name):
                    setattr(record, name, value)
        return True
