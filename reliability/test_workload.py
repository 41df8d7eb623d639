"""The suite's own tools: the ledger's counts, the rates and recovery time, the result rows
and the page they render to, and a real ``rrjobs serve`` of the ledger app on sqlite."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

import nats
import pytest

from integration.brokers.base import LocalHandle
from reliability import report, workload
from reliability.workload import Fleet, Ledger, Producer, pipe, rates, recovery_time


def write_ledger(directory: Path, pid: int, lines: list[tuple[str, float]]) -> None:
    with open(directory / f"ledger-{pid}.log", "a") as handle:
        for job_id, at in lines:
            handle.write(f"{job_id} {at - 0.01:.6f} {at:.6f} {pid}\n")


def test_tally_counts_lost_and_duplicated_from_ids(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    write_ledger(tmp_path, 1, [("a", 1.0), ("b", 2.0)])
    write_ledger(tmp_path, 2, [("b", 3.0), ("x", 3.5), ("!p", 4.0)])
    tally = ledger.tally(["a", "b", "c"])
    assert (tally.pushed, tally.handled, tally.lost, tally.duplicated) == (3, 2, 1, 1)
    assert tally.lost_ids == ("c",)
    # incremental: a line written in two parts is read once, whole
    with open(tmp_path / "ledger-1.log", "a") as handle:
        handle.write("c 4.9")
    assert ledger.tally(["c"]).handled == 0
    with open(tmp_path / "ledger-1.log", "a") as handle:
        handle.write("00000 5.000000 1\n")
    assert ledger.tally(["a", "b", "c"]).lost == 0
    assert [r.id for r in ledger.read() if r.poison] == ["p"]


def test_rates_and_recovery() -> None:
    # 100 jobs/s for 10 s, nothing for 5 s (the fault at 10, restart at 13), 100/s again from 15
    times = [i / 100 for i in range(1000)] + [15 + i / 100 for i in range(500)]
    got = rates(times, 0.0, 10.0, 13.0)
    assert got.before == pytest.approx(100, rel=0.01)
    assert got.recovery_s == pytest.approx(5.0, abs=0.15)
    assert got.during == pytest.approx(0, abs=1)
    assert got.after == pytest.approx(100, rel=0.05)
    # too few jobs after the restart for a whole window: the first one counts
    assert recovery_time([1.0, 2.0, 20.0], 5.0, 6.0, 100.0) == pytest.approx(15.0)
    assert recovery_time([1.0, 2.0], 5.0, 6.0, 100.0) is None


def test_rows_replace_their_key_and_render(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RRJOBS_RELIABILITY", "full")
    tally = workload.Tally(pushed=10, handled=10, lost=0, duplicated=2)
    first = workload.row(
        "faults",
        "sqlite",
        "serve-kill",
        tally,
        recovery_s=1.5,
        rate_before=100.0,
        rate_during=0.0,
        rate_after=90.0,
    )
    workload.write_row(first, tmp_path)
    workload.write_row({**first, "duplicated": 3}, tmp_path)
    rows = workload.read_rows(tmp_path)
    assert len(rows) == 1 and rows[0]["duplicated"] == 3 and rows[0]["mode"] == "full"
    page = report.render(rows)
    assert "| sqlite | serve-kill | 10 | 10 | 0 | 3 | 1.5 | 100 | 0 | 90 |" in page
    assert "| memory | serve-kill | n/a |" in page  # not durable, said so
    assert "| amqp | serve-kill | not run |" in page
    assert "kafka-group-kill" in page and "| sqlite | kafka-group-kill" not in page
    out = tmp_path / "page.md"
    assert report.main(["--results", str(tmp_path), "--out", str(out)]) == 0
    assert report.main(["--results", str(tmp_path), "--out", str(out), "--check"]) == 0
    assert json.loads((tmp_path / "faults-sqlite.jsonl").read_text())["driver"] == "sqlite"


def test_short_rows_never_go_to_the_committed_results(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RRJOBS_RELIABILITY", raising=False)
    monkeypatch.setenv("RRJOBS_RELIABILITY_OUT", str(tmp_path))
    assert workload.mode() == "short"
    assert workload.results_dir() == tmp_path
    assert workload.counts(5, 500) == 5


async def test_serve_records_every_job_once(tmp_path: Path) -> None:
    """A real ``rrjobs serve`` of the ledger app on a sqlite file: every id once."""
    sqlite = pipe("sqlite", "rel", None, tmp_path)
    job_ids = workload.ids(300)
    async with Fleet(sqlite, tmp_path / "run") as fleet, Producer(sqlite) as producer:
        await producer.push(job_ids, batch=50)
        tally = await fleet.ledger.wait(job_ids, within=60)
    assert tally.as_dict() == {"pushed": 300, "handled": 300, "lost": 0, "duplicated": 0}
    assert {r.pid for r in fleet.ledger.read()} == {fleet.serves[0].pid}
    assert all(0 <= lat < 60_000 for lat in fleet.ledger.latencies_ms())
    assert fleet.serves[0].log_path.name == "serve-0.log"


async def test_own_broker_killed_and_restarted_keeps_its_data(
    own_broker: Callable[[str], LocalHandle], unique_name: str
) -> None:
    """``LocalHandle.kill``/``restart``: the same port and data dir, a stream's messages kept."""
    handle = own_broker("nats")
    first_pid = handle.broker.pid
    nc = await nats.connect(handle.broker.endpoint)
    try:
        js = nc.jetstream()
        await js.add_stream(name=unique_name, subjects=[f"{unique_name}.x"])
        await js.publish(f"{unique_name}.x", b"kept")
    finally:
        await nc.close()
    await asyncio.to_thread(handle.kill)
    assert not handle.running
    took = await asyncio.to_thread(handle.restart)
    assert handle.running and handle.broker.pid != first_pid and took > 0
    nc = await nats.connect(handle.broker.endpoint)
    try:
        info = await nc.jetstream().stream_info(unique_name)
        assert info.state.messages == 1
    finally:
        await nc.close()
