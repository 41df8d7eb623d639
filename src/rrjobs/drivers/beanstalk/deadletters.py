"""``rrjobs dlq`` on a beanstalk pipeline: its dead letters are the tube's buried jobs.

beanstalkd shows only the oldest buried job of a tube (``peek-buried``), so a session
walks them by reserving each one by id (``reserve-job``) on a connection of its own:
the next ``peek-buried`` shows the next. A take or purge deletes what it removes; at
the end every letter still reserved is buried again, in its order. The driver buries
its letters with a TTR of :data:`LETTER_TTR`, so that a long session keeps them;
should the process die mid-session, beanstalkd makes the reserved ones ready again
(they are run once more rather than lost).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from rrjobs.core.deadletters import DeadLetter, ScannedStore, Session
from rrjobs.drivers.beanstalk import codec
from rrjobs.drivers.beanstalk.protocol import Connection, connect

#: The TTR of a buried letter: how long a ``rrjobs dlq`` session may hold it.
LETTER_TTR = 3600


class BuriedJobs(ScannedStore[int]):
    """The :class:`~rrjobs.core.deadletters.DeadLetterStore` of ``pipeline``: the buried
    jobs of ``tube`` on the server at ``addr``; a letter's position is its job id."""

    shared = False  # a tube's buried jobs are its pipeline's

    def __init__(self, addr: str, within: float, tube: str, pipeline: str,
                 priority: int, bury_priority: int) -> None:
        super().__init__(pipeline, priority)
        self.addr, self.within, self.tube = addr, within, tube
        self.bury_priority = bury_priority

    def letter(self, job_id: int, body: bytes) -> DeadLetter:
        def read() -> DeadLetter:
            d = codec.decode(body, self.priority)
            return DeadLetter.of(d.id, d.name, d.payload, d.headers, self.pipeline, d.priority)
        return DeadLetter.read(read, str(job_id), codec.payload_of(body), self.pipeline)

    async def _walk(self, conn: Connection, held: dict[int, None]
                    ) -> AsyncIterator[tuple[int, DeadLetter]]:
        while (job := await conn.peek_buried()) is not None:
            await conn.call(b"reserve-job %d" % job.id)
            held[job.id] = None
            yield job.id, self.letter(job.id, job.body)

    @asynccontextmanager
    async def session(self, removing: bool) -> AsyncIterator[Session[int]]:
        conn = await connect(self.addr, self.within)
        held: dict[int, None] = {}
        try:
            await conn.use(self.tube)

            async def remove(job_id: int) -> None:
                await conn.delete(job_id)
                del held[job_id]

            yield self._walk(conn, held), remove
        finally:
            try:
                for job_id in list(held):  # the rest go back, in their order
                    await conn.bury(job_id, self.bury_priority)
            finally:
                await conn.close()
