"""Options of the ``memory`` driver (RoadRunner's names and defaults)."""

from __future__ import annotations

from pydantic import Field

from rrjobs.core.options import StrictModel


class MemoryOptions(StrictModel):
    """``jobs.pipelines.<name>.config`` for ``driver: memory``.

    Attributes:
        priority: the pipeline priority; jobs pushed with priority 0 get it.
        prefetch: how many of the pipeline's jobs may be in the priority queue
            or in a handler at once. Further jobs wait in the driver.
        dead_letter_size: how many dead letters (jobs given up with
            ``nack()``) the pipeline keeps in memory for ``rrjobs dlq``; when
            full, the oldest goes. ``0`` (the default) keeps none: ``nack()``
            drops the job, as RoadRunner's memory driver does.
    """

    priority: int = 10
    prefetch: int = Field(default=100_000, ge=1)
    dead_letter_size: int = Field(default=0, ge=0)
