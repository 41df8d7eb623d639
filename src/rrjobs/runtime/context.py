"""``JobContext``: what a handler may want to know about the job it runs.

A handler gets it by declaring a parameter annotated ``rrjobs.JobContext``::

    @app.handler("email.send")
    async def send(payload: EmailPayload, ctx: rrjobs.JobContext) -> None:
        if ctx.attempt > 1: ...

Everything in it is carried in the job's headers, so it survives every broker
and a RoadRunner producer's jobs have it too (with the fields rrjobs' own
producers add left ``None``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from rrjobs.core.headers import (
    RR_MAX_ATTEMPTS,
    RR_PUSHED_AT,
    RR_TIMEOUT,
    Headers,
    attempts_of,
)
from rrjobs.core.job import Job

N = TypeVar("N", int, float)


def _first(headers: Headers, key: str) -> str | None:
    values = headers.get(key)
    return values[0] if values else None


def _positive(headers: Headers, key: str, convert: Callable[[str], N]) -> N | None:
    """The header's first value converted, when it is a finite number > 0."""
    raw = _first(headers, key)
    if raw is None:
        return None
    try:
        value = convert(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def max_attempts_of(headers: Headers) -> int | None:
    """The per-job ``rr_max_attempts`` override, or ``None`` when absent or not
    a positive integer (a bad value never stops a consumer)."""
    return _positive(headers, RR_MAX_ATTEMPTS, int)


def timeout_of(headers: Headers) -> float | None:
    """The per-job ``rr_timeout`` override in seconds, or ``None`` when absent or bad."""
    return _positive(headers, RR_TIMEOUT, float)


def pushed_at_of(headers: Headers) -> datetime | None:
    """When the job was first pushed (``rr_pushed_at``), or ``None``."""
    raw = _first(headers, RR_PUSHED_AT)
    if raw is None:
        return None
    try:
        return datetime.fromtimestamp(float(raw), UTC)
    except (ValueError, OverflowError, OSError):
        return None


@dataclass(frozen=True, slots=True)
class JobContext:
    """The job a handler runs, as plain data.

    Attributes:
        id: the job id.
        name: the job name (selects the handler).
        pipeline: the pipeline it was consumed from.
        priority: its priority (lower runs first).
        headers: its headers (several values per key), ``rr_*`` ones included.
        attempt: this run's number, 1 for the first delivery (failed attempts
            so far, ``rr_attempts``, plus one).
        max_attempts: how many attempts the job gets before it is
            dead-lettered: the job's ``rr_max_attempts`` when it has one,
            otherwise its pipeline's ``retry.max_attempts``.
        timeout: the job's own handler timeout (``rr_timeout``), or ``None``.
        first_pushed_at: when a producer first pushed it (``rr_pushed_at``,
            kept across retries), or ``None`` for jobs from producers that do
            not write it (RoadRunner's).
    """

    id: str
    name: str
    pipeline: str
    priority: int
    headers: Headers
    attempt: int
    max_attempts: int
    timeout: float | None
    first_pushed_at: datetime | None

    @property
    def last_attempt(self) -> bool:
        """True when a failure of this run dead-letters the job."""
        return self.attempt >= self.max_attempts

    @classmethod
    def of(cls, job: Job, pipeline_max_attempts: int) -> JobContext:
        """The context of ``job`` on a pipeline whose policy allows
        ``pipeline_max_attempts`` attempts."""
        headers = job.headers
        return cls(
            id=job.id,
            name=job.name,
            pipeline=job.pipeline,
            priority=job.priority,
            headers={k: list(v) for k, v in headers.items()},
            attempt=attempts_of(headers) + 1,
            max_attempts=max_attempts_of(headers) or pipeline_max_attempts,
            timeout=timeout_of(headers),
            first_pushed_at=pushed_at_of(headers),
        )
