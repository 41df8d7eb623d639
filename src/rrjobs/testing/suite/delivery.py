"""Delivery: push, consume, ack; payloads, headers and identity round-trip."""

from __future__ import annotations

import json
import uuid

import pytest

from rrjobs.core.errors import JobAlreadySettledError, PayloadTooLargeError
from rrjobs.core.headers import Headers
from rrjobs.testing.factory import MIB
from rrjobs.testing.harness import Harness, Pipe, conformance_case
from rrjobs.testing.suite.base import SuiteBase

#: Several values per key, order kept, and values that trip naive encodings.
HEADERS: Headers = {
    "x-multi": ["first", "second", "third"],
    "x-single": ["only"],
    "x-comma": ["a,b", "c;d"],
    "x-unicode": ["zürich", "東京"],
    "x-empty-value": [""],
    "X-Mixed-Case": ["Kept"],
}


#: The payload a driver that declares no ``max_payload`` must carry: over the
#: large-payload test's 1 MiB, and over 4 MiB, where many brokers stop.
UNBOUNDED = 4 * MIB + 1


def assert_headers(got: Headers, sent: Headers) -> None:
    """Every sent header arrives with the same values in the same order."""
    for key, values in sent.items():
        assert key in got, f"header {key!r} was lost; got {got!r}"
        assert got[key] == values, f"header {key!r}: sent {values!r}, got {got[key]!r}"


def pattern(size: int) -> bytes:
    """``size`` deterministic bytes covering every byte value."""
    block = bytes(range(256))
    return (block * (size // 256 + 1))[:size]


async def round_trip(h: Harness, payload: bytes) -> Pipe:
    pipe = await h.pipe()
    sent = await pipe.push(payload=payload)
    job = await pipe.receive()
    assert job.id == sent.id
    assert type(job.payload) is bytes, f"payload is {type(job.payload).__name__}, not bytes"
    assert len(job.payload) == len(payload), (
        f"payload of {len(payload)} bytes arrived with {len(job.payload)} bytes")
    assert job.payload == payload, "payload changed in transit"
    assert job.body == payload
    await job.ack()
    return pipe


class DeliveryTests(SuiteBase):
    """What is pushed is delivered, whole and unchanged."""

    @conformance_case
    async def test_push_consume_ack(self, h: Harness) -> None:
        """A pushed job is delivered once; ``ack`` settles it for good."""
        pipe = await h.pipe()
        sent = await pipe.push(name="conformance.basic", payload=b"hello")
        job = await pipe.receive()
        assert (job.name, job.id, job.payload) == ("conformance.basic", sent.id, b"hello")
        assert job.pipeline == pipe.name
        assert job.settled is None
        assert job.auto_ack is False
        await job.ack()
        assert job.settled == "ack"
        await pipe.expect_nothing()
        await h.eventually(pipe, lambda s: (s.active, s.delayed, s.reserved) == (0, 0, 0),
                           "no active, delayed or reserved job after the ack")

    @conformance_case
    async def test_empty_payload_round_trips(self, h: Harness) -> None:
        await round_trip(h, b"")

    @conformance_case
    async def test_every_byte_value_round_trips(self, h: Harness) -> None:
        await round_trip(h, pattern(256 * 4))

    @conformance_case
    async def test_non_utf8_payload_round_trips(self, h: Harness) -> None:
        payload = b"caf\xe9 \xff\xfe\x00\x80 \xc3\x28 \xed\xa0\x80"
        with pytest.raises(UnicodeDecodeError):
            payload.decode("utf-8")
        await round_trip(h, payload)

    @conformance_case
    async def test_large_payload_round_trips(self, h: Harness) -> None:
        """1 MiB, or the declared ``max_payload`` when that is smaller."""
        probe = await h.pipe(run=False)
        limit = probe.capabilities.max_payload
        size = MIB if limit is None else min(MIB, limit)
        await round_trip(h, pattern(size))

    @conformance_case
    async def test_payload_over_the_declared_maximum_is_refused(self, h: Harness) -> None:
        """A driver with ``max_payload`` raises :class:`PayloadTooLargeError` instead
        of truncating or losing the job; one that declares no maximum carries a
        payload of :data:`UNBOUNDED` bytes (beyond the large-payload test) whole."""
        pipe = await h.pipe()
        limit = pipe.capabilities.max_payload
        if limit is None:
            await pipe.stop()
            await round_trip(h, pattern(UNBOUNDED))
            return
        with pytest.raises(PayloadTooLargeError):
            await pipe.push(payload=pattern(limit + 1))
        with pytest.raises(PayloadTooLargeError):
            await pipe.driver.push_batch([pipe.message(payload=pattern(limit + 1))])
        await pipe.expect_nothing()

    @conformance_case
    async def test_headers_with_several_values_round_trip(self, h: Harness) -> None:
        """Where the driver declares ``headers``; one that does not refuses
        them instead of dropping them."""
        pipe = await h.pipe()
        if not await h.declares(pipe, "headers"):
            return
        await pipe.push(payload=b"headers", headers=HEADERS)
        job = await pipe.receive()
        assert_headers(job.headers, HEADERS)
        await job.ack()

    @conformance_case
    async def test_name_id_and_priority_are_preserved(self, h: Harness) -> None:
        pipe = await h.pipe()
        ident = f"conformance-{uuid.uuid4()}"
        await pipe.push(name="conformance.identity.ünïcode", payload=b"id", id=ident,
                        priority=3)
        job = await pipe.receive()
        assert job.id == ident
        assert job.name == "conformance.identity.ünïcode"
        assert job.priority == 3
        await job.ack()

    @conformance_case
    async def test_priority_zero_inherits_the_pipeline_priority(self, h: Harness) -> None:
        pipe = await h.pipe(priority=4)
        await pipe.push(payload=b"inherit", priority=0)
        job = await pipe.receive()
        assert job.priority == 4
        await job.ack()

    @conformance_case
    async def test_job_context_names_driver_pipeline_and_headers(self, h: Harness) -> None:
        """``Job.context()`` is RoadRunner's context JSON for this job."""
        pipe = await h.pipe()
        sent = await pipe.push(name="conformance.context", payload=b"ctx",
                               headers={"k": ["v1", "v2"]})
        job = await pipe.receive()
        context = json.loads(job.context())
        assert context["id"] == sent.id
        assert context["job"] == "conformance.context"
        assert context["driver"] == h.factory.driver
        assert context["pipeline"] == pipe.name
        assert context["headers"] == job.headers
        assert isinstance(context["queue"], str)
        await job.ack()

    @conformance_case
    async def test_push_batch_delivers_every_job(self, h: Harness) -> None:
        pipe = await h.pipe()
        batch = [pipe.message(payload=f"batch-{i}".encode(), headers={"i": [str(i)]})
                 for i in range(10)]
        ids = {m.id for m in batch}
        await pipe.driver.push_batch(batch)
        jobs = await pipe.receive_many(10)
        assert {j.id for j in jobs} == ids
        for job in jobs:
            i = int(job.headers["i"][0])
            assert job.payload == f"batch-{i}".encode()
            await job.ack()
        await pipe.expect_nothing()

    @conformance_case
    async def test_a_job_is_settled_only_once(self, h: Harness) -> None:
        pipe = await h.pipe()
        await pipe.push(payload=b"once")
        job = await pipe.receive()
        await job.ack()
        with pytest.raises(JobAlreadySettledError):
            await job.ack()
        with pytest.raises(JobAlreadySettledError):
            await job.nack(requeue=True)
        with pytest.raises(JobAlreadySettledError):
            await job.requeue()
        await pipe.expect_nothing()
