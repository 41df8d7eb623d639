"""The sqlite driver's single pushes: group commit of concurrent and (with
``push_journal``) sequential pushes, and what a SIGKILL right after ``await push()``
keeps. Nothing here is timed."""

from __future__ import annotations

import asyncio
import glob
import json
import marshal
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rrjobs.core.errors import ConfigError
from rrjobs.core.message import Message
from rrjobs.drivers.sqlite import journal
from tests.sqlite_helpers import drivers

pytestmark = pytest.mark.sqlite

REPO = Path(__file__).resolve().parent.parent


async def test_concurrent_single_pushes_share_transactions(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make(run=False)
        commits = drv.store.commits
        await asyncio.gather(*(drv.push(Message("a", str(i).encode(), "p")) for i in range(100)))
        assert drv.store.commits - commits < 100
        assert d.rows("SELECT count(*) FROM rrjobs_jobs") == [(100,)]


async def test_journaled_sequential_pushes_share_transactions(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make(run=False, synchronous="normal", push_journal=True)
        commits = drv.store.commits
        for i in range(500):
            await drv.push(Message("a", str(i).encode(), "p"))
        await drv.store.flush()
        assert drv.store.commits - commits < 50  # one await push() at a time, few commits
        rows = d.rows("SELECT payload FROM rrjobs_jobs ORDER BY seq")
        assert [int(r[0]) for r in rows] == list(range(500))  # FIFO, each once
        assert (await drv.state()).active == 500
        assert glob.glob(f"{d.file}-journal-*")  # this process's journal, still open
    assert not glob.glob(f"{d.file}-journal-*")  # closed: folded and deleted
    assert d.rows("SELECT count(*) FROM rrjobs_journals") == [(0,)]


async def test_journaled_pushes_reach_a_consumer(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        drv = await d.make(synchronous="normal", push_journal=True)
        await drv.push_batch([Message("a", str(i).encode(), "p") for i in range(3)])
        await drv.push(Message("a", b"3", "p"))
        got = []
        for _ in range(4):
            async with asyncio.timeout(5):
                job = await drv.queue.extract_min()
            got.append(job.payload)
            await job.ack()
        assert got == [b"0", b"1", b"2", b"3"]


async def test_push_journal_needs_synchronous_normal(tmp_path: Path) -> None:
    async with drivers(tmp_path) as d:
        with pytest.raises(ConfigError, match=r"push_journal.*synchronous: normal"):
            await d.make(push_journal=True)


PUSHER = textwrap.dedent("""
    import asyncio, os, signal, sys
    from rrjobs.config import Config
    from rrjobs.core.message import Message
    from rrjobs.runtime.app import App
    from rrjobs.runtime.jobs import Jobs

    async def main(file, options, settled, more):
        config = {"file": file, **options}
        jobs = Jobs(Config({"jobs": {"consume": [], "pipelines": {
            "p": {"driver": "sqlite", "config": config}}}}, source="t"), App("t"))
        await jobs.start()
        for i in range(settled):
            await jobs.push(Message("a", f"{i}".encode(), "p"))
        if settled:
            await jobs.stat()  # state() flushes: every push so far is committed
        for i in range(settled, settled + more):
            await jobs.push(Message("a", f"{i}".encode(), "p"))
        os.kill(os.getpid(), signal.SIGKILL)  # right after the last push returned

    asyncio.run(main(sys.argv[1], eval(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])))
""")


def push_then_sigkill(file: Path, options: dict[str, object], settled: int, more: int) -> None:
    proc = subprocess.run([sys.executable, "-c", PUSHER, str(file), repr(options),
                           str(settled), str(more)], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-3000:]


async def payloads_after_reopen(tmp_path: Path, file: Path) -> list[int]:
    """What a new process finds (opening the file folds a dead process's journal)."""
    async with drivers(tmp_path) as d:
        d.file = str(file)
        await d.make(run=False)
        rows = d.rows("SELECT payload, reserved_by FROM rrjobs_jobs ORDER BY seq")
    assert all(r[1] is None for r in rows)
    return [int(r[0]) for r in rows]


@pytest.mark.parametrize("options", [
    {"synchronous": "full"},
    {"synchronous": "normal"},
    {"synchronous": "normal", "push_journal": True},
], ids=["full", "normal", "journal"])
async def test_a_sigkill_right_after_push_keeps_every_job(tmp_path: Path,
                                                          options: dict[str, object]) -> None:
    file = tmp_path / "jobs.db"
    await asyncio.to_thread(push_then_sigkill, file, options, 0, 300)
    if options.get("push_journal"):
        assert glob.glob(f"{file}-journal-*")  # left by the killed process
    assert await payloads_after_reopen(tmp_path, file) == list(range(300))
    assert not glob.glob(f"{file}-journal-*")


async def test_a_journal_folds_only_what_its_file_lacks(tmp_path: Path) -> None:
    """Jobs committed before the kill are not inserted twice; the rest once."""
    file = tmp_path / "jobs.db"
    await asyncio.to_thread(push_then_sigkill, file,
                            {"synchronous": "normal", "push_journal": True}, 2000, 100)
    assert await payloads_after_reopen(tmp_path, file) == list(range(2100))


async def test_a_torn_journal_record_ends_the_journal(tmp_path: Path) -> None:
    file = tmp_path / "jobs.db"
    await asyncio.to_thread(push_then_sigkill, file,
                            {"synchronous": "normal", "push_journal": True}, 0, 10)
    [part] = glob.glob(f"{file}-journal-*")
    records = journal.read_records(part)
    assert [k for k, _ in records] == list(range(1, 11))
    # tear the last record: its CRC no longer matches, so it and what follows are gone
    data = bytearray(Path(part).read_bytes())  # noqa: ASYNC240
    end = sum(8 + len(marshal.dumps((k, list(rows)))) for k, rows in records)
    data[end - 1] ^= 0xFF
    Path(part).write_bytes(bytes(data))  # noqa: ASYNC240
    assert [k for k, _ in journal.read_records(part)] == list(range(1, 10))
    assert await payloads_after_reopen(tmp_path, file) == list(range(9))


def test_journal_names_of_this_process_are_dead_only_once_closed(tmp_path: Path) -> None:
    name = f"{journal.host()}_{os.getpid()}_abc"
    assert journal._is_dead(name)
    journal._LIVE.add(name)
    try:
        assert not journal._is_dead(name)
    finally:
        journal._LIVE.discard(name)
    assert not journal._is_dead(f"{journal.host()}_1_abc")  # pid 1 runs
    assert not journal._is_dead("otherhost_12345_abc")  # another host's: unknown
    assert json.dumps(journal.dead_journals(str(tmp_path / "none.db"))) == "{}"
