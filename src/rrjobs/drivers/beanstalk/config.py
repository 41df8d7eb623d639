"""Options of the ``beanstalk`` driver, with RoadRunner's key names and defaults (every
key: ``docs/drivers/beanstalk.md``): the global ``beanstalk:`` section and each
pipeline's options. No network.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator

from rrjobs.core.options import DeclaredOptions, Duration, StrictModel, or_default
from rrjobs.drivers.beanstalk.protocol import MAX_PRIORITY, check_tube, split_addr

DEFAULT_ADDR = "tcp://127.0.0.1:11300"
DEFAULT_TIMEOUT = 30.0
DEFAULT_PRIORITY = 10
DEFAULT_TUBE = "default"
#: ``tube_priority`` and ``reserve_timeout`` of a pipeline from the config file
#: (RoadRunner's) and of a declared one (RoadRunner's ``Declare``).
DEFAULT_TUBE_PRIORITY, DEFAULT_DECLARE_TUBE_PRIORITY = 0, 1
DEFAULT_RESERVE_TIMEOUT, DEFAULT_DECLARE_RESERVE_TIMEOUT = 1.0, 5.0
DEFAULT_PREFETCH = 100
#: beanstalkd keeps a TTR in whole seconds, at most 2**32 - 1.
MAX_TTR = 2**32 - 1


class BeanstalkSection(StrictModel):
    """The global ``beanstalk:`` section: ``addr`` (``tcp://host:port`` or
    ``unix:///path``) and ``timeout`` (the dial timeout, and the TTR of the jobs a
    pipeline puts unless it sets ``ttr``)."""

    addr: Annotated[str, or_default(DEFAULT_ADDR)] = DEFAULT_ADDR
    timeout: Annotated[Duration, Field(gt=0), or_default(DEFAULT_TIMEOUT)] = DEFAULT_TIMEOUT

    @field_validator("addr")
    @classmethod
    def _check_addr(cls, value: str) -> str:
        if value.startswith("unix://"):
            if len(value) == len("unix://"):
                raise ValueError("unix:// needs a socket path")
            return value
        if "://" in value and not value.startswith("tcp://"):
            raise ValueError(f"{value!r}: expected tcp://host:port or unix:///path")
        split_addr(value)
        return value


class BeanstalkOptions(DeclaredOptions):
    """``jobs.pipelines.<name>.config`` of a ``beanstalk`` pipeline."""

    priority: int = DEFAULT_PRIORITY
    #: the tube the pipeline puts into and reserves from
    tube: Annotated[str, or_default(DEFAULT_TUBE)] = DEFAULT_TUBE
    #: beanstalkd's priority of every job the pipeline puts (lower is more urgent)
    tube_priority: int = Field(default=DEFAULT_TUBE_PRIORITY, ge=0, le=MAX_PRIORITY)
    #: how long one ``reserve-with-timeout`` waits for a job (whole seconds)
    reserve_timeout: Duration = DEFAULT_RESERVE_TIMEOUT
    #: rrjobs': the TTR of the jobs put (the lease; ``0``: the section's ``timeout``)
    ttr: Duration = 0.0
    #: rrjobs': the most jobs reserved and not yet settled
    prefetch: int = Field(default=DEFAULT_PREFETCH, ge=1)
    #: rrjobs': ``nack`` buries the job (the dead letters); ``false``: deletes it
    bury_failed: bool = True

    @field_validator("tube")
    @classmethod
    def _check_tube(cls, value: str) -> str:
        return check_tube(value)

    def problems(self) -> list[tuple[str, str]]:
        if self.ttr > MAX_TTR:
            return [("ttr", f"must be at most {MAX_TTR}s")]
        return []
