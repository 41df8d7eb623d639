"""Dead letters say what happened: ``rr_attempts``, ``rr_error``, ``rr_failed_at``
and ``rr_original_pipeline`` with real values, on a dead-letter pipeline and in
the driver's own dead-letter store (read back with the broker's client through
the factory's ``dead_letter_options`` and ``dead_letter_messages`` hooks, or, without
the latter, through the driver's readable store as ``rrjobs dlq list`` reads it)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from rrjobs.core.headers import (
    RR_ATTEMPTS,
    RR_ERROR,
    RR_ERROR_LIMIT,
    RR_FAILED_AT,
    RR_ORIGINAL_PIPELINE,
    Headers,
)
from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.runtime.stats import Counters
from rrjobs.testing.factory import HookUnsupported
from rrjobs.testing.harness import Harness, Recorder, conformance_case, hook, poll
from rrjobs.testing.suite.base import SuiteBase

#: Attempts before the job is given up.
ATTEMPTS = 3


class DoomedError(Exception):
    """What the suite's handler raises (its module-qualified name is in ``rr_error``)."""


def _doomed(job: Job, number: int) -> DoomedError:
    return DoomedError(f"{job.id} failed on attempt {number}")


def assert_dead_letter(headers: Headers, *, attempts: int, error: str, pipeline: str,
                       since: datetime, until: datetime) -> None:
    """The four dead-letter headers of ``headers`` hold these values
    (``rr_failed_at``: RFC 3339 UTC between ``since`` and ``until``)."""
    assert headers.get(RR_ATTEMPTS) == [str(attempts)], headers
    assert headers.get(RR_ERROR) == [error], headers
    assert headers.get(RR_ORIGINAL_PIPELINE) == [pipeline], headers
    (stamp,) = headers.get(RR_FAILED_AT) or [""]
    assert stamp.endswith("Z"), f"rr_failed_at is not RFC 3339 UTC: {stamp!r}"
    failed_at = datetime.fromisoformat(stamp)
    assert failed_at.utcoffset() is not None and not failed_at.utcoffset(), stamp
    # Millisecond stamps: allow the truncation below ``since``.
    assert since.replace(microsecond=since.microsecond // 1000 * 1000) <= failed_at <= until, (
        f"rr_failed_at {stamp} is not between {since} and {until}")


class DeadLetterMetadataTests(SuiteBase):
    """A job failed to exhaustion is dead-lettered with its attempts, its error,
    when it was given up and where from."""

    @conformance_case
    async def test_a_dead_letter_pipeline_gets_the_metadata(self, h: Harness) -> None:
        last: list[DoomedError] = []

        def fail(job: Job, number: int) -> DoomedError:
            last.append(_doomed(job, number))
            return last[-1]

        since = datetime.now(UTC)
        main, sent, letter, counters = await through_a_dead_letter_pipeline(h, fail, ATTEMPTS)
        until = datetime.now(UTC)
        assert (letter.id, letter.payload) == (sent.id, sent.payload)
        assert letter.headers.get("k") == ["v"]
        assert_dead_letter(letter.headers, attempts=ATTEMPTS,
                           error=f"{__name__}.DoomedError: {last[-1]}", pipeline=main,
                           since=since, until=until)
        assert (counters.failed, counters.dead_lettered) == (ATTEMPTS, 1)

    @conformance_case
    async def test_the_drivers_dead_letter_gets_the_metadata(self, h: Harness) -> None:
        name = h.new_name("dl")
        extra = await hook(h.factory.dead_letter_options(name))
        try:  # the store exists before the job fails
            await h.factory.dead_letter_messages(name)
            from_factory = True
        except HookUnsupported:  # read back through the driver's own store (rrjobs dlq)
            from_factory = False
        last: list[DoomedError] = []

        async def always_fail(job: Job, number: int) -> None:
            last.append(_doomed(job, number))
            raise last[-1]

        rec = Recorder(always_fail)
        entry = h.pipeline_entry(name, retry={"max_attempts": ATTEMPTS, "backoff": 0},
                                 extra=extra)
        jobs = h.runtime(rec.app, {name: entry}, consume=[name])
        since = datetime.now(UTC)
        async with jobs:
            sent = Message("conformance.doomed", f"doomed-{name}".encode(), name,
                           headers={"k": ["v"]})
            await jobs.push(sent)
            await rec.wait_for(ATTEMPTS, h.factory.delivery_timeout)
            letters: list[Message] = []

            async def arrived() -> bool:
                letters[:] = (await h.factory.dead_letter_messages(name) if from_factory else [
                    Message(d.name, d.payload, name, id=d.id, headers=d.headers)
                    for d in await jobs.dead_letters.list(name)])
                return any(m.payload == sent.payload for m in letters)

            assert await poll(arrived, h.factory.delivery_timeout, 0.1), (
                "the job never reached the driver's dead-letter store")
            until = datetime.now(UTC)
            await rec.expect_count(ATTEMPTS, h.factory.quiet_period)
            stats = {s.state.pipeline: s.counters for s in await jobs.stat()}
        (letter,) = [m for m in letters if m.payload == sent.payload]
        assert (letter.id, letter.name) == (sent.id, sent.name)
        assert letter.headers.get("k") == ["v"]
        assert_dead_letter(letter.headers, attempts=ATTEMPTS,
                           error=f"{__name__}.DoomedError: {last[-1]}", pipeline=name,
                           since=since, until=until)
        assert (stats[name].failed, stats[name].dead_lettered) == (ATTEMPTS, 1)

    @conformance_case
    async def test_a_long_error_is_cut_to_the_documented_length(self, h: Harness) -> None:
        def fail(job: Job, number: int) -> DoomedError:
            return DoomedError("é" * RR_ERROR_LIMIT + "\nsecond line")

        _, _, letter, _ = await through_a_dead_letter_pipeline(h, fail, 1)
        (error,) = letter.headers[RR_ERROR]
        assert error.startswith(f"{__name__}.DoomedError: éé") and error.endswith("é…"), error
        assert RR_ERROR_LIMIT - 2 <= len(error.encode()) <= RR_ERROR_LIMIT
        assert "\n" not in error and letter.headers[RR_ATTEMPTS] == ["1"]


async def through_a_dead_letter_pipeline(
        h: Harness, fail: Callable[[Job, int], BaseException],
        attempts: int) -> tuple[str, Message, Job, Counters]:
    """Push a job that raises ``fail(job, number)`` on its pipeline ``attempts`` times,
    then arrives on the ``retry.dead_letter`` pipeline. Returns that pipeline's
    name, the job pushed, its dead letter as the dead-letter pipeline got it and
    the pipeline's counters."""
    main, dead = h.new_name("main"), h.new_name("dead")

    async def fail_on_main(job: Job, number: int) -> None:
        if job.pipeline == main:
            raise fail(job, number)

    rec = Recorder(fail_on_main)
    entry = h.pipeline_entry(main, retry={"max_attempts": attempts, "backoff": 0,
                                          "dead_letter": dead})
    jobs = h.runtime(rec.app, {main: entry, dead: h.pipeline_entry(dead)},
                     consume=[main, dead])
    async with jobs:
        sent = Message("conformance.doomed", b"doomed", main, headers={"k": ["v"]})
        await jobs.push(sent)
        handled = await rec.wait_for(attempts + 1, h.factory.delivery_timeout)
        await rec.expect_count(attempts + 1, h.factory.quiet_period)
        stats = {s.state.pipeline: s.counters for s in await jobs.stat()}
    assert [j.pipeline for j in handled] == [main] * attempts + [dead]
    return main, sent, handled[-1], stats[main]
