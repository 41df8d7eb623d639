"""The runtime on top of the driver: retries, dead-letter pipelines, ``stat``."""

from __future__ import annotations

from rrjobs.core.headers import RR_ATTEMPTS, RR_ERROR, RR_ORIGINAL_PIPELINE
from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.testing.harness import Harness, Recorder, conformance_case
from rrjobs.testing.suite.base import SuiteBase
from rrjobs.testing.suite.dead_letter_metadata import through_a_dead_letter_pipeline


class RuntimeTests(SuiteBase):
    """Handler outcomes map onto the driver's ``requeue``/``ack`` the same on every driver."""

    @conformance_case
    async def test_failing_handler_is_retried_with_an_attempts_header(self,
                                                                      h: Harness) -> None:
        async def flaky(job: Job, number: int) -> None:
            if number < 3:
                raise RuntimeError(f"failure {number}")

        rec = Recorder(flaky)
        name = h.new_name()
        entry = h.pipeline_entry(name, retry={"max_attempts": 3, "backoff": 0})
        jobs = h.runtime(rec.app, {name: entry}, consume=[name])
        async with jobs:
            sent = Message("conformance.flaky", b"flaky", name, headers={"k": ["v"]})
            await jobs.push(sent)
            handled = await rec.wait_for(3, h.factory.delivery_timeout)
            await rec.expect_count(3, h.factory.quiet_period)
            assert [j.id for j in handled] == [sent.id] * 3
            assert [j.attempts for j in handled] == [0, 1, 2]
            assert all(j.headers.get("k") == ["v"] for j in handled)
            assert handled[1].headers.get(RR_ATTEMPTS) == ["1"]
            (stat,) = await jobs.stat()
            assert (stat.counters.failed, stat.counters.retried) == (2, 2)

    @conformance_case
    async def test_exhausted_retries_go_to_the_dead_letter_pipeline(self, h: Harness) -> None:
        def fail(job: Job, number: int) -> BaseException:
            return ValueError("always fails")

        main, sent, letter, counters = await through_a_dead_letter_pipeline(h, fail, 2)
        assert (letter.id, letter.name, letter.payload) == (sent.id, sent.name, b"doomed")
        assert letter.headers.get("k") == ["v"]
        assert letter.headers.get(RR_ORIGINAL_PIPELINE) == [main]
        assert letter.headers.get(RR_ERROR) == ["ValueError: always fails"]
        assert counters.dead_lettered == 1

    @conformance_case
    async def test_stat_reports_every_pipeline(self, h: Harness) -> None:
        rec = Recorder()
        a, b = h.new_name("a"), h.new_name("b")
        jobs = h.runtime(rec.app, {a: h.pipeline_entry(a), b: h.pipeline_entry(b)},
                         consume=[a, b])
        async with jobs:
            await jobs.push(Message("conformance.stat", b"a", a))
            await jobs.push_batch([Message("conformance.stat", b"b1", b),
                                   Message("conformance.stat", b"b2", b)])
            await rec.wait_for(3, h.factory.delivery_timeout)
            stats = {s.state.pipeline: s for s in await jobs.stat()}
            assert set(stats) == {a, b}
            assert {s.state.driver for s in stats.values()} == {h.factory.driver}
            assert (stats[a].counters.pushed, stats[b].counters.pushed) == (1, 2)
            assert all(s.state.ready and not s.state.error_message for s in stats.values())
