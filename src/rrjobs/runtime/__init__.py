"""The runtime: pipelines and drivers (:mod:`.jobs`), handlers (:mod:`.app`),
the worker pool (:mod:`.pool`), handler outcomes (:mod:`.outcomes`,
:mod:`.control`), typed handlers (:mod:`.typed`) and in-process pushes
(:mod:`.producer`)."""

from rrjobs.runtime.app import App, Handler, HandlerSpec, JobData, load_app
from rrjobs.runtime.context import JobContext
from rrjobs.runtime.control import PayloadValidationError, Reject, Retry
from rrjobs.runtime.jobs import Jobs, PipelineStat
from rrjobs.runtime.outcomes import Counters, RetryPolicy
from rrjobs.runtime.producer import MessageSink, build_message

__all__ = ["App", "Counters", "Handler", "HandlerSpec", "JobContext", "JobData", "Jobs",
           "MessageSink", "PayloadValidationError", "PipelineStat", "Reject", "Retry",
           "RetryPolicy", "build_message", "load_app"]
