"""``rrjobs bench --driver postgres``: the bench's settings and its raw asyncpg baseline.

The baseline is the least a PostgreSQL queue does for the same jobs: per chunk one
``INSERT`` (of the chunk with ``push: batch``, of each job with ``single``), and a
consumer loop that reserves up to ``prefetch`` ready rows with ``FOR UPDATE SKIP
LOCKED`` (the driver's query shape: priority then FIFO) and deletes them in one
``DELETE``, those two with ``synchronous_commit = off`` as the driver's. It runs on
the runtime phase's table (``table``, default ``rrjobs_jobs``: the same dead rows,
statistics and indexes), as a pipeline of its own. The runtime phase adds everything
rrjobs does (one ``DELETE`` per batch of handlers' acks, NOTIFY wake-ups, leases).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]

from rrjobs.core.baseline import BenchSpec, DriverBench, PhaseResult, from_env, run_loop
from rrjobs.core.message import new_id
from rrjobs.drivers.postgres.config import DEFAULT_DSN, DEFAULT_TABLE
from rrjobs.drivers.postgres.queries import queries
from rrjobs.drivers.postgres.schema import migrate, names

BENCH_PREFETCH = 500  #: the prefetch of both phases unless ``--option prefetch=N`` says otherwise


def server_dsn(config: Mapping[str, Any] | None = None) -> str:
    """``RRJOBS_POSTGRES_DSN``, else ``postgres.dsn`` of ``config``, else the default."""
    return str(from_env("RRJOBS_POSTGRES_DSN", config, "postgres", "dsn") or DEFAULT_DSN)


def bench_defaults() -> tuple[dict[str, Any], dict[str, Any]]:
    """The config sections and pipeline options of ``rrjobs bench --driver postgres``."""
    return {"postgres": {"dsn": server_dsn()}}, {"prefetch": BENCH_PREFETCH}


async def postgres_baseline(spec: BenchSpec) -> PhaseResult:
    """A raw asyncpg loop: INSERT per chunk, SKIP LOCKED reservation, one DELETE each."""
    prefetch = int(spec.options.get("prefetch", BENCH_PREFETCH))
    # the runtime phase's table (its dead rows and statistics as they are), a pipeline
    # of its own
    table = str(spec.options.get("table", DEFAULT_TABLE))
    pipeline = f"bench-raw-{uuid.uuid4().hex[:8]}"
    sql, payload = queries(table), spec.payload()
    dsn = server_dsn(spec.config)
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=4)
    # reservations and deletes commit without waiting for the WAL flush, as the driver's
    relaxed = await asyncpg.create_pool(dsn, min_size=1, max_size=2,
                                        server_settings={"synchronous_commit": "off"})
    delete = (f"DELETE FROM {names(table).jobs} WHERE seq = ANY($1::bigint[])")
    owner = "bench"
    try:
        async with pool.acquire() as conn:
            await migrate(conn, table)

        async def insert(n: int) -> None:
            await pool.execute(sql.insert, pipeline, [new_id() for _ in range(n)],
                               ["bench"] * n, [payload] * n, ["{}"] * n, [10] * n,
                               [False] * n, [0] * n, names(table).channel)

        async def send(n: int) -> None:
            if spec.push == "batch":
                await insert(n)
            else:
                for _ in range(n):
                    await insert(1)

        async def receive() -> int:
            rows = await relaxed.fetch(sql.reserve, pipeline, prefetch, owner, 30_000)
            if rows:
                await relaxed.execute(delete, [r[0] for r in rows])
            return len(rows)

        return await run_loop(spec, send, receive)
    finally:
        try:
            await pool.execute(f"DELETE FROM {names(table).jobs} WHERE pipeline = $1",
                               pipeline)
        finally:
            await pool.close()
            await relaxed.close()


#: the ``rrjobs.bench`` entry point
BENCH = DriverBench(postgres_baseline, bench_defaults, raw_client=True)
