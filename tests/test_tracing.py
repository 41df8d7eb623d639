"""OpenTelemetry: trace context in job headers, a publish span per push, a process span per job."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from rrjobs import App, Config, Job, Jobs, Message
from rrjobs.tracing import Tracing, canonical
from tests.conftest import wait_for

CONFIG = """
jobs:
  consume: [p]
  pipelines:
    p:
      driver: memory
      retry: {max_attempts: 2, backoff: 0}
"""


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_header_names_are_written_as_roadrunner_writes_them() -> None:
    assert canonical("traceparent") == "Traceparent"
    assert canonical("uber-trace-id") == "Uber-Trace-Id"
    assert canonical("BAGGAGE") == "Baggage"


async def test_without_a_tracer_provider_nothing_is_traced_or_injected() -> None:
    assert Tracing.detect() is None  # the tests never set a global provider
    app = App()
    seen: list[Job] = []

    @app.handler("a")
    async def a(job: Job) -> None:
        seen.append(job)

    async with Jobs(Config.from_yaml(CONFIG), app) as jobs:
        assert jobs.tracing is None and jobs.pool.tracing is None
        await jobs.push(Message("a", b"", "p"))
        await wait_for(lambda: len(seen) == 1)
    assert seen[0].headers == {}


async def test_a_job_is_processed_in_a_child_span_of_its_push(
        spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = spans
    app = App()
    inner: list[trace.SpanContext] = []

    @app.handler("a")
    async def a(job: Job) -> None:
        inner.append(trace.get_current_span().get_span_context())

    tracer = provider.get_tracer("app")
    async with Jobs(Config.from_yaml(CONFIG), app, tracer_provider=provider) as jobs:
        with tracer.start_as_current_span("request") as request:
            msg = Message("a", b"x", "p", id="j1")
            await jobs.push(msg)
            await jobs.push_batch([Message("a", b"y", "p", id="j2")])
        await wait_for(lambda: len(inner) == 2)
    assert list(msg.headers) == ["Traceparent"]  # RoadRunner's header name
    trace_id = request.get_span_context().trace_id
    publishes = named(exporter, "p publish")
    processes = named(exporter, "p process")
    assert len(publishes) == 2 and len(processes) == 2
    for span in publishes:
        assert span.kind is trace.SpanKind.PRODUCER
        assert span.parent is not None and span.parent.span_id == request.get_span_context().span_id
        assert span.attributes is not None
        assert span.attributes["messaging.destination.name"] == "p"
        assert span.attributes["rrjobs.driver"] == "memory"
    by_id = {s.attributes["messaging.message.id"]: s for s in processes if s.attributes}
    for job_id, publish in zip(("j1", "j2"), publishes, strict=True):
        process = by_id[job_id]
        assert process.kind is trace.SpanKind.CONSUMER
        assert process.context is not None and process.context.trace_id == trace_id
        assert process.parent is not None
        assert process.parent.span_id == publish.context.span_id  # type: ignore[union-attr]
        assert process.attributes is not None and process.attributes["rrjobs.outcome"] == "ack"
    # the handler runs inside its job's span
    assert {c.span_id for c in inner} == {s.context.span_id for s in processes if s.context}


async def test_a_pushed_trace_context_is_kept_and_continued(
        spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = spans
    app = App()
    done = asyncio.Event()

    @app.handler("a")
    async def a(job: Job) -> None:
        done.set()

    client_trace = "0af7651916cd43dd8448eb211c80319c"
    header = f"00-{client_trace}-b7ad6b7169203331-01"
    async with Jobs(Config.from_yaml(CONFIG), app, tracer_provider=provider) as jobs:
        msg = Message("a", b"", "p", headers={"traceparent": [header]})  # a client's, lower case
        await jobs.push(msg)
        async with asyncio.timeout(5):
            await done.wait()
    assert msg.headers == {"traceparent": [header]}  # not overwritten
    (publish,) = named(exporter, "p publish")
    (process,) = named(exporter, "p process")
    assert publish.context is not None and process.context is not None
    assert publish.context.trace_id == int(client_trace, 16)
    assert publish.parent is not None and publish.parent.span_id == 0xB7AD6B7169203331
    # the job carries the client's context: its span continues the client's trace
    assert process.context.trace_id == int(client_trace, 16)


async def test_a_failing_handler_marks_its_span_and_the_retry_has_its_own(
        spans: tuple[TracerProvider, InMemorySpanExporter]) -> None:
    provider, exporter = spans
    app = App()
    calls: list[int] = []

    @app.handler("a")
    async def a(job: Job) -> None:
        calls.append(job.attempts)
        if len(calls) == 1:
            raise RuntimeError("boom")

    async with Jobs(Config.from_yaml(CONFIG), app, tracer_provider=provider) as jobs:
        await jobs.push(Message("a", b"", "p"))
        await wait_for(lambda: len(named(exporter, "p process")) == 2)
    first, second = named(exporter, "p process")
    assert first.status.status_code is trace.StatusCode.ERROR
    assert first.status.description == "boom"
    assert [e.name for e in first.events] == ["exception"]
    assert first.attributes is not None and first.attributes["rrjobs.outcome"] == "requeue"
    assert second.status.status_code is trace.StatusCode.UNSET
    assert second.attributes is not None and second.attributes["rrjobs.attempts"] == 1
    assert first.context is not None and second.context is not None
    assert first.context.trace_id == second.context.trace_id  # the retry stays in the trace
