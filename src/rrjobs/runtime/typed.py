"""Typed handlers: what a handler's parameters ask for, and its payload parsed.

The rules (applied when the handler is registered, so a mistake is an error
at import time, not at the first job):

* a parameter annotated :class:`~rrjobs.Job` (or a subclass) receives the job;
  :class:`~rrjobs.JobData` the picklable snapshot (the only form a
  ``executor="process"`` handler can get); :class:`~rrjobs.JobContext` the
  job's context (attempt, first push time, headers...);
* at most one other parameter receives the payload, decoded from JSON and
  validated against its annotation by a pydantic ``TypeAdapter``: a pydantic
  model, a dataclass, a ``TypedDict``, ``list[int]``, ``dict[str, Any]``... A
  ``bytes`` annotation receives the raw payload untouched;
* an unannotated parameter (or one annotated ``Any`` or ``object``) is allowed only when it
  is the only one: it receives the job (``JobData`` for a process handler),
  as before typed handlers existed;
* parameters are positional; ``*args``, ``**kwargs`` and keyword-only
  parameters without defaults are refused.

A payload that does not validate raises
:class:`~rrjobs.runtime.control.PayloadValidationError` (a
:class:`~rrjobs.Reject`): the job is dead-lettered with the validation errors
(never the payload's values) and is not retried.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import pydantic_core
from pydantic import TypeAdapter, ValidationError

from rrjobs.core.job import Job
from rrjobs.runtime.context import JobContext
from rrjobs.runtime.control import PayloadValidationError
from rrjobs.runtime.data import JobData

Kind = Literal["job", "data", "context", "payload"]
ContextOf = Callable[[Job], JobContext]


#: Annotations that ask for the job itself, in one of its forms.
_JOB_KINDS: tuple[tuple[type, Kind], ...] = ((Job, "job"), (JobData, "data"),
                                             (JobContext, "context"))


def _kind(annotation: Any) -> Kind:
    if inspect.isclass(annotation):
        for cls, kind in _JOB_KINDS:
            if issubclass(annotation, cls):
                return kind
    return "payload"


def describe_errors(err: ValidationError) -> str:
    """The validation errors as ``loc: message`` lines, without the input values
    (a payload may carry secrets; they must not reach logs or ``rr_error``)."""
    parts = []
    for e in err.errors(include_url=False, include_input=False, include_context=False):
        loc = ".".join(str(p) for p in e["loc"]) or "payload"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


@dataclass(frozen=True, slots=True)
class Signature:
    """What a typed handler's positional parameters receive, in order."""

    kinds: tuple[Kind, ...]
    #: the payload's type and its adapter (``None``: no payload parameter)
    payload_type: Any = None
    adapter: TypeAdapter[Any] | None = None

    def parse(self, job_name: str, job_id: str, payload: bytes) -> Any:
        """The payload decoded and validated, or :class:`PayloadValidationError`."""
        if self.payload_type is bytes:
            return bytes(payload)
        assert self.adapter is not None
        try:
            return self.adapter.validate_json(payload)
        except ValidationError as exc:
            raise PayloadValidationError(
                f"payload of job {job_id} ({job_name}) is not a valid "
                f"{_type_name(self.payload_type)}: {describe_errors(exc)}"
            ) from None

    def args(self, job: Job, context_of: ContextOf) -> tuple[Any, ...]:
        """The arguments of a call on the event loop or in a thread."""
        out: list[Any] = []
        for kind in self.kinds:
            if kind == "job":
                out.append(job)
            elif kind == "data":
                out.append(JobData.of(job))
            elif kind == "context":
                out.append(context_of(job))
            else:
                out.append(self.parse(job.name, job.id, job.payload))
        return tuple(out)

    def encode(self, payload: Any) -> bytes:
        """A producer's payload as JSON, validated against the handler's type
        first (a dict is checked and coerced as the consumer will read it)."""
        if isinstance(payload, bytes | bytearray | memoryview):
            return bytes(payload)
        if self.adapter is None or self.payload_type is bytes:
            return encode_payload(payload)
        try:
            value = self.adapter.validate_python(payload)
        except ValidationError as exc:
            raise ValueError(f"payload is not a valid {_type_name(self.payload_type)}: "
                             f"{describe_errors(exc)}") from None
        return self.adapter.dump_json(value)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or repr(tp)


def encode_payload(payload: Any) -> bytes:
    """A payload as the bytes a job carries: ``bytes`` as they are, ``str`` as
    UTF-8, anything else (pydantic models, dataclasses, dicts, lists...) as JSON."""
    if isinstance(payload, bytes):
        return payload
    if isinstance(payload, bytearray | memoryview):
        return bytes(payload)
    if isinstance(payload, str):
        return payload.encode()
    try:
        return pydantic_core.to_json(payload)
    except pydantic_core.PydanticSerializationError as exc:
        raise TypeError(f"cannot encode a {type(payload).__name__} payload as JSON: "
                        f"{exc}") from None


def signature_of(name: str, func: Callable[..., Any], process: bool) -> Signature | None:
    """The handler's :class:`Signature`, or ``None`` for a plain handler taking
    the job (or, in a process pool, the :class:`JobData`) as its one argument.
    Raises ``TypeError`` for a signature that breaks the rules."""
    where = f"handler {name!r}"
    params = list(inspect.signature(func).parameters.values())
    positional = []
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise TypeError(f"{where}: *args and **kwargs are not supported")
        if p.kind == p.KEYWORD_ONLY:
            if p.default is p.empty:
                raise TypeError(f"{where}: keyword-only parameter {p.name!r} needs a default")
            continue
        positional.append(p)
    try:
        hints = typing.get_type_hints(func)
    except Exception as exc:
        raise TypeError(f"{where}: cannot resolve its annotations: {exc}") from None
    if len(positional) == 1 and hints.get(positional[0].name, Any) in (Any, object):
        return None
    kinds: list[Kind] = []
    payload_type: Any = None
    for p in positional:
        if p.name not in hints:
            raise TypeError(f"{where}: parameter {p.name!r} needs an annotation (rrjobs.Job, "
                            "rrjobs.JobContext or the payload's type)")
        ann = hints[p.name]
        kind = _kind(ann)
        if kind == "payload":
            if payload_type is not None:
                raise TypeError(f"{where}: only one parameter may receive the payload "
                                f"({p.name!r} is a second)")
            payload_type = ann
        if process and kind == "job":
            raise TypeError(f"{where}: a process handler receives rrjobs.JobData, not a Job")
        kinds.append(kind)
    if tuple(kinds) == (("data",) if process else ("job",)):
        return None
    adapter = None
    if payload_type is not None and payload_type is not bytes:
        try:
            adapter = TypeAdapter(payload_type)
        except Exception as exc:
            raise TypeError(f"{where}: pydantic cannot validate {payload_type!r}: "
                            f"{exc}") from None
    return Signature(tuple(kinds), payload_type, adapter)
