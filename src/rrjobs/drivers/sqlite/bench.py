"""The sqlite driver's baseline for ``rrjobs bench`` (``docs/benchmarks.md#sqlite``):
the least a durable SQLite queue does for the same jobs, with the pipeline's
settings, on a fresh file next to ``file``. The runtime phase adds everything
rrjobs does, including a reservation (an UPDATE) per job.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import tempfile
import time

from rrjobs.core.baseline import BenchSpec, DriverBench, PhaseResult
from rrjobs.core.message import new_id
from rrjobs.core.options import validate
from rrjobs.drivers.sqlite.config import SQLiteOptions


async def sqlite_baseline(spec: BenchSpec) -> PhaseResult:
    """Bare sqlite3 loop: per chunk INSERT (one commit), SELECT in order, DELETE (one commit);
    same directory, WAL and durability (inserts as pushes, deletes as acks)."""
    options = validate(SQLiteOptions, dict(spec.options),
                       f"jobs.pipelines.{spec.pipeline}.config")
    seconds, cpu, processed = await asyncio.to_thread(
        _run, options.file, options.synchronous, spec.jobs, spec.batch, spec.payload_size)
    return PhaseResult(seconds, processed, cpu)


def _run(file: str, synchronous: str, jobs: int, batch: int,
         payload_size: int) -> tuple[float, float, int]:
    """Blocking: the timed loop, on a fresh file next to ``file``, removed afterwards."""
    directory = os.path.dirname(os.path.abspath(file))
    fd, path = tempfile.mkstemp(prefix=".rrjobs-bench-baseline-", suffix=".db", dir=directory)
    os.close(fd)
    try:
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            durable = f"PRAGMA synchronous = {synchronous.upper()}"
            relaxed = "PRAGMA synchronous = NORMAL"
            conn.execute("CREATE TABLE q (seq INTEGER PRIMARY KEY AUTOINCREMENT, "
                         "pipeline TEXT NOT NULL, id TEXT, name TEXT, payload BLOB NOT NULL, "
                         "priority INTEGER NOT NULL)")
            conn.execute("CREATE INDEX q_order ON q (pipeline, priority, seq)")
            payload = os.urandom(payload_size)
            processed = 0
            start, cpu = time.perf_counter(), time.process_time()
            for n in (min(batch, jobs - done) for done in range(0, jobs, batch)):
                rows = [("bench", new_id(), "bench", payload, 10) for _ in range(n)]
                conn.execute(durable)
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT INTO q (pipeline, id, name, payload, priority) "
                                 "VALUES (?, ?, ?, ?, ?)", rows)
                conn.execute("COMMIT")
                conn.execute(relaxed)
                conn.execute("BEGIN IMMEDIATE")
                got = conn.execute("SELECT seq, id, name, payload FROM q WHERE pipeline = ? "
                                   "ORDER BY priority, seq LIMIT ?", ("bench", n)).fetchall()
                conn.executemany("DELETE FROM q WHERE seq = ?", [(r[0],) for r in got])
                conn.execute("COMMIT")
                processed += len(got)
            return time.perf_counter() - start, time.process_time() - cpu, processed
    finally:
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(path + suffix)


#: The ``rrjobs.bench`` entry point of the sqlite driver.
BENCH = DriverBench(sqlite_baseline)
