"""Exceptions a handler raises to choose its job's outcome.

* return normally → ``ack``;
* ``raise Reject("why")`` → dead-letter at once, never retried;
* ``raise Retry(delay=30)`` → requeue after 30 s; it counts as a failed
  attempt, so once the job has failed ``max_attempts`` times it is
  dead-lettered like any other failure;
* any other exception → the pipeline's retry policy (backoff, then dead-letter).
"""

from __future__ import annotations

import math

from rrjobs.core.errors import RRJobsError


class Reject(RRJobsError):
    """Dead-letter the job now, without retrying (a permanent failure).

    The message is the error recorded on the dead-lettered job
    (``rr_error``)."""


class Retry(RRJobsError):
    """Retry the job after ``delay`` seconds (``None``: the pipeline's backoff).

    The attempt counts: a job that has failed ``max_attempts`` times is
    dead-lettered instead of retried."""

    def __init__(self, message: str = "", *, delay: float | None = None) -> None:
        if delay is not None and (not math.isfinite(delay) or delay < 0):
            raise ValueError("Retry(delay=...) must be a finite number of seconds >= 0")
        super().__init__(message or (f"retry in {delay:g}s" if delay is not None else "retry"))
        self.delay = delay


class PayloadValidationError(Reject):
    """The payload does not match the handler's annotated type: the job is
    dead-lettered with the validation errors, never retried (retrying cannot
    change the payload)."""
