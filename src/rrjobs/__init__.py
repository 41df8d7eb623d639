"""rrjobs: RoadRunner's JOBS subsystem for asyncio Python.

One job API over many brokers. Importing ``rrjobs`` imports no broker client:
drivers load through the ``rrjobs.drivers`` entry points when a pipeline uses
them. Every public name loads on first use (``rrjobs.App`` imports the
runtime; :class:`Client` and :class:`SyncClient` the RPC layer).
"""

import importlib
from typing import TYPE_CHECKING, Any

from rrjobs._version import __version__

if TYPE_CHECKING:
    from rrjobs.client import Client, SyncClient
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

#: Every public name and its module, imported on first use: ``import rrjobs``
#: (and the ``rrjobs`` command, which starts by it) stays cheap.
_LAZY = {
    "Client": "rrjobs.client",
    "SyncClient": "rrjobs.client",
    "Config": "rrjobs.config",
    "DriverRegistry": "rrjobs.registry",
    **dict.fromkeys(("Capabilities", "ConfigError", "Constructor", "Driver", "Job", "Message",
                     "Pipeline", "PriorityQueue", "RRJobsError", "State"), "rrjobs.core"),
    **dict.fromkeys(("App", "Handler", "JobContext", "JobData", "Jobs",
                     "PayloadValidationError", "Reject", "Retry", "RetryPolicy"),
                    "rrjobs.runtime"),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'rrjobs' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


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
