"""The driver's options: a global section and per-pipeline options.

Both are pydantic models derived from rrjobs' ``StrictModel``: an unknown key
is an error, and every error names its exact key path
(``jobs.pipelines.test-1.config.prefetch: must be ≥ 1``). Nothing is accepted
and then ignored.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from rrjobs.core.options import Duration, StrictModel

PositiveDuration = Annotated[Duration, Field(gt=0)]


class Settings(StrictModel):
    """The optional top-level ``my_awesome_driver:`` section.

    Attributes:
        dir: the spool directory; each pipeline's queue is a subdirectory.
            Relative paths are relative to the working directory.
        fsync: flush every change to disk before it is acknowledged (a pushed
            job survives a power loss, not only a crash of the process).
    """

    dir: str = Field(default=".rrjobs/my_awesome_driver", min_length=1)
    fsync: bool = True


class Options(StrictModel):
    """``jobs.pipelines.<name>.config`` for ``driver: my_awesome_driver``.

    Attributes:
        priority: the pipeline priority; jobs pushed with priority 0 get it.
        prefetch: how many of the pipeline's jobs may be reserved by this
            consumer at once (in the priority queue or in a handler).
        queue: the queue directory under ``dir``; defaults to the pipeline name.
        visibility_timeout: how long a delivered job stays reserved before it
            returns to the queue; the worker pool extends it for long handlers.
        poll_interval: how often the consumer looks for jobs pushed by other
            processes (jobs pushed through this driver wake it at once).
        dead_letter: ``nack()`` moves the job to the queue's ``dead/``
            directory; ``false`` deletes it.
    """

    priority: int = 10
    prefetch: int = Field(default=100, ge=1)
    queue: str = Field(default="", pattern=r"^([A-Za-z0-9_-][A-Za-z0-9._-]*)?$")
    visibility_timeout: PositiveDuration = 30.0
    poll_interval: PositiveDuration = 0.1
    dead_letter: bool = True
