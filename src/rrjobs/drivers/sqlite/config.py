"""Options of the ``sqlite`` driver (and of its ``boltdb`` alias).

RoadRunner's BoltDB keys keep their names and defaults (``file: rr.db``,
``priority: 10``, ``prefetch: 1000``; ``permissions`` is ``0600``), so a RoadRunner
pipeline section runs unchanged; the other keys are the SQLite driver's own.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from rrjobs.core.options import Duration, StrictModel

#: SQLite's ``synchronous`` settings the driver accepts (``off`` is refused:
#: a pushed job must survive a crash of the operating system).
Synchronous = Literal["full", "extra", "normal"]


def parse_permissions(value: Any) -> int:
    """A file mode from an int (YAML ``0755`` is already octal) or an octal
    string (``"0755"``, ``"755"``, ``"0o755"``, as RoadRunner's Declare sends)."""
    if isinstance(value, bool):
        raise ValueError("expected a file mode such as 0755, got a boolean")
    if isinstance(value, int):
        mode = value
    elif isinstance(value, str):
        text = value.strip().lower().removeprefix("0o")
        try:
            mode = int(text, 8)
        except ValueError:
            raise ValueError(f"expected an octal file mode such as '0755', got {value!r}") from None
    else:
        raise ValueError(f"expected a file mode such as 0755, got {type(value).__name__}")
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"file mode {mode:#o} is out of range (0000-7777)")
    return mode


class SQLiteOptions(StrictModel):
    """``jobs.pipelines.<name>.config`` for ``driver: sqlite`` (or ``boltdb``).

    Attributes:
        file: the database file, relative to the working directory. Several
            pipelines may name the same file; each keeps its own jobs.
        permissions: the mode given to the file when the driver creates it
            (an existing file keeps its mode). Write it octal: ``0755`` in
            YAML, ``"0755"`` in a Declare string map.
        priority: the pipeline priority; jobs pushed with priority 0 get it.
        prefetch: how many of the pipeline's jobs this process may hold
            reserved at once (in the priority queue or in a handler).
        synchronous: SQLite's ``synchronous`` setting in WAL mode. ``full``
            (default) makes every commit durable across an operating-system
            crash or power loss before ``push``/``ack`` return; ``normal``
            survives a crash of the process but may lose the last commits on
            power loss; ``extra`` adds a directory sync. Pipelines sharing a
            file must agree.
        lease: how long a reservation lasts without renewal. The driver renews
            the leases of jobs waiting in the priority queue, the worker pool
            those of running jobs (every ``lease/2`` on a one-second tick: keep
            it at 10 s or more); a job whose lease runs out returns to the
            queue. The jobs of a process that died return when the pipeline
            starts again or, at the latest, when their lease expires.
        poll_interval: how often an idle consumer looks for jobs written by
            another process (``0`` = never). Jobs pushed through this process,
            delays and lease expiries wake the consumer exactly, without polling.
        dead_letter: ``nack(requeue=False)`` moves the job into the file's
            dead-letter table instead of deleting it.
    """

    file: str = Field(default="rr.db", min_length=1)
    permissions: int = 0o600
    priority: int = 10
    prefetch: int = Field(default=1000, ge=1)
    synchronous: Synchronous = "full"
    lease: Duration = 30.0
    poll_interval: Duration = 1.0
    dead_letter: bool = False

    @field_validator("permissions", mode="before")
    @classmethod
    def _permissions(cls, value: Any) -> int:
        return parse_permissions(value)

    @field_validator("synchronous", mode="before")
    @classmethod
    def _synchronous(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().lower()
            if value in ("off", "0"):
                raise ValueError(
                    "synchronous=off is not accepted: a pushed job must survive a crash "
                    "(use normal or full)"
                )
        return value

    @field_validator("lease")
    @classmethod
    def _lease(cls, value: float) -> float:
        if value < 1.0:
            raise ValueError("must be at least 1s")
        return value
