"""``JobData``: a picklable snapshot of a job, given to process-pool handlers."""

from __future__ import annotations

from dataclasses import dataclass

from rrjobs.core.headers import Headers, attempts_of
from rrjobs.core.job import Job


@dataclass(frozen=True, slots=True)
class JobData:
    """A picklable snapshot of a job, given to process-pool handlers."""

    id: str
    name: str
    payload: bytes
    headers: Headers
    pipeline: str
    priority: int

    @property
    def attempts(self) -> int:
        return attempts_of(self.headers)

    @classmethod
    def of(cls, job: Job) -> JobData:
        return cls(job.id, job.name, job.payload, job.headers, job.pipeline, job.priority)
