"""Options of the ``sqlite`` driver (and of its ``boltdb`` alias).

RoadRunner's BoltDB keys keep their names and defaults (``file: rr.db``,
``priority: 10``, ``prefetch: 1000``; ``permissions`` is ``0600``), so a RoadRunner
pipeline section runs unchanged; the other keys are the SQLite driver's own.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, model_validator

from rrjobs.core.options import Duration, StrictModel

#: SQLite's ``synchronous`` settings the driver accepts (``off`` is refused:
#: a pushed job must survive a crash of the operating system).
Synchronous = Literal["full", "extra", "normal"]


def parse_permissions(value: Any) -> int:
    """A file mode from an int (YAML ``0755`` is already octal) or an octal
    string (``"0755"``, ``"755"``, ``"0o755"``, as RoadRunner's Declare sends)."""
    if isinstance(value, bool):
        raise ValueError("expected a file mode such as 0755, got a boolean")
    if not isinstance(value, int | str):
        raise ValueError(f"expected a file mode such as 0755, got {type(value).__name__}")
    if isinstance(value, int):
        mode = value
    else:
        try:
            mode = int(value.strip().lower().removeprefix("0o"), 8)
        except ValueError:
            raise ValueError(f"expected an octal file mode such as '0755', got {value!r}") from None
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"file mode {mode:#o} is out of range (0000-7777)")
    return mode


def _synchronous(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip().lower()
        if value in ("off", "0"):
            raise ValueError("synchronous=off is not accepted: a pushed job must survive a "
                             "crash (use normal or full)")
    return value


def _at_least_one_second(value: float) -> float:
    if value < 1.0:
        raise ValueError("must be at least 1s")
    return value


class SQLiteOptions(StrictModel):
    """``jobs.pipelines.<name>.config`` for ``driver: sqlite`` (or ``boltdb``);
    each key is described in ``docs/drivers/sqlite.md``. ``synchronous`` is
    SQLite's setting in WAL mode (pipelines sharing a file must agree);
    ``lease`` is how long a reservation lasts without renewal."""

    file: str = Field(default="rr.db", min_length=1)
    permissions: Annotated[int, BeforeValidator(parse_permissions)] = 0o600
    priority: int = 10
    prefetch: int = Field(default=1000, ge=1)
    synchronous: Annotated[Synchronous, BeforeValidator(_synchronous)] = "full"
    lease: Annotated[Duration, AfterValidator(_at_least_one_second)] = 30.0
    poll_interval: Duration = 1.0
    dead_letter: bool = False
    push_journal: bool = False

    @model_validator(mode="after")
    def _journal_needs_normal(self) -> SQLiteOptions:
        if self.push_journal and self.synchronous != "normal":
            raise ValueError("push_journal: true needs synchronous: normal (a journaled push "
                             "survives a crash of the process, not of the OS, as a commit "
                             f"at normal does; got synchronous: {self.synchronous})")
        return self
