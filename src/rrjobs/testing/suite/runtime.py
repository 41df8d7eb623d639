"""The runtime on top of the driver: retries, dead-letter pipelines, ``stat``."""

from __future__ import annotations

from rrjobs.core.headers import RR_ATTEMPTS, RR_ERROR, RR_ORIGINAL_PIPELINE
from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.testing.harness import Harness, Recorder, conformance_case
from rrjobs.testing.suite.base import SuiteBase


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
        main, dead = h.new_name("main"), h.new_name("dead")

        async def fail_on_main(job: Job, number: int) -> None:
            if job.pipeline == main:
                raise ValueError("always fails")

        rec = Recorder(fail_on_main)
        entry = h.pipeline_entry(main, retry={"max_attempts": 2, "backoff": 0,
                                              "dead_letter": dead})
        jobs = h.runtime(rec.app, {main: entry, dead: h.pipeline_entry(dead)},
                         consume=[main, dead])
        async with jobs:
            sent = Message("conformance.doomed", b"doomed", main, headers={"k": ["v"]})
            await jobs.push(sent)
            handled = await rec.wait_for(3, h.factory.delivery_timeout)
            await rec.expect_count(3, h.factory.quiet_period)
            assert [j.pipeline for j in handled] == [main, main, dead]
            letter = handled[2]
            assert (letter.id, letter.name, letter.payload) == (sent.id, sent.name, b"doomed")
            assert letter.headers.get("k") == ["v"]
            assert letter.headers.get(RR_ORIGINAL_PIPELINE) == [main]
            assert "always fails" in letter.headers.get(RR_ERROR, [""])[0]
            stats = {s.state.pipeline: s.counters for s in await jobs.stat()}
            assert stats[main].dead_lettered == 1

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
