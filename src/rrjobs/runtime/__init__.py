"""The runtime: pipelines and drivers (:mod:`.jobs`), handlers (:mod:`.app`),
the worker pool (:mod:`.pool`) and handler outcomes (:mod:`.outcomes`)."""

from rrjobs.runtime.app import App, HandlerSpec, JobData, load_app
from rrjobs.runtime.jobs import Jobs, PipelineStat
from rrjobs.runtime.outcomes import Counters, RetryPolicy

__all__ = ["App", "Counters", "HandlerSpec", "JobData", "Jobs", "PipelineStat", "RetryPolicy",
           "load_app"]
