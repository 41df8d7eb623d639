"""rrjobs: RoadRunner's JOBS subsystem for asyncio Python.

One job API over many brokers. Importing ``rrjobs`` imports no broker client:
drivers load through the ``rrjobs.drivers`` entry points when a pipeline uses
them. :class:`Client` and :class:`SyncClient` (producers over RPC) load on
first use, with the RPC layer.
"""

import importlib
from typing import TYPE_CHECKING, Any

from rrjobs._version import __version__
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

if TYPE_CHECKING:
    from rrjobs.client import Client, SyncClient

_LAZY = {"Client": "rrjobs.client", "SyncClient": "rrjobs.client"}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rrjobs' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "App",
    "Capabilities",
    "Client",
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
    "SyncClient",
    "__version__",
]
