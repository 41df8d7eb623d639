"""OpenTelemetry tracing: the trace context travels in the job's headers.

rrjobs instruments itself with ``opentelemetry-api`` only; the application
(or ``opentelemetry-instrument``) chooses the SDK, the exporter and the
propagators. Tracing is on when a tracer provider other than the API's
default was set before the runtime started (:meth:`Tracing.detect`);
otherwise nothing on the push or the handler path changes.

* **Push** (``Jobs.push``/``push_batch``, and so the RPC ``Push``): one
  ``PRODUCER`` span ``<pipeline> publish`` per call. Its context is injected
  into the headers of every message that does not carry a trace context yet
  (a message pushed by a client that started a trace keeps it: the span
  continues the first such trace of the call, as RoadRunner v6 does).
* **Handle**: one ``CONSUMER`` span ``<pipeline> process`` per job, child of
  the context found in its headers, current while the handler runs (spans the
  handler starts are its children). A handler that raises marks it as an
  error with the exception recorded.

Header names are written the way RoadRunner's Go drivers write them
(``http.Header`` canonical form: ``Traceparent``, ``Tracestate``, ``Baggage``,
``Uber-Trace-Id``), so that RoadRunner's consumers find them; they are read
in any letter case.

Everything here runs on the event loop and never blocks; the span processor
the application configured decides what happens to finished spans.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from opentelemetry import propagate, trace
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.util.types import AttributeValue

from rrjobs._version import __version__
from rrjobs.core.headers import Headers

if TYPE_CHECKING:
    from rrjobs.core.job import Job
    from rrjobs.core.message import Message

#: The instrumentation scope of rrjobs' spans.
SCOPE = "rrjobs"


def canonical(key: str) -> str:
    """A header name in Go's canonical MIME form (``uber-trace-id`` → ``Uber-Trace-Id``)."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in key.split("-"))


class _Setter(Setter[Headers]):
    """Writes propagation fields into rrjobs headers (lists of values)."""

    def set(self, carrier: Headers, key: str, value: str) -> None:
        carrier[canonical(key)] = [value]


class _Getter(Getter[Headers]):
    """Reads propagation fields from rrjobs headers, in any letter case."""

    def get(self, carrier: Headers, key: str) -> list[str] | None:
        value = carrier.get(canonical(key)) or carrier.get(key)
        if value is None:
            lowered = key.lower()
            for name, values in carrier.items():
                if name.lower() == lowered:
                    return values
        return value

    def keys(self, carrier: Headers) -> list[str]:
        return list(carrier)


_SETTER = _Setter()
_GETTER = _Getter()


class Tracing:
    """Spans and context propagation for one runtime. Use from its event loop."""

    def __init__(self, tracer: trace.Tracer) -> None:
        self._tracer = tracer

    @classmethod
    def detect(cls, provider: trace.TracerProvider | None = None) -> Tracing | None:
        """Tracing with ``provider``, else with the global tracer provider; ``None``
        while none is set (the API's default provider makes no spans)."""
        if provider is None:
            provider = trace.get_tracer_provider()
        if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
            return None
        return cls(provider.get_tracer(SCOPE, __version__))

    @contextlib.contextmanager
    def publish(self, pipeline: str, driver: str, msgs: Sequence[Message]) -> Iterator[None]:
        """The span of one push call; injects its context into ``msgs`` lacking one."""
        parent = None
        bare: list[Message] = []
        for msg in msgs:
            if msg.headers:
                ctx = propagate.extract(msg.headers, getter=_GETTER)
                if trace.get_current_span(ctx).get_span_context().is_valid:
                    if parent is None:
                        parent = ctx
                    continue
            bare.append(msg)
        attributes: dict[str, AttributeValue] = {
            "messaging.system": "rrjobs",
            "messaging.operation.type": "send",
            "messaging.destination.name": pipeline,
            "messaging.batch.message_count": len(msgs),
            "rrjobs.driver": driver,
        }
        with self._tracer.start_as_current_span(
                f"{pipeline} publish", context=parent, kind=trace.SpanKind.PRODUCER,
                attributes=attributes):
            for msg in bare:
                propagate.inject(msg.headers, setter=_SETTER)
            yield

    @contextlib.contextmanager
    def process(self, job: Job) -> Iterator[None]:
        """The span of one handled job, current while its handler runs."""
        ctx = propagate.extract(job.headers, getter=_GETTER) if job.headers else None
        attributes: dict[str, AttributeValue] = {
            "messaging.system": "rrjobs",
            "messaging.operation.type": "process",
            "messaging.destination.name": job.pipeline,
            "messaging.message.id": job.id,
            "rrjobs.job": job.name,
            "rrjobs.driver": job.driver_name,
            "rrjobs.attempts": job.attempts,
        }
        with self._tracer.start_as_current_span(
                f"{job.pipeline} process", context=ctx, kind=trace.SpanKind.CONSUMER,
                attributes=attributes, record_exception=False,
                set_status_on_exception=False) as span:
            yield
            if job.settled is not None:
                span.set_attribute("rrjobs.outcome", job.settled)

    def failed(self, exc: BaseException) -> None:
        """Mark the current job's span as failed with ``exc`` (the handler raised)."""
        span = trace.get_current_span()
        span.record_exception(exc)
        span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
