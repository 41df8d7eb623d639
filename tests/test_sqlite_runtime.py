"""The sqlite driver under the jobs runtime: handlers, retries, restarts, tooling."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from rrjobs import App, Jobs, Message
from rrjobs.cli import cli
from rrjobs.core.headers import RR_ATTEMPTS, RR_ERROR, RR_ORIGINAL_PIPELINE
from rrjobs.core.job import Job
from tests.conftest import wait_for
from tests.sqlite_helpers import Drivers, sqlite_config

pytestmark = pytest.mark.sqlite


async def test_push_handle_ack(tmp_path: Path) -> None:
    app = App()
    seen: list[Job] = []

    @app.handler("a")
    async def handle(job: Job) -> None:
        seen.append(job)

    file = str(tmp_path / "jobs.db")
    async with Jobs(sqlite_config(file), app) as jobs:
        await jobs.push(Message("a", b"x", "p", headers={"h": ["1", "2"]}))
        await wait_for(lambda: len(seen) == 1)
        await wait_for(lambda: seen[0].settled == "ack")
        (stat,) = await jobs.stat()
        assert (stat.state.driver, stat.state.active, stat.state.reserved) == ("sqlite", 0, 0)
        assert stat.counters.ok == 1
    assert seen[0].headers == {"h": ["1", "2"]}
    assert Drivers(tmp_path).rows("SELECT count(*) FROM rrjobs_jobs") == [(0,)]


async def test_failures_count_attempts_in_the_file_then_dead_letter(tmp_path: Path) -> None:
    app = App()
    attempts: list[int] = []

    @app.handler("bad")
    async def bad(job: Job) -> None:
        attempts.append(job.attempts)
        raise RuntimeError("boom")

    file = str(tmp_path / "jobs.db")
    cfg = sqlite_config(file, options=", dead_letter: true")
    async with Jobs(cfg, app) as jobs:
        await jobs.push(Message("bad", b"x", "p", id="b1"))
        await wait_for(lambda: len(attempts) == 3)
        await wait_for(lambda: jobs._pipelines["p"].counters.dead_lettered == 1)
    assert attempts == [0, 1, 2]
    d = Drivers(tmp_path)
    (headers, deliveries), = d.rows("SELECT headers, deliveries FROM rrjobs_dead WHERE id='b1'")
    letter = json.loads(headers)
    assert letter[RR_ATTEMPTS] == ["3"] and deliveries == 3
    assert letter[RR_ERROR] == ["RuntimeError: boom"] and letter[RR_ORIGINAL_PIPELINE] == ["p"]
    assert d.rows("SELECT count(*) FROM rrjobs_jobs") == [(0,)]


async def test_jobs_survive_a_restart_of_the_runtime(tmp_path: Path) -> None:
    file = str(tmp_path / "jobs.db")
    async with Jobs(sqlite_config(file, consume="[]")) as producer:
        await producer.push(Message("a", b"now", "p"))
        await producer.push(Message("a", b"soon", "p", delay=0.3))
    pushed = time.monotonic()
    app = App()
    seen: list[tuple[bytes, float]] = []

    @app.handler("a")
    async def handle(job: Job) -> None:
        seen.append((job.payload, time.monotonic() - pushed))

    async with Jobs(sqlite_config(file), app):
        await wait_for(lambda: len(seen) == 2)
    assert [p for p, _ in seen] == [b"now", b"soon"]
    assert seen[1][1] >= 0.3 - 0.05  # the delay counts from the push, across the restart


async def test_graceful_stop_requeues_running_jobs(tmp_path: Path) -> None:
    app = App()
    started = asyncio.Event()

    @app.handler("slow")
    async def slow(job: Job) -> None:
        started.set()
        await asyncio.sleep(60)

    file = str(tmp_path / "jobs.db")
    async with Jobs(sqlite_config(file, destroy_timeout=0.1), app) as jobs:
        await jobs.push(Message("slow", b"x", "p"))
        await asyncio.wait_for(started.wait(), 5)
    # requeued by the pool, then returned to the file unreserved when the driver stopped
    d = Drivers(tmp_path)
    assert d.rows("SELECT reserved_by, payload FROM rrjobs_jobs") == [(None, b"x")]


async def test_a_producer_runtime_wakes_a_consumer_runtime_on_the_same_file(
        tmp_path: Path) -> None:
    file = str(tmp_path / "jobs.db")
    app = App()
    seen: list[bytes] = []

    @app.handler("a")
    async def handle(job: Job) -> None:
        seen.append(job.payload)

    async with Jobs(sqlite_config(file), app), \
            Jobs(sqlite_config(file, consume="[]")) as producer:
        await producer.push_batch([Message("a", str(i).encode(), "p") for i in range(20)])
        await wait_for(lambda: len(seen) == 20, within=2)
    assert sorted(seen) == sorted(str(i).encode() for i in range(20))


def test_inspect_shows_counts_per_pipeline_and_the_oldest_job(tmp_path: Path) -> None:
    file = str(tmp_path / "jobs.db")

    async def fill() -> None:
        cfg = sqlite_config(file, consume="[]", extra=f"""
    q:
      driver: sqlite
      config: {{file: "{file}", dead_letter: true}}
""")
        async with Jobs(cfg) as jobs:
            await jobs.push(Message("first", b"", "p", id="old-1"))
            await jobs.push(Message("second", b"", "p"))
            await jobs.push(Message("later", b"", "p", delay=3600))
            await jobs.push(Message("other", b"", "q", id="q-1"))

    asyncio.run(fill())
    conn = Drivers(tmp_path).db()
    conn.execute("UPDATE rrjobs_jobs SET reserved_by = 'h:1:x', reserved_until = 1 "
                 "WHERE id = 'q-1'")
    conn.execute("INSERT INTO rrjobs_dead (pipeline, payload, headers, priority, deliveries, "
                 "created_at, failed_at) VALUES ('gone', x'', '{}', 1, 1, 0, 0)")
    conn.close()
    runner = CliRunner()
    result = runner.invoke(cli, ["sqlite", "inspect", file, "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["schema_version"] == 2 and data["journal_mode"] == "wal"
    by_name = {p["pipeline"]: p for p in data["pipelines"]}
    assert set(by_name) == {"p", "q", "gone"}
    p = by_name["p"]
    assert (p["ready"], p["delayed"], p["reserved"], p["dead"]) == (2, 1, 0, 0)
    assert (p["oldest_id"], p["oldest_name"]) == ("old-1", "first")
    assert p["next_due_at"] > data["now_ms"] + 3_500_000
    assert (by_name["q"]["reserved"], by_name["gone"]["dead"]) == (1, 1)
    table = runner.invoke(cli, ["sqlite", "inspect", file])
    assert table.exit_code == 0
    for text in ("first", "old-1", "gone", "other"):
        assert text in table.output


def test_inspect_refuses_what_is_not_an_rrjobs_file(tmp_path: Path) -> None:
    runner = CliRunner()
    missing = runner.invoke(cli, ["sqlite", "inspect", str(tmp_path / "none.db")])
    assert missing.exit_code == 1 and "no such file" in missing.output
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"definitely not sqlite" * 100)
    result = runner.invoke(cli, ["sqlite", "inspect", str(junk)])
    assert result.exit_code == 1 and "not an SQLite database" in result.output
    assert not (tmp_path / "none.db").exists()


def test_bench_runs_the_sqlite_driver_without_a_baseline(tmp_path: Path) -> None:
    from rrjobs.bench import bench_command

    file = tmp_path / "bench.db"
    result = CliRunner().invoke(bench_command, [
        "--driver", "sqlite", "--option", f"file={file}", "--jobs", "600", "--batch", "100",
        "--workers", "2", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["processed"], data["duplicates"], data["lost"]) == (600, 0, 0)
    assert data["jobs_per_s"] > 0
    # measured against its peers (benchmarks/peers), not against a bare SQL loop
    assert (data["baseline"], data["baseline_jobs_per_s"], data["ratio"]) == (None, None, None)
    assert all(run["ratio"] is None for run in data["runs"])
    # nothing but the pipeline's file, and it is empty
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.db"]
    conn = sqlite3.connect(file)
    assert conn.execute("SELECT count(*) FROM rrjobs_jobs").fetchone() == (0,)
    conn.close()
