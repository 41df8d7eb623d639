"""The thin core: the driver contract, jobs, pipelines, the priority queue.

Nothing here imports a broker client.
"""

from typing import TYPE_CHECKING

from rrjobs.core.lazy import lazy_exports

if TYPE_CHECKING:
    from rrjobs.core.capabilities import Capabilities
    from rrjobs.core.errors import (
        AckLostError,
        ConfigError,
        DriverNotFoundError,
        DuplicateDriverError,
        HandlerTimeoutError,
        JobAlreadySettledError,
        NoHandlerError,
        PayloadTooLargeError,
        PipelineExistsError,
        PipelineNotFoundError,
        PipelineStateError,
        RRJobsError,
        UnsupportedFeatureError,
    )
    from rrjobs.core.headers import Headers
    from rrjobs.core.interfaces import Configurer, Constructor, Driver
    from rrjobs.core.job import Job
    from rrjobs.core.message import Message, new_id
    from rrjobs.core.pipeline import Pipeline
    from rrjobs.core.queue import PriorityQueue, QueueFullError
    from rrjobs.core.state import State

__getattr__, __dir__ = lazy_exports(__name__, {
    "rrjobs.core.capabilities": ["Capabilities"],
    "rrjobs.core.errors": [
        "AckLostError", "ConfigError", "DriverNotFoundError", "DuplicateDriverError",
        "HandlerTimeoutError", "JobAlreadySettledError", "NoHandlerError", "PayloadTooLargeError",
        "PipelineExistsError", "PipelineNotFoundError", "PipelineStateError", "RRJobsError",
        "UnsupportedFeatureError",
    ],
    "rrjobs.core.headers": ["Headers"],
    "rrjobs.core.interfaces": ["Configurer", "Constructor", "Driver"],
    "rrjobs.core.job": ["Job"],
    "rrjobs.core.message": ["Message", "new_id"],
    "rrjobs.core.pipeline": ["Pipeline"],
    "rrjobs.core.queue": ["PriorityQueue", "QueueFullError"],
    "rrjobs.core.state": ["State"],
})

__all__ = [
    "AckLostError", "Capabilities", "ConfigError", "Configurer", "Constructor", "Driver",
    "DriverNotFoundError", "DuplicateDriverError", "HandlerTimeoutError", "Headers", "Job",
    "JobAlreadySettledError", "Message", "NoHandlerError", "PayloadTooLargeError", "Pipeline",
    "PipelineExistsError", "PipelineNotFoundError", "PipelineStateError", "PriorityQueue",
    "QueueFullError", "RRJobsError", "State", "UnsupportedFeatureError", "new_id",
]
