"""The ``postgres`` driver's dead letters (``dead_letter: true``): the rows of
``<table>_dead``, read back for ``rrjobs dlq`` through the kit's
:class:`~rrjobs.core.deadletters.ScannedStore`, walked by ``seq`` a page at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from rrjobs.core.deadletters import DeadLetter, ScannedStore, Session, failed_at_text
from rrjobs.core.headers import DEDUCED_BY_RR
from rrjobs.drivers.postgres.queries import Queries

#: Dead letters read per query.
PAGE = 100


class PostgresDeadLetters(ScannedStore[int]):
    """The dead letters of ``pipeline`` in its table; ``pool`` gives the driver's
    connection pool (raising once the pipeline is stopped)."""

    shared = False  # rows carry their pipeline: every letter read is this pipeline's

    def __init__(self, pipeline: str, priority: int, sql: Queries, pool: Callable[[], Any],
                 headers: Callable[[str], dict[str, list[str]]]) -> None:
        super().__init__(pipeline, priority)
        self.sql = sql
        self.pool = pool
        self.headers = headers

    def _letter(self, row: Any) -> DeadLetter:
        _, job_id, name, payload, headers, priority, failed = row
        try:
            parsed = self.headers(headers)
        except ValueError:
            parsed = {}
        return DeadLetter.of(str(job_id or ""), str(name or DEDUCED_BY_RR), bytes(payload),
                             parsed, self.pipeline, int(priority or self.priority),
                             failed_at_text(failed))

    @asynccontextmanager
    async def session(self, removing: bool) -> AsyncIterator[Session[int]]:
        pool = self.pool()
        end = await pool.fetchval(self.sql.last_dead, self.pipeline) if removing else None

        async def scan() -> AsyncIterator[tuple[int, DeadLetter]]:
            after = 0
            while rows := await pool.fetch(self.sql.dead_letters, self.pipeline, after, PAGE):
                for row in rows:
                    if removing and (end is None or row[0] > end):
                        return
                    yield row[0], self._letter(row)
                after = rows[-1][0]

        async def remove(seq: int) -> None:
            await pool.execute(self.sql.delete_dead, seq)

        yield scan(), remove
