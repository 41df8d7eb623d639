"""Poison input: messages no rrjobs producer writes, published with the broker's own client.

No input may stop a consumer. Each poison message ends one of three ways:

(a) delivered as an ordinary foreign job: name ``deduced_by_rr``, the body
    untouched (fine for a driver that treats the body as opaque);
(b) delivered as a failed job that names the decode error (see
    :func:`assert_poison_or_foreign`), which the runtime settles as a failure;
(c) moved to the broker's dead-letter store (the factory's ``dead_letters``).

In every case it is delivered at most once, it frees its prefetch slot, and a
good message published after it is still received.

A driver with no wire format (``factory.wire`` false) can be given such bytes
only in a push: the same bodies, and the same header values as a job header,
must then arrive exactly as pushed (the driver never parses them), once each,
without stalling the consumer.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping

from rrjobs.core.headers import DEDUCED_BY_RR, RR_ERROR, RR_HEADERS
from rrjobs.core.job import Job
from rrjobs.testing.factory import MIB, HookUnsupported
from rrjobs.testing.harness import Harness, Pipe, conformance_case, poll
from rrjobs.testing.suite.base import SuiteBase
from rrjobs.testing.suite.delivery import UNBOUNDED

#: Nesting depth of the deeply nested JSON cases (far beyond any parser's recursion limit).
DEPTH = 100_000
#: Bytes that are neither UTF-8 nor JSON, whatever random bytes follow them.
GARBAGE_PREFIX = b"\xff\xfe\x00{\x80garbage"


#: Valid JSON that is not an object of string lists.
NOT_AN_OBJECT = b'["a", 1, null]'
#: The job header a driver without a wire format is pushed the poison header values in.
POISON_HEADER = "x-poison"
#: A nesting depth that fits a 64 KiB header and is still far beyond any parser's limit.
HEADER_DEPTH = 20_000


def deep_array(depth: int = DEPTH) -> bytes:
    return b"[" * depth + b"]" * depth


def deep_object(depth: int = DEPTH) -> bytes:
    return b'{"a":' * depth + b"0" + b"}" * depth


def garbage() -> bytes:
    return GARBAGE_PREFIX + os.urandom(256)


def huge_header() -> bytes:
    """1 MiB of valid JSON: a job-header object with one huge value."""
    filler = MIB - len(b'{"big":[""]}')
    return json.dumps({"big": ["x" * filler]}).encode()


def assert_poison_or_foreign(job: Job, body: bytes, name: str = DEDUCED_BY_RR) -> str:
    """Check a delivered poison message; return ``"foreign"`` or ``"failed"``.

    The one place that says what a poison message delivered as a job may look
    like: either an ordinary foreign job (``name``, by default
    ``deduced_by_rr``; ``body`` untouched) or a failed job marked with the
    decode error in ``headers["rr_error"]`` and a ``failure`` attribute.
    """
    failure = getattr(job, "failure", None)
    errors = job.headers.get(RR_ERROR)
    if failure is not None or errors:
        assert errors and errors[0], (
            f"a poison job marked failed must name its decode error in {RR_ERROR!r}: "
            f"{job!r} headers={list(job.headers)}")
        assert failure is not None, (
            f"a poison job with {RR_ERROR!r} must carry its failure: {job!r}")
        return "failed"
    assert job.name == name, (
        f"a poison message delivered as a job that is not marked failed must be a "
        f"foreign job ({name!r}), got {job.name!r}")
    assert job.payload == body, (
        f"a foreign job's body must be untouched: {len(job.payload)} bytes "
        f"{job.payload[:40]!r}, published {len(body)} bytes {body[:40]!r}")
    return "foreign"


class Poison:
    """The poison messages of one test, by payload, and where each ended up."""

    def __init__(self, h: Harness, pipe: Pipe) -> None:
        self.h = h
        self.pipe = pipe
        self.sent: dict[bytes, str] = {}
        #: On a driver without a wire format: the header value each body was pushed with.
        self.pushed_headers: dict[bytes, str] = {}
        self.outcome: dict[str, str] = {}
        self.name = DEDUCED_BY_RR

    async def body(self, what: str, body: bytes, headers: Mapping[str, str] | None = None
                   ) -> None:
        self.name = await self.h.publish_foreign(self.pipe, body, headers)
        self.sent[body] = what

    async def header(self, what: str, value: bytes) -> bool:
        """Publish a message whose ``rr_headers`` (or the store's equivalent) is
        ``value``; ``False`` when the broker cannot carry such a value. Without
        a wire format, push a job with ``value`` as the value of a job header."""
        body = f"header-poison-{what}-{len(self.sent)}".encode()
        if not self.h.factory.wire:
            text = value.decode("latin-1")
            self.name = await self.h.publish_foreign(self.pipe, body, {POISON_HEADER: text})
            self.pushed_headers[body] = text
        else:
            try:
                await self.h.factory.publish_raw_headers(self.pipe, body, {RR_HEADERS: value})
            except HookUnsupported:
                return False
        self.sent[body] = what
        return True

    async def then_good(self) -> None:
        """Publish a good message and check every poison message is accounted for."""
        good = b"good-after-poison"
        await self.h.publish_foreign(self.pipe, good, {"kind": "good"})
        pending = dict(self.sent)
        factory = self.h.factory
        got_good = False
        try:
            async with asyncio.timeout(factory.delivery_timeout + len(self.sent) / 10):
                while not got_good:
                    got_good = await self._take(pending, good)
        except TimeoutError:
            raise AssertionError(
                f"{self.pipe}: the consumer stalled: a good message published after "
                f"{len(self.sent)} poison messages ({sorted(set(self.sent.values()))}) "
                f"was not delivered within the timeout; outcomes so far: {self.outcome}"
            ) from None
        # Poison published before the good message may still be on its way.
        with_slack = factory.quiet_period + 1.0
        while pending:
            try:
                async with asyncio.timeout(with_slack):
                    await self._take(pending, good)
            except TimeoutError:
                break
        if pending:
            await self._dead_lettered(pending)
        await self.pipe.expect_nothing()
        after = await self.pipe.push(payload=b"pushed-after-poison")
        job = await self.pipe.receive()
        assert job.id == after.id
        await job.ack()

    async def _take(self, pending: dict[bytes, str], good: bytes) -> bool:
        job = await self.pipe.queue.extract_min()
        if job.payload == good:
            assert job.name == self.name
            await job.ack()
            return True
        what = self.sent.get(job.payload)
        assert what is not None, f"an unexpected job was delivered: {job!r} {job.payload[:40]!r}"
        assert job.payload in pending, f"poison message {what!r} was delivered twice"
        del pending[job.payload]
        self.outcome[what] = assert_poison_or_foreign(job, job.payload, self.name)
        if not self.h.factory.wire:
            assert self.outcome[what] == "foreign", (
                f"{what!r} was pushed through a driver without a wire format: it must "
                f"arrive as pushed, not as a failed job")
            if job.payload in self.pushed_headers:
                assert job.headers.get(POISON_HEADER) == [self.pushed_headers[job.payload]], (
                    f"{what!r}: the header value changed in the driver")
        if self.outcome[what] == "failed":
            await job.nack()
        else:
            await job.ack()
        return False

    async def _dead_lettered(self, pending: dict[bytes, str]) -> None:
        names = sorted(set(pending.values()))
        try:
            await self.h.factory.dead_letters(self.pipe)
        except HookUnsupported as exc:
            raise AssertionError(
                f"{self.pipe}: poison messages {names} were neither delivered nor can be "
                f"found in a dead-letter store ({exc}): they were lost") from None

        async def all_dead() -> bool:
            dead = set(await self.h.factory.dead_letters(self.pipe))
            return all(body in dead for body in pending)

        assert await poll(all_dead, self.h.factory.delivery_timeout, 0.2), (
            f"{self.pipe}: poison messages {names} were neither delivered nor dead-lettered")
        for what in pending.values():
            self.outcome[what] = "dead-lettered"


class PoisonBodyTests(SuiteBase):
    """Garbage, deeply nested and oversized bodies never stop or stall a consumer."""

    @conformance_case
    async def test_garbage_body(self, h: Harness) -> None:
        """Random bytes that are not UTF-8 (one starting like JSON, one like a
        RoadRunner JSON body)."""
        pipe = await h.pipe()
        poison = Poison(h, pipe)
        await poison.body("garbage", garbage())
        await poison.body("garbage JSON", b'{"job": "x", "payload": ' + garbage())
        await poison.then_good()

    @conformance_case
    async def test_deeply_nested_json_body(self, h: Harness) -> None:
        pipe = await h.pipe()
        poison = Poison(h, pipe)
        await poison.body("nested array body", deep_array())
        await poison.body("nested object body", deep_object())
        await poison.then_good()

    @conformance_case
    async def test_body_over_max_payload(self, h: Harness) -> None:
        """A broker may carry more than the driver sends; the consumer copes. A
        driver that declares no ``max_payload`` has nothing over it: a body of
        :data:`~rrjobs.testing.suite.delivery.UNBOUNDED` bytes arrives whole."""
        pipe = await h.pipe()
        limit = pipe.capabilities.max_payload
        poison = Poison(h, pipe)
        if limit is None:
            await poison.body("body over 4 MiB", b"o" * UNBOUNDED)
            await poison.then_good()
            return
        broker = h.factory.broker_max_body
        assert broker is None or broker > limit, (
            f"the broker takes bodies of at most {broker} bytes, the driver's max_payload is "
            f"{limit}: run the broker with a larger limit, or declare the broker's")
        await poison.body("body over max_payload", b"o" * (limit + 1))
        await poison.then_good()

    @conformance_case
    async def test_poison_bodies_free_their_prefetch_slots(self, h: Harness) -> None:
        """More poison bodies than the prefetch window, then a good message: it arrives."""
        pipe = await _small_window(h)
        poison = Poison(h, pipe)
        for i in range(PREFETCH_WINDOW + 2):
            await poison.body(f"nested body {i}", deep_object() + str(i).encode())
            await poison.body(f"garbage body {i}", garbage())
        await poison.then_good()


class PoisonHeaderTests(SuiteBase):
    """Job headers (``rr_headers``, or the store's job-header field) that are
    nested, huge, garbage or not an object never stop or stall a consumer."""

    @conformance_case
    async def test_poison_job_headers(self, h: Harness) -> None:
        pipe = await h.pipe()
        poison = Poison(h, pipe)
        carried = [await poison.header("nested array headers", deep_array()),
                   await poison.header("nested object headers", deep_object()),
                   await poison.header("nested headers in 64 KiB", deep_array(HEADER_DEPTH)),
                   await poison.header("garbage headers", garbage()),
                   await poison.header("not an object headers", NOT_AN_OBJECT),
                   await poison.header("huge headers", huge_header())]
        assert any(carried), f"the {h.factory.driver!r} factory published no raw job headers"
        await poison.then_good()

    @conformance_case
    async def test_poison_headers_free_their_prefetch_slots(self, h: Harness) -> None:
        """Nested headers where the broker carries them, else headers that are
        not an object (what fits a broker's smallest header limit)."""
        pipe = await _small_window(h)
        poison = Poison(h, pipe)
        for i in range(PREFETCH_WINDOW + 2):
            if await poison.header(f"nested headers {i}", deep_array(HEADER_DEPTH)):
                continue
            assert await poison.header(f"not an object headers {i}", NOT_AN_OBJECT), (
                f"the {h.factory.driver!r} factory published no raw job headers")
        await poison.then_good()


#: The prefetch window of the prefetch tests (fewer than the poison messages sent).
PREFETCH_WINDOW = 3


async def _small_window(h: Harness) -> Pipe:
    try:
        extra = h.factory.prefetch_options(PREFETCH_WINDOW)
    except HookUnsupported as exc:
        raise AssertionError(f"the prefetch tests need prefetch_options: {exc}") from None
    return await h.pipe(extra=extra)
