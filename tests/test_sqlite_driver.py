"""The sqlite driver on its own: delivery, order, delays, settlement, pause, state."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from rrjobs.core.errors import (
    AckLostError,
    JobAlreadySettledError,
    PipelineStateError,
)
from rrjobs.core.headers import (
    DEDUCED_BY_RR,
    RR_ATTEMPTS,
    RR_ERROR,
    RR_FAILED_AT,
    RR_ORIGINAL_PIPELINE,
)
from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.core.queue import PriorityQueue
from rrjobs.drivers.sqlite import SQLiteJob
from rrjobs.drivers.sqlite.driver import available_at, now_ms
from tests.conftest import wait_for
from tests.sqlite_helpers import Drivers, FailingCommits, drivers, failing_commits

pytestmark = pytest.mark.sqlite


async def receive(driver: object, within: float = 5.0) -> SQLiteJob:
    queue: PriorityQueue = driver.queue  # type: ignore[attr-defined]
    async with asyncio.timeout(within):
        job = await queue.extract_min()
    assert isinstance(job, SQLiteJob)
    return job


async def nothing(driver: object, within: float = 0.3) -> None:
    queue: PriorityQueue = driver.queue  # type: ignore[attr-defined]
    try:
        async with asyncio.timeout(within):
            job = await queue.extract_min()
    except TimeoutError:
        return
    raise AssertionError(f"unexpected delivery: {job!r}")


async def test_push_receive_ack_deletes_the_row(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make()
        await drv.push(Message("a", b"hello", "p", id="j1", headers={"h": ["1", "2"]}))
        job = await receive(drv)
        assert (job.id, job.name, job.payload, job.headers) == ("j1", "a", b"hello",
                                                               {"h": ["1", "2"]})
        assert job.priority == 10 and job.pipeline == "p" and job.delivery == 1
        await drv.store.flush()  # a reservation may reach the queue before its commit
        assert d.rows("SELECT id, reserved_by IS NOT NULL FROM rrjobs_jobs") == [("j1", 1)]
        await job.ack()
        await drv.store.flush()
        assert d.rows("SELECT count(*) FROM rrjobs_jobs") == [(0,)]
        with pytest.raises(JobAlreadySettledError):
            await job.ack()


async def test_payloads_round_trip_byte_for_byte(tmp_path: Path) -> None:
    payloads = [b"", bytes(range(256)), b"\xff\xfe\x00not utf-8", b"x" * (1 << 20)]
    async with drivers(tmp_path) as d:
        drv = await d.make()
        for p in payloads:
            await drv.push(Message("a", p, "p"))
        got = [await receive(drv) for _ in payloads]
        assert [j.payload for j in got] == payloads


async def test_priority_then_fifo(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make(run=False)
        order = [(5, "a"), (1, "b"), (5, "c"), (1, "d"), (3, "e"), (1, "f")]
        for prio, name in order:
            await drv.push(Message(name, b"", "p", priority=prio))
        await drv.push_batch([Message(n, b"", "p", priority=2) for n in ("g", "h", "i")])
        await drv.run(drv.pipeline)
        got = [(await receive(drv)).name for _ in range(9)]
        assert got == ["b", "d", "f", "g", "h", "i", "e", "a", "c"]


async def test_delay_is_exact_without_polling(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make(poll_interval=0)  # no polling at all: only exact wake-ups
        start = time.monotonic()
        await drv.push(Message("late", b"", "p", delay=0.4))
        await drv.push(Message("early", b"", "p", delay=0.15))
        first = await receive(drv)
        t1 = time.monotonic() - start
        second = await receive(drv)
        t2 = time.monotonic() - start
        assert (first.name, second.name) == ("early", "late")
        assert 0.15 <= t1 < 0.15 + 0.25
        assert 0.4 <= t2 < 0.4 + 0.25


async def test_delays_in_the_same_millisecond_do_not_overwrite(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make()
        await drv.push_batch([Message("a", str(i).encode(), "p", delay=0.05) for i in range(50)])
        assert len({r[0] for r in d.rows("SELECT available_at FROM rrjobs_jobs")}) <= 2
        got = [await receive(drv) for _ in range(50)]
        assert sorted(int(j.payload) for j in got) == list(range(50))
        assert [int(j.payload) for j in got] == list(range(50))  # FIFO among equals


def test_delays_round_up_to_the_millisecond() -> None:
    before = now_ms()
    assert available_at(0) == 0  # no delay: ready at once
    assert available_at(0.0001) >= before + 1  # never early
    assert available_at(1.5) >= before + 1500


async def test_nack_without_requeue_deletes(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make()
        assert not drv.capabilities.dead_letter
        await drv.push(Message("a", b"x", "p"))
        job = await receive(drv)
        await job.nack()
        await nothing(drv)
        assert d.rows("SELECT count(*) FROM rrjobs_jobs") == [(0,)]
        assert d.rows("SELECT count(*) FROM rrjobs_dead") == [(0,)]


async def test_nack_with_dead_letter_option_moves_the_job(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make(dead_letter=True)
        assert drv.capabilities.dead_letter
        await drv.push(Message("a", b"x", "p", id="dl", headers={"k": ["v"]}))
        job = await receive(drv)
        await job.nack(requeue=False, headers={RR_ERROR: ["ValueError: no"]})
        await nothing(drv)
        rows = d.rows("SELECT pipeline, id, name, payload, headers, deliveries FROM rrjobs_dead")
        ((pipeline, ident, name, payload, headers, deliveries),) = rows
        assert (pipeline, ident, name, payload, deliveries) == ("p", "dl", "a", b"x", 1)
        letter = json.loads(headers)
        assert letter.pop(RR_FAILED_AT)[0].endswith("Z")
        assert letter == {"k": ["v"], RR_ATTEMPTS: ["1"], RR_ERROR: ["ValueError: no"],
                          RR_ORIGINAL_PIPELINE: ["p"]}
        assert d.rows("SELECT count(*) FROM rrjobs_jobs") == [(0,)]


async def test_nack_with_requeue_redelivers_at_the_end(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make(prefetch=1)
        await drv.push_batch([Message(n, b"", "p") for n in ("a", "b")])
        first = await receive(drv)
        assert first.name == "a"
        await first.nack(requeue=True)
        second = await receive(drv)
        await second.ack()
        third = await receive(drv)
        assert (second.name, third.name) == ("b", "a")
        assert third.delivery == 2 and third.id == first.id


async def test_requeue_merges_headers_and_applies_the_delay(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make()
        await drv.push(Message("a", b"x", "p", headers={"keep": ["1"], "over": ["old"]}))
        job = await receive(drv)
        start = time.monotonic()
        await job.requeue({"over": ["new", "2"], RR_ATTEMPTS: ["1"]}, delay=0.2)
        again = await receive(drv)
        assert time.monotonic() - start >= 0.2
        assert again.headers == {"keep": ["1"], "over": ["new", "2"], RR_ATTEMPTS: ["1"]}
        assert again.attempts == 1 and again.id == job.id and again.payload == b"x"


async def test_pause_returns_prefetched_jobs_and_holds_new_ones(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make()
        await drv.push_batch([Message("a", str(i).encode(), "p") for i in range(5)])
        held = await receive(drv)
        await wait_for(lambda: drv.queue.count("p") == 4)
        await drv.pause("p")
        assert drv.queue.count("p") == 0
        with pytest.raises(PipelineStateError, match="nothing to pause"):
            await drv.pause("p")
        # back in the file, in their old place; only the handler's job stays reserved
        assert d.rows("SELECT count(*) FROM rrjobs_jobs WHERE reserved_by IS NOT NULL") == [(1,)]
        await drv.push(Message("a", b"new", "p"))
        await nothing(drv)
        state = await drv.state()
        assert (state.active, state.reserved, state.ready) == (5, 1, False)
        await held.ack()  # settling while paused works
        await drv.resume("p")
        with pytest.raises(PipelineStateError, match="already in the active state"):
            await drv.resume("p")
        got = [(await receive(drv)).payload for _ in range(5)]
        assert got == [b"1", b"2", b"3", b"4", b"new"]


async def test_state_counts_come_from_the_file(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make(run=False)
        await drv.push_batch([Message("a", b"", "p") for _ in range(3)])
        await drv.push(Message("a", b"", "p", delay=60))
        s = await drv.state()
        assert (s.active, s.delayed, s.reserved, s.ready) == (3, 1, 0, False)
        assert s.driver == "sqlite" and s.queue == drv.store.path
        await drv.run(drv.pipeline)
        job = await receive(drv)
        await wait_for(lambda: drv.queue.count("p") == 2)
        s = await drv.state()
        # two wait in the priority queue (active), one is in a handler (reserved)
        assert (s.active, s.delayed, s.reserved, s.ready) == (2, 1, 1, True)
        await job.ack()
        s = await drv.state()
        assert (s.active, s.delayed, s.reserved) == (2, 1, 0)


async def test_prefetch_bounds_reservations(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make(prefetch=3)
        await drv.push_batch([Message("a", str(i).encode(), "p") for i in range(10)])
        await wait_for(lambda: drv.queue.count("p") == 3)
        await drv.store.flush()  # a reservation may reach the queue before its commit
        assert d.rows("SELECT count(*) FROM rrjobs_jobs WHERE reserved_by IS NOT NULL") == [(3,)]
        seen = []
        for _ in range(10):
            job = await receive(drv)
            seen.append(job.payload)
            assert len(drv._outstanding) <= 3
            await job.ack()
        assert seen == [str(i).encode() for i in range(10)]


async def test_auto_ack_jobs_are_deleted_on_receipt_and_never_redelivered(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make()
        await drv.push(Message("a", b"x", "p", auto_ack=True))
        job = await receive(drv)
        assert job.auto_ack
        await job.ack()  # the worker pool acks an auto_ack job before its handler
        await job.ack()  # no-op afterwards
        await job.nack(requeue=True)  # no-op too
        await drv.stop()
        again = await d.make("p")
        await nothing(again)
        assert d.rows("SELECT count(*) FROM rrjobs_jobs") == [(0,)]


async def test_stop_returns_unsettled_jobs_to_a_new_consumer(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make()
        await drv.push_batch([Message("a", str(i).encode(), "p") for i in range(3)])
        held = await receive(drv)
        await wait_for(lambda: drv.queue.count("p") == 2)
        await drv.stop()
        with pytest.raises(PipelineStateError):
            await held.ack()
        with pytest.raises(PipelineStateError, match="stopped"):
            await drv.push(Message("a", b"", "p"))
        fresh = await d.make("p")
        got = [await receive(fresh) for _ in range(3)]
        assert [j.payload for j in got] == [b"0", b"1", b"2"]
        assert [j.delivery for j in got] == [2, 2, 2]
        await fresh.store.flush()  # a reservation may reach the queue before its commit
        assert (await drv.state()).reserved == 3  # a stopped driver still reads the file


async def test_restart_keeps_delayed_jobs_and_their_due_time(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make(run=False)
        start = time.monotonic()
        await drv.push(Message("a", b"later", "p", delay=0.5, headers={"h": ["v"]}))
        await drv.stop()
        fresh = await d.make("p")
        job = await receive(fresh)
        assert time.monotonic() - start >= 0.5
        assert job.payload == b"later" and job.headers == {"h": ["v"]}


async def test_lease_expiry_of_an_unknown_owner_returns_the_job(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make(run=False)
        await drv.push(Message("a", b"x", "p"))
        # a reservation by a process on another host: only its lease can tell
        until = now_ms() + 300
        conn = d.db()
        conn.execute("UPDATE rrjobs_jobs SET reserved_by = 'elsewhere:1:abc', "
                     "reserved_until = ?, deliveries = 1", (until,))
        conn.close()
        await drv.run(drv.pipeline)
        await nothing(drv, 0.15)
        job = await receive(drv, within=2.0)  # woken by the lease expiry, not by polling
        assert now_ms() >= until
        assert job.delivery == 2


async def test_leases_of_jobs_waiting_in_the_priority_queue_are_renewed(
        tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make(lease=1)
        await drv.push(Message("a", b"x", "p"))
        await wait_for(lambda: drv.queue.count("p") == 1)
        rival = await d.make("p")  # a second consumer of the same pipeline and file
        await nothing(rival, 2.5)  # > 2 leases: renewed while it waits for a handler
        job = await receive(drv)
        assert job.delivery == 1
        await job.ack()


async def test_a_held_job_keeps_its_lease_only_while_extended(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make(lease=1)
        await drv.push(Message("a", b"x", "p"))
        job = await receive(drv)
        for _ in range(6):  # 2 s, extended every 1/3 s
            await nothing(drv, 1 / 3)
            await job.extend_lease(1)
        start = time.monotonic()
        again = await receive(drv, within=3)  # no more extensions: it comes back
        assert time.monotonic() - start >= 0.5
        assert (again.id, again.delivery) == (job.id, 2)
        with pytest.raises(AckLostError):
            await job.ack()  # the stale holder has lost it
        await again.ack()
        await drv.store.flush()
        assert d.rows("SELECT count(*) FROM rrjobs_jobs") == [(0,)]


async def test_extend_lease_and_a_lost_reservation(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make()
        await drv.push(Message("a", b"x", "p"))
        job = await receive(drv)
        assert job.lease == 30.0
        await job.extend_lease(600)
        (until,) = d.rows("SELECT reserved_until FROM rrjobs_jobs")[0]
        assert until >= now_ms() + 590_000
        conn = d.db()  # somebody else took the job over
        conn.execute("UPDATE rrjobs_jobs SET reserved_by = 'elsewhere:1:x'")
        conn.close()
        with pytest.raises(AckLostError):
            await job.extend_lease(10)
        with pytest.raises(AckLostError):
            await job.requeue()


async def test_rows_written_by_another_program_are_consumed(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make(poll_interval=0.05)
        await nothing(drv, 0.2)  # idle polls first: the file did not change, nothing reserved
        conn = d.db()
        conn.execute("INSERT INTO rrjobs_jobs (pipeline, payload) VALUES ('p', 'raw text')")
        conn.execute("INSERT INTO rrjobs_jobs (pipeline, payload, headers) VALUES "
                     "('p', x'00ff', '{\"a\": \"b\", \"n\": [1]}')")
        conn.close()
        first = await receive(drv)  # seen by polling: another process wrote it
        second = await receive(drv)
        assert first.name == DEDUCED_BY_RR and first.payload == b"raw text"
        assert len(first.id) == 36 and first.id != second.id
        assert second.payload == b"\x00\xff" and second.headers == {"a": ["b"], "n": ["1"]}
        assert d.rows("SELECT id FROM rrjobs_jobs WHERE seq = ?", first.seq) == [(first.id,)]


async def test_two_pipelines_share_one_file_without_interfering(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        queue = PriorityQueue()  # one priority queue, as in the runtime
        a = await d.make("a", queue=queue, priority=1)
        b = await d.make("b", queue=queue, priority=2, dead_letter=True)
        assert a.store is b.store
        await a.push_batch([Message("ja", str(i).encode(), "a") for i in range(3)])
        await b.push_batch([Message("jb", str(i).encode(), "b") for i in range(3)])
        got: list[Job] = []
        async with asyncio.timeout(5):
            while len(got) < 6:
                got.append(await queue.extract_min())
        assert [(j.pipeline, j.name) for j in got] == [("a", "ja")] * 3 + [("b", "jb")] * 3
        for j in got:
            await j.ack()
        await a.pause("a")
        await a.push(Message("ja", b"held", "a"))
        await b.push(Message("jb", b"flows", "b"))
        job = await receive(b)
        assert job.pipeline == "b" and job.payload == b"flows"
        await job.nack()  # b dead-letters; a is unaffected
        sa, sb = await a.state(), await b.state()
        assert (sa.active, sa.ready, sb.active, sb.ready) == (1, False, 0, True)
        await a.stop()  # the file stays open for b
        await b.push(Message("jb", b"after", "b"))
        assert (await receive(b)).payload == b"after"
        rows = d.rows("SELECT pipeline, count(*) FROM rrjobs_jobs GROUP BY pipeline")
        assert rows == [("a", 1), ("b", 1)]
        assert d.rows("SELECT pipeline, payload FROM rrjobs_dead") == [("b", b"flows")]


async def test_pushes_wake_a_second_driver_of_the_same_file(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        producer = await d.make("p", run=False)
        consumer = await d.make("p", poll_interval=0)
        await producer.push(Message("a", b"x", "p"))
        job = await receive(consumer, within=1.0)
        assert job.payload == b"x"


async def test_boltdb_alias(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make(alias=True, permissions="0755", priority=4, prefetch=1000)
        assert drv.name == "boltdb"
        await drv.push(Message("a", b"x", "p", headers={"h": ["1"]}))
        job = await receive(drv)
        assert job.driver_name == "boltdb" and job.priority == 4
        assert json.loads(job.context())["driver"] == "boltdb"
        assert (await drv.state()).driver == "boltdb"


async def test_double_settlement_is_refused(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make()
        await drv.push(Message("a", b"x", "p"))
        job = await receive(drv)
        await job.nack(requeue=True)
        with pytest.raises(JobAlreadySettledError):
            await job.ack()
        again = await receive(drv)
        await again.ack()


async def test_concurrent_pushes_share_commits_and_keep_their_order(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make(run=False)
        commits = drv.store.commits
        await asyncio.gather(*(drv.push(Message("a", str(i).encode(), "p")) for i in range(200)))
        assert drv.store.commits - commits < 200  # group commit: fewer commits than pushes
        rows = d.rows("SELECT payload FROM rrjobs_jobs ORDER BY seq")
        assert [int(r[0]) for r in rows] == list(range(200))


async def test_a_full_priority_queue_holds_reservations_that_pause_returns(
        tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make(queue=PriorityQueue(maxsize=2), prefetch=10)
        await drv.push_batch([Message("a", str(i).encode(), "p") for i in range(10)])
        await wait_for(lambda: len(drv.feed.ready) == 8)  # reserved, waiting for room
        await drv.store.flush()  # a reservation may reach the queue before its commit
        assert d.rows("SELECT count(*) FROM rrjobs_jobs WHERE reserved_by IS NOT NULL") == [(10,)]
        await drv.pause("p")
        assert d.rows("SELECT count(*) FROM rrjobs_jobs WHERE reserved_by IS NOT NULL") == [(0,)]
        await drv.resume("p")
        got = [(await receive(drv)).payload for _ in range(10)]
        assert got == [str(i).encode() for i in range(10)]


async def caught_up(d: object, drv: object) -> None:
    """Push, receive and ack one job, so the consumer has caught up with the file."""
    await drv.push(Message("warm", b"", "p"))  # type: ignore[attr-defined]
    await (await receive(drv)).ack()
    await wait_for(lambda: not drv._backlog)  # type: ignore[attr-defined]
    # ack() returns once its delete is queued: commit it, so the file holds only
    # what the test pushes next
    await drv.store.flush()  # type: ignore[attr-defined]


async def test_a_push_while_caught_up_is_in_the_queue_when_push_returns(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make()
        await caught_up(d, drv)
        await drv.push(Message("a", b"handed", "p", id="h1", headers={"k": ["v"]}))
        # committed already reserved for this consumer, queued without being read back
        assert drv.queue.count("p") == 1
        assert d.rows("SELECT id, reserved_by, deliveries FROM rrjobs_jobs") == [
            ("h1", drv.owner, 1)]
        job = await receive(drv)
        assert (job.id, job.payload, job.headers, job.delivery) == ("h1", b"handed",
                                                                     {"k": ["v"]}, 1)
        await job.ack()
        await drv.store.flush()
        assert d.rows("SELECT count(*) FROM rrjobs_jobs") == [(0,)]


async def test_hand_off_keeps_fifo_behind_jobs_waiting_in_the_file(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make(prefetch=2)
        await caught_up(d, drv)
        await drv.push_batch([Message("a", str(i).encode(), "p") for i in range(5)])
        assert drv.queue.count("p") == 2  # the prefetch room was handed off, 3 wait in the file
        await drv.push(Message("a", b"5", "p"))  # behind those 3: not handed off
        await drv.push_batch([Message("a", str(i).encode(), "p") for i in (6, 7)])
        seen = []
        for _ in range(8):
            job = await receive(drv)
            seen.append(job.payload)
            await job.ack()
        assert seen == [str(i).encode() for i in range(8)]
        await wait_for(lambda: not drv._backlog)  # caught up again: hand-offs resume
        await drv.push(Message("a", b"8", "p"))
        assert drv.queue.count("p") == 1


async def test_a_pause_during_a_hand_off_returns_the_job_to_the_file(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make()
        await caught_up(d, drv)
        push = asyncio.create_task(drv.push(Message("a", b"x", "p", id="racing")))
        await asyncio.sleep(0)  # the insert (already reserved) is submitted, not yet committed
        assert drv._handoff_pending == 1
        await drv.pause("p")
        await push
        assert drv.queue.count("p") == 0 and not drv._outstanding
        assert d.rows("SELECT id, reserved_by FROM rrjobs_jobs") == [("racing", None)]
        await drv.resume("p")
        job = await receive(drv)
        assert job.id == "racing"
        await job.ack()
        await nothing(drv)


async def test_a_handed_off_job_of_a_stopped_process_is_delivered_again(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        first = await d.make()
        await caught_up(d, first)
        await first.push(Message("a", b"x", "p", id="kept"))
        assert first.queue.count("p") == 1
        await first.stop()
        second = await d.make()
        job = await receive(second)
        assert (job.id, job.delivery) == ("kept", 2)
        await job.ack()


async def three_jobs_and_a_failing_reservation(d: Drivers, monkeypatch: pytest.MonkeyPatch,
                                               delay: float) -> type[FailingCommits]:
    """Push jobs v0-v2 into the file, close it, and make the commit of the next
    reservation fail after ``delay`` seconds (the consumer's connection is a new one)."""
    producer = await d.make(run=False)
    await producer.push_batch([Message("a", b"x", "p", id=f"v{i}") for i in range(3)])
    await producer.stop()
    return failing_commits(monkeypatch, "UPDATE rrjobs_jobs SET reserved_by = ?", delay=delay)


async def test_a_reservation_whose_commit_fails_is_delivered_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # A reservation is handed to the consumer before its transaction commits. Here
    # the commit fails slowly, once the jobs are in the queue: they lose their
    # reservation (settling them fails as after a lost lease), and the rows, still
    # ready, are reserved and delivered again.
    async with drivers(tmp_path) as d:
        faults = await three_jobs_and_a_failing_reservation(d, monkeypatch, delay=0.5)
        drv = await d.make(prefetch=3)  # room for the new reservation only once voided
        first = [await receive(drv) for _ in range(3)]  # while the commit still runs
        await wait_for(lambda: any("a reservation failed to commit" in r.getMessage()
                                   for r in caplog.records))
        assert faults.failed == 1 and "disk I/O" in caplog.text
        for job in first:
            with pytest.raises(AckLostError):
                await job.ack()
        again = [await receive(drv) for _ in range(3)]
        for job in again:
            await job.ack()
        assert sorted(j.id for j in first) == sorted(j.id for j in again) == ["v0", "v1", "v2"]
        await drv.store.flush()
        assert d.rows("SELECT count(*) FROM rrjobs_jobs") == [(0,)]


async def test_acks_of_a_reservation_whose_commit_failed_still_delete_the_jobs(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    # Acked before the failure was known, the jobs are deleted by those acks (they
    # were handled): nothing is delivered again.
    async with drivers(tmp_path) as d:
        faults = await three_jobs_and_a_failing_reservation(d, monkeypatch, delay=0.3)
        drv = await d.make()
        for _ in range(3):
            await (await receive(drv)).ack()
        await wait_for(lambda: faults.failed == 1)
        await drv.store.flush()
        await drv.store.flush()  # the acks ride in the next reservation, or go alone
        assert d.rows("SELECT count(*) FROM rrjobs_jobs") == [(0,)]
        await nothing(drv)
    assert "a reservation failed to commit" in caplog.text
