"""The driver's tables and their versioned migrations.

Pipelines share a jobs table (``table``, default ``rrjobs_jobs``) by a ``pipeline``
column; next to it live ``<table>_pipelines`` (each pipeline's priority, for rows
written without one) and ``<table>_dead`` (dead letters). Which migrations a table
has had is kept in ``rrjobs_schema`` (one row per jobs table); :func:`migrate`
applies the missing ones in one transaction under an advisory lock, so processes
opening the same table at once do not race, and refuses a table newer than this code.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from rrjobs.core.errors import RRJobsError

#: ``pg_advisory_xact_lock`` key of the migrations (``b"rrjobsdb"`` as an int).
MIGRATION_LOCK = int.from_bytes(b"rrjobsdb", "big") & 0x7FFF_FFFF_FFFF_FFFF


class SchemaError(RRJobsError):
    """The jobs table cannot be used (a newer schema, another program's table)."""


@dataclass(frozen=True)
class Names:
    """The quoted names of one jobs table and what belongs to it."""

    table: str

    @property
    def jobs(self) -> str:
        return f'"{self.table}"'

    @property
    def dead(self) -> str:
        return f'"{self.table}_dead"'

    @property
    def pipelines(self) -> str:
        return f'"{self.table}_pipelines"'

    @property
    def sequence(self) -> str:
        """The text of the jobs' ``seq`` sequence name (a ``regclass`` literal)."""
        return f'"{self.table}_seq_seq"'

    @property
    def channel(self) -> str:
        """The LISTEN/NOTIFY channel of the table (the payload is the pipeline)."""
        return self.table


def _v1(n: Names) -> tuple[str, ...]:
    t = n.table
    return (
        # One row per job. ``available_at``: when it may be taken next (its delay, or
        # the end of its lease while ``reserved_by`` is set); ``deliveries``: how many
        # times it was reserved, the token of a reservation. Defaults let another
        # program insert just ``(pipeline, payload)``.
        f"""
        CREATE TABLE {n.jobs} (
            seq          bigserial   PRIMARY KEY,
            pipeline     text        NOT NULL,
            id           text,
            name         text,
            payload      bytea       NOT NULL DEFAULT ''::bytea,
            headers      text        NOT NULL DEFAULT '{{}}',
            priority     bigint,
            auto_ack     boolean     NOT NULL DEFAULT false,
            available_at timestamptz NOT NULL DEFAULT now(),
            created_at   timestamptz NOT NULL DEFAULT now(),
            deliveries   integer     NOT NULL DEFAULT 0,
            reserved_by  text
        )
        """,
        # ready (and delayed) jobs in delivery order: priority, then FIFO
        f'CREATE INDEX "{t}_ready" ON {n.jobs} (pipeline, priority, seq) '
        "WHERE reserved_by IS NULL",
        # the next due time (delays and leases), expired leases
        f'CREATE INDEX "{t}_due" ON {n.jobs} (pipeline, available_at)',
        f"""
        CREATE TABLE {n.pipelines} (
            name       text        PRIMARY KEY,
            priority   bigint      NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now()
        )
        """,
        # a row written without a priority gets its pipeline's (10 if never opened)
        f"""
        CREATE FUNCTION "{t}_default_priority"() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.priority IS NULL THEN
                NEW.priority := coalesce(
                    (SELECT priority FROM {n.pipelines} WHERE name = NEW.pipeline), 10);
            END IF;
            RETURN NEW;
        END
        $$
        """,
        f'CREATE TRIGGER "{t}_default_priority" BEFORE INSERT ON {n.jobs} '
        f'FOR EACH ROW EXECUTE FUNCTION "{t}_default_priority"()',
        # jobs given up with nack(requeue=False) on a pipeline with dead_letter: true
        f"""
        CREATE TABLE {n.dead} (
            seq        bigserial   PRIMARY KEY,
            pipeline   text        NOT NULL,
            id         text,
            name       text,
            payload    bytea       NOT NULL,
            headers    text        NOT NULL,
            priority   bigint      NOT NULL,
            deliveries integer     NOT NULL,
            created_at timestamptz NOT NULL,
            failed_at  timestamptz NOT NULL DEFAULT now()
        )
        """,
        f'CREATE INDEX "{t}_dead_pipeline" ON {n.dead} (pipeline, seq)',
    )


def _v2(n: Names) -> tuple[str, ...]:
    # the reservations alone, for a reservation's taking back of expired leases: without
    # it that scans every ready job of the pipeline (the whole backlog) each time
    return (f'CREATE INDEX "{n.table}_leased" ON {n.jobs} (pipeline, available_at) '
            "WHERE reserved_by IS NOT NULL",)


#: ``(version, statements of a table)``; a table at version ``v`` gets every entry above.
MIGRATIONS = ((1, _v1), (2, _v2))

#: The schema version this code writes.
LATEST_VERSION = MIGRATIONS[-1][0]


@cache
def names(table: str) -> Names:
    return Names(table)


async def migrate(conn: Any, table: str) -> int:
    """Bring ``table`` (and its companions) to :data:`LATEST_VERSION` in one
    transaction on the asyncpg connection ``conn``; return the version. Raises
    :class:`SchemaError` for a table with a newer version, or one that exists
    without a version (another program's)."""
    n = names(table)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute("CREATE TABLE IF NOT EXISTS rrjobs_schema ("
                           "name text PRIMARY KEY, version integer NOT NULL, "
                           "updated_at timestamptz NOT NULL DEFAULT now())")
        version = await conn.fetchval("SELECT version FROM rrjobs_schema WHERE name = $1",
                                      table)
        if version is None:
            if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", n.jobs):
                raise SchemaError(f"table {table!r} exists but was not made by rrjobs (no "
                                  "row in rrjobs_schema): choose another `table`")
            version = 0
        if version > LATEST_VERSION:
            raise SchemaError(f"table {table!r} has schema version {version}, newer than "
                              f"this rrjobs understands ({LATEST_VERSION}); upgrade rrjobs")
        for target, statements in MIGRATIONS:
            if target > version:
                for sql in statements(n):
                    await conn.execute(sql)
        if version < LATEST_VERSION:
            await conn.execute(
                "INSERT INTO rrjobs_schema (name, version) VALUES ($1, $2) ON CONFLICT (name) "
                "DO UPDATE SET version = EXCLUDED.version, updated_at = now()",
                table, LATEST_VERSION)
    return LATEST_VERSION
