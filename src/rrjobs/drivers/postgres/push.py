"""Pushing inside the application's own transaction: ``push_in``.

The job is a row written on the application's asyncpg connection, in whatever
transaction it has open: it exists, and its consumers are woken (the NOTIFY is sent
at commit), only if that transaction commits. The row is the one the driver writes
for ``push``, so the pipeline's consumers handle it like any other job.
"""

from __future__ import annotations

from typing import Any

from rrjobs.core.message import Message
from rrjobs.drivers.postgres.config import DEFAULT_TABLE, TABLE_PATTERN
from rrjobs.drivers.postgres.driver import MAX_PAYLOAD, insert_statement
from rrjobs.drivers.postgres.queries import queries
from rrjobs.drivers.postgres.schema import migrate, names


async def push_in(conn: Any, *jobs: Message, table: str = DEFAULT_TABLE) -> None:
    """Insert ``jobs`` on the asyncpg connection ``conn`` (in its current transaction,
    if any; each job's ``pipeline`` names its pipeline, a ``priority`` of 0 takes the
    pipeline's). ``table`` is the pipelines' ``table`` option; it must exist (a
    pipeline of it was opened once, or :func:`create_table`)."""
    import re

    if not re.match(TABLE_PATTERN, table):
        raise ValueError(f"table {table!r} is not a valid table name")
    by_pipeline: dict[str, list[Message]] = {}
    for job in jobs:
        if not job.pipeline:
            raise ValueError(f"job {job.id} names no pipeline")
        if len(job.payload) > MAX_PAYLOAD:
            raise ValueError(f"job {job.id}: payload of {len(job.payload)} bytes is over "
                             f"the limit of {MAX_PAYLOAD}")
        by_pipeline.setdefault(job.pipeline, []).append(job)
    sql, channel = queries(table), names(table).channel
    for pipeline, msgs in by_pipeline.items():
        statement, args = insert_statement(sql, pipeline, msgs, channel)
        await conn.execute(statement, *args)


async def create_table(conn: Any, table: str = DEFAULT_TABLE) -> int:
    """Create (or migrate) ``table`` on ``conn``, as a pipeline does when it opens;
    returns the schema version."""
    return await migrate(conn, table)
