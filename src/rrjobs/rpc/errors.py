"""Errors of the RPC layer and their JSON form.

The server answers a failed call with ``{"error": {"type", "message"}}`` (plus
``problems`` for a :class:`~rrjobs.core.errors.ConfigError`) and an HTTP status
chosen from the exception type. The client turns that body back into the same
exception class when it knows the type, else into :class:`RPCError`.
"""

from __future__ import annotations

from typing import Any

from rrjobs.core import errors as core_errors
from rrjobs.core.errors import ConfigError, RRJobsError
from rrjobs.core.queue import QueueFullError
from rrjobs.core.secrets import scrub


class RPCError(RRJobsError):
    """A call failed with an error the client cannot map to a known type, or
    the server sent something that is not a valid answer.

    Attributes:
        type_name: the server's exception type name (``""`` if unknown).
        status: the HTTP status (0 when there was no response).
    """

    def __init__(self, message: str, *, type_name: str = "", status: int = 0) -> None:
        super().__init__(message)
        self.type_name = type_name
        self.status = status


class BadRequestError(RPCError):
    """The request body is malformed: not JSON, wrong types, bad base64,
    unknown fields, a missing required field. The message starts with the key
    path (``job.options.priority: expected an integer``)."""


class UnknownMethodError(RPCError):
    """No such RPC method (route), or the wrong HTTP verb for it."""


class UnauthorizedError(RPCError):
    """The call lacks the server's bearer token, or gives a wrong one (401)."""


class ForbiddenError(RPCError):
    """The call is refused whoever makes it (403): it comes from a web page
    (``Origin``), names a foreign ``Host``, or declares a file outside
    ``rpc.declare_dir``."""


class UnsupportedMediaTypeError(RPCError):
    """The body is not sent as ``application/json`` (415)."""


class PayloadTooLargeRequestError(RPCError):
    """The request body is larger than the server accepts (413)."""


class OverloadedError(RPCError):
    """The server holds as many request bytes as ``rpc.max_inflight_bytes``
    allows; the call may be retried later (503)."""


#: The RPC's own errors and their HTTP statuses.
RPC_ERRORS: dict[type[RPCError], int] = {
    UnauthorizedError: 401,
    ForbiddenError: 403,
    PayloadTooLargeRequestError: 413,
    UnsupportedMediaTypeError: 415,
    OverloadedError: 503,
}


class RPCConnectionError(RPCError):
    """The server could not be reached (refused, reset, DNS, socket missing).

    Attributes:
        sent: ``False`` when the request certainly never reached the server
            (the connection was never established), so any call may be
            retried; ``True`` when it may have (the connection broke after
            the request was written).
    """

    def __init__(self, message: str, *, sent: bool = True) -> None:
        super().__init__(message)
        self.sent = sent


def _status_of(exc: BaseException) -> int:
    for cls, status in RPC_ERRORS.items():
        if type(exc) is cls:
            return status
    if isinstance(exc, BadRequestError):
        return 400
    if isinstance(exc, UnknownMethodError):
        return exc.status or 404
    if isinstance(exc, core_errors.PipelineNotFoundError | core_errors.DeadLetterNotFoundError):
        return 404
    if isinstance(exc, core_errors.PipelineStateError | core_errors.PipelineExistsError):
        return 409
    if isinstance(exc, core_errors.PayloadTooLargeError):
        return 413
    if isinstance(
        exc,
        ConfigError
        | core_errors.DriverNotFoundError
        | core_errors.UnsupportedFeatureError
        | ValueError,
    ):
        return 400
    if isinstance(exc, QueueFullError):
        return 503
    if isinstance(exc, TimeoutError):
        return 504
    return 500


def error_body(exc: BaseException, message: str | None = None) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body that report ``exc`` (credentials masked: the
    text may come from a broker client)."""
    err: dict[str, Any] = {
        "type": type(exc).__name__,
        "message": scrub(message if message is not None else (str(exc) or type(exc).__name__)),
    }
    if isinstance(exc, ConfigError):
        err["problems"] = [{"path": p, "message": scrub(m)} for p, m in exc.problems]
    return _status_of(exc), {"error": err}


#: Exception types the client rebuilds by name.
KNOWN_ERRORS: dict[str, type[Exception]] = {
    cls.__name__: cls
    for cls in (
        core_errors.AckLostError,
        core_errors.CapabilityError,
        core_errors.DeadLetterNotFoundError,
        core_errors.DriverNotFoundError,
        core_errors.DuplicateDriverError,
        core_errors.HandlerTimeoutError,
        core_errors.JobAlreadySettledError,
        core_errors.NoHandlerError,
        core_errors.PayloadTooLargeError,
        core_errors.PipelineExistsError,
        core_errors.PipelineNotFoundError,
        core_errors.PipelineStateError,
        core_errors.UnsupportedFeatureError,
        QueueFullError,
        TimeoutError,
    )
}


def error_from_body(status: int, body: Any) -> Exception:
    """Rebuild the exception a server error body describes."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return RPCError(f"unexpected error response (HTTP {status}): {body!r}", status=status)
    type_name = str(err.get("type") or "")
    message = str(err.get("message") or f"HTTP {status}")
    if type_name == "ConfigError":
        problems: list[tuple[str, str]] = []
        for p in err.get("problems") or []:
            if isinstance(p, dict):
                problems.append((str(p.get("path", "")), str(p.get("message", ""))))
        if problems:
            return ConfigError(problems[0][0], problems[0][1], problems)
        return ConfigError("", message)
    rebuilt: tuple[type[RPCError], ...] = (BadRequestError, UnknownMethodError, *RPC_ERRORS)
    for cls in rebuilt:
        if type_name == cls.__name__:
            return cls(message, type_name=type_name, status=status)
    known = KNOWN_ERRORS.get(type_name)
    if known is not None:
        return known(message)
    return RPCError(f"{type_name or 'error'}: {message}", type_name=type_name, status=status)
