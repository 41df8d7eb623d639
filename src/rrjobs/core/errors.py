"""The exceptions rrjobs raises.

Every error the library raises derives from :class:`RRJobsError`, so callers
can catch one type. The subclasses say *what* went wrong, so that the runtime,
the RPC layer and tests can react without parsing messages.
"""

from __future__ import annotations


class RRJobsError(Exception):
    """Base class of every rrjobs error."""


class ConfigError(RRJobsError):
    """Invalid configuration. The message starts with the exact key path.

    ``ConfigError("jobs.pipelines.test-1.config.prefetch", "must be >= 1")``
    renders as ``jobs.pipelines.test-1.config.prefetch: must be >= 1``.
    Several problems can be reported at once through ``problems``.
    """

    def __init__(self, path: str, message: str, problems: list[tuple[str, str]] | None = None):
        self.path = path
        self.message = message
        self.problems = problems or [(path, message)]
        super().__init__("; ".join(f"{p}: {m}" if p else m for p, m in self.problems))


class DriverNotFoundError(RRJobsError):
    """A pipeline names a driver that no installed distribution registers."""


class DuplicateDriverError(RRJobsError):
    """Two distributions register the same driver name."""


class PipelineNotFoundError(RRJobsError):
    """An operation names a pipeline that is not registered."""


class PipelineExistsError(RRJobsError):
    """``declare`` was called with the name of a registered pipeline."""


class PipelineStateError(RRJobsError):
    """The pipeline is not in a state that allows the operation.

    Raised for a double pause ("no active listeners, nothing to pause"), a
    double resume ("already in the active state"), or a push to a stopped
    pipeline.
    """


class UnsupportedFeatureError(RRJobsError):
    """The driver cannot do what was asked (a delay beyond its maximum, a
    priority on a broker without priorities, ...). Its capabilities say so; the
    driver raises this instead of silently ignoring the option."""


class CapabilityError(UnsupportedFeatureError):
    """An operation needs a capability the pipeline's driver does not declare
    (reading dead letters back from a driver that cannot). The message names
    the driver, the pipeline and the capability; so do the attributes, when
    the error was raised here rather than rebuilt from an RPC answer."""

    def __init__(self, message: str, *, driver: str = "", pipeline: str = "",
                 capability: str = "") -> None:
        super().__init__(message)
        self.driver = driver
        self.pipeline = pipeline
        self.capability = capability


class DeadLetterNotFoundError(RRJobsError):
    """The pipeline's dead-letter store holds no dead letter with that job id."""


class PayloadTooLargeError(RRJobsError):
    """The payload is larger than the driver's declared ``max_payload``."""


class JobAlreadySettledError(RRJobsError):
    """``ack``/``nack``/``requeue`` was called on a job that was settled already."""


class AckLostError(RRJobsError):
    """The acknowledgement could not reach the broker (for example the channel
    it was received on is gone). The broker will redeliver the job; the runtime
    logs this and carries on, it never kills the pipeline."""


class HandlerTimeoutError(RRJobsError):
    """The handler ran longer than its per-job timeout."""


class NoHandlerError(RRJobsError):
    """No handler is registered for the job's name and there is no fallback."""


class PoisonMessageError(RRJobsError):
    """A received message could not be read (its body or headers failed to
    decode, or it broke a limit). The runtime dead-letters such a job at once,
    without calling a handler, with this error as its ``rr_error``."""
