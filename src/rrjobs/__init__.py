"""rrjobs: RoadRunner's JOBS subsystem for asyncio Python.

One job API over many brokers. Importing ``rrjobs`` imports no broker client:
drivers load through the ``rrjobs.drivers`` entry points when a pipeline uses
them.
"""

from rrjobs.config import Config
from rrjobs.core import (
    Capabilities,
    ConfigError,
    Constructor,
    Driver,
    Job,
    Message,
    Pipeline,
    PriorityQueue,
    RRJobsError,
    State,
)
from rrjobs.registry import DriverRegistry
from rrjobs.runtime import (
    App,
    Handler,
    JobContext,
    JobData,
    Jobs,
    PayloadValidationError,
    Reject,
    Retry,
    RetryPolicy,
)

__version__ = "0.1.0"


__all__ = [
    "App",
    "Capabilities",
    "Config",
    "ConfigError",
    "Constructor",
    "Driver",
    "DriverRegistry",
    "Handler",
    "Job",
    "JobContext",
    "JobData",
    "Jobs",
    "Message",
    "PayloadValidationError",
    "Pipeline",
    "PriorityQueue",
    "RRJobsError",
    "Reject",
    "Retry",
    "RetryPolicy",
    "State",
    "__version__",
]
