"""The runtime: pipelines and drivers (:mod:`.jobs`), handlers (:mod:`.app`),
the worker pool (:mod:`.pool`), handler outcomes (:mod:`.outcomes`,
:mod:`.control`), typed handlers (:mod:`.typed`) and in-process pushes
(:mod:`.producer`)."""

from typing import TYPE_CHECKING

from rrjobs.core.lazy import lazy_exports

if TYPE_CHECKING:
    from rrjobs.runtime.app import App, Handler, HandlerSpec, JobData, load_app
    from rrjobs.runtime.context import JobContext
    from rrjobs.runtime.control import PayloadValidationError, Reject, Retry
    from rrjobs.runtime.jobs import Jobs
    from rrjobs.runtime.outcomes import RetryPolicy
    from rrjobs.runtime.producer import MessageSink, build_message
    from rrjobs.runtime.stats import Counters, PipelineStat

__getattr__, __dir__ = lazy_exports(__name__, {
    "rrjobs.runtime.app": ["App", "Handler", "HandlerSpec", "JobData", "load_app"],
    "rrjobs.runtime.context": ["JobContext"],
    "rrjobs.runtime.control": ["PayloadValidationError", "Reject", "Retry"],
    "rrjobs.runtime.jobs": ["Jobs"],
    "rrjobs.runtime.outcomes": ["RetryPolicy"],
    "rrjobs.runtime.stats": ["Counters", "PipelineStat"],
    "rrjobs.runtime.producer": ["MessageSink", "build_message"],
})

__all__ = [
    "App", "Counters", "Handler", "HandlerSpec", "JobContext", "JobData", "Jobs", "MessageSink",
    "PayloadValidationError", "PipelineStat", "Reject", "Retry", "RetryPolicy", "build_message",
    "load_app",
]
