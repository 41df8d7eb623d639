"""The ``postgres`` driver: durable jobs in a PostgreSQL table, through asyncpg.

``push`` → INSERT (committed, then NOTIFY) → the consumer reserves ready rows with
``FOR UPDATE SKIP LOCKED`` in priority then FIFO order while fewer than ``prefetch``
are out → priority queue → handler → ack = DELETE (batched, in the next
reservation's statement while the consumer is busy). A reservation is a lease:
``available_at`` moves to its end, and a row whose consumer died comes back when it
passes. Delays are the same column. Consumers wait on LISTEN (one
connection each), with ``poll_interval`` as the fallback. Guarantees and options:
``docs/drivers/postgres.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

import asyncpg  # type: ignore[import-untyped,unused-ignore]

from rrjobs.core.base import describe_error
from rrjobs.core.batcher import Batcher
from rrjobs.core.capabilities import Capabilities
from rrjobs.core.constructor import DriverConstructor
from rrjobs.core.delays import MILLISECOND, whole_millis
from rrjobs.core.errors import AckLostError, ConfigError, PipelineStateError
from rrjobs.core.headers import (
    DEDUCED_BY_RR,
    Headers,
    headers_from_json,
    headers_json,
    normalize_headers,
)
from rrjobs.core.job import Job
from rrjobs.core.message import Message, new_id
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.pull import PullDriver
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.state import State
from rrjobs.drivers.postgres.config import PostgresOptions, PostgresSection
from rrjobs.drivers.postgres.deadletters import PostgresDeadLetters
from rrjobs.drivers.postgres.queries import Queries, queries
from rrjobs.drivers.postgres.schema import SchemaError, migrate, names

#: The largest payload accepted (a row is read whole by its reservation).
MAX_PAYLOAD = 64 * 1024 * 1024
#: At most this many jobs go in one reservation or one DELETE.
BATCH = 500
#: At most this many jobs go in one INSERT (a push_batch of rrjobs' default chunk in one).
INSERT_BATCH = 1000
#: Ack ``DELETE`` statements in flight at once.
ACK_BATCHES = 2
#: Seconds an ack waits for the next reservation to carry it while the consumer is busy
#: (at most a tenth of the lease), before it goes in a ``DELETE`` of its own.
ACK_HOLD = 0.1

#: ``reserved``: the table's count of every consumer's reserved rows.
CAPABILITIES = Capabilities(durable=True, max_payload=MAX_PAYLOAD, lease_extension=True,
                            redelivery_on_crash=True, delay_granularity=MILLISECOND,
                            shared_queue=True)

#: A job's handle: its row's ``(seq, deliveries)``, the reservation it came with.
Handle = tuple[int, int]


def encode_headers(headers: Headers) -> str:
    return headers_json(headers) if headers else "{}"


def decode_headers(text: str) -> Headers:
    """The ``headers`` column: a JSON object of string lists (RoadRunner's
    ``rr_headers``); another program's unreadable or oversized headers raise."""
    if text == "{}" or not text:
        return {}
    parsed = headers_from_json(text)
    if parsed is None:
        raise ValueError("the headers column is not a JSON object")
    return normalize_headers(parsed)


def insert_statement(sql: Queries, pipeline: str, msgs: Sequence[Message], channel: str,
                     default: int | None = None) -> tuple[str, tuple[Any, ...]]:
    """The ``INSERT`` of ``msgs`` and its arguments; priority 0 is ``default``, the
    pipeline's (``None``: the one its table records, looked up by a trigger per row,
    which costs the server as much again as the rest of the insert).

    Jobs alike but for their ids and payloads (one name, the same headers, priority,
    auto_ack and delay: a ``push_batch`` of one kind of job) go in
    :attr:`Queries.insert_uniform`, those five columns sent once: asyncpg encodes
    an array element by element in Python, two columns instead of seven per job."""
    first = msgs[0]
    name, headers, priority, auto_ack, delay = (first.name, first.headers, first.priority,
                                                first.auto_ack, first.delay)
    ids = [m.id for m in msgs]
    payloads = [m.payload if type(m.payload) is bytes else bytes(m.payload) for m in msgs]
    for m in msgs:
        if (m.name != name or m.priority != priority or m.delay != delay
                or m.auto_ack is not auto_ack or m.headers != headers):
            break
    else:
        return sql.insert_uniform, (pipeline, ids, payloads, name, encode_headers(headers),
                                    priority or default, auto_ack, whole_millis(delay), channel)
    return sql.insert, (pipeline, ids, [m.name for m in msgs], payloads,
                        [encode_headers(m.headers) for m in msgs],
                        [m.priority or default for m in msgs], [m.auto_ack for m in msgs],
                        [whole_millis(m.delay) for m in msgs], channel)


class PostgresDriver(PullDriver):
    """One pipeline in a PostgreSQL jobs table. Never blocks the loop; ``push``,
    ``nack``, ``requeue`` and ``extend_lease`` return once committed, ``ack`` once
    queued (see :meth:`ack_now`)."""

    name: ClassVar[str] = "postgres"
    capabilities = CAPABILITIES

    def __init__(self, pipeline: Pipeline, queue: PriorityQueue, options: PostgresOptions,
                 section: PostgresSection) -> None:
        super().__init__(pipeline, queue, options.prefetch)
        self.options = options
        self.section = section
        self.priority = options.priority
        if options.dead_letter:
            self.capabilities = replace(CAPABILITIES, dead_letter=True, dead_letter_read=True)
        self.sql = queries(options.table)
        if options.dead_letter:
            self.dead_letters = PostgresDeadLetters(self.pipeline_name, self.priority,
                                                    self.sql, self._pool, decode_headers)
        self.channel = names(options.table).channel
        #: the holder of this driver's reservations
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:16]}"
        self._lease_ms = whole_millis(options.visibility_timeout)
        self.pool: Any = None
        #: the consumer's reservations and acks: commits that do not wait for the WAL
        #: flush (see _start_consuming)
        self.relaxed: Any = None
        self._listener: Any = None
        self._listen_failed = False
        self._wake = asyncio.Event()
        #: reserved jobs not settled (queued or in a handler), by seq
        self._held: dict[int, Job] = {}
        #: single pushes of one loop turn go in one INSERT
        self._inserts: Batcher[Message, None] = Batcher(self._insert, BATCH, section.pool_size)
        self._acks = self.settlement_batcher(self._delete, "acknowledging", BATCH, ACK_BATCHES)
        self._ack_hold = min(ACK_HOLD, options.visibility_timeout / 10)

    @property
    def dsn(self) -> str:
        return self.section.dsn.get_secret_value()

    async def open(self, where: str) -> None:
        """Connect, create or migrate the table, record the pipeline's priority."""
        try:
            self.pool = await asyncpg.create_pool(
                self.dsn, min_size=1, max_size=self.section.pool_size,
                server_settings={"application_name": "rrjobs"})
            async with self.pool.acquire() as conn:
                await migrate(conn, self.options.table)
                await conn.execute(self.sql.register, self.pipeline_name, self.priority)
        except SchemaError as exc:
            raise ConfigError(f"{where}.table", str(exc)) from None

    # -- pushing ------------------------------------------------------------------------

    async def _send(self, msg: Message) -> None:
        await self._inserts.submit(msg)

    async def _send_batch(self, msgs: Sequence[Message]) -> None:
        for start in range(0, len(msgs), INSERT_BATCH):
            await self._insert(msgs[start:start + INSERT_BATCH])

    async def _insert(self, msgs: Sequence[Message]) -> list[None]:
        statement, args = insert_statement(self.sql, self.pipeline_name, msgs, self.channel,
                                           self.priority)
        await self.pool.execute(statement, *args)
        return [None] * len(msgs)

    # -- consuming ----------------------------------------------------------------------

    async def _listen(self) -> None:
        """One LISTEN connection, made again after it broke; if LISTEN cannot be had
        (a pooler in transaction mode), the consumer polls (one WARNING)."""
        if self._listener is not None and not self._listener.is_closed():
            return
        self._listener = None
        try:
            conn = await asyncpg.connect(self.dsn,
                                         server_settings={"application_name": "rrjobs"})
            await conn.add_listener(self.channel, self._notified)
        except (TimeoutError, OSError, asyncpg.PostgresError) as exc:
            if not self._listen_failed:
                self._listen_failed = True
                self.log.warning("pipeline %r: LISTEN failed, polling every %gs: %s",
                                 self.pipeline_name, self.options.poll_interval,
                                 describe_error(exc))
            return
        self._listen_failed = False
        self._listener = conn
        self._wake.set()  # pushes made while it was away: look once

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        if payload == self.pipeline_name:
            self._wake.set()

    async def fetch(self, max_messages: int) -> Sequence[Any]:
        """Reserve up to ``max_messages`` ready jobs, deleting the acks queued so far in
        the same statement; with none, wait for a NOTIFY, the next due job or lease end,
        or ``poll_interval``. While reservations find jobs, acks wait (up to
        :data:`ACK_HOLD`) for the next one instead of a ``DELETE`` of their own beside
        it: the server then sees one statement after another, as the bench baseline's."""
        await self._listen()
        self._wake.clear()
        want = min(max_messages, BATCH)
        task = asyncio.ensure_future(self._acks.carry(
            BATCH, lambda handles: self._reserve(want, handles)))
        try:
            rows = await asyncio.shield(task)
        except asyncio.CancelledError:  # paused or stopped meanwhile: give them back
            with contextlib.suppress(Exception):
                if got := await task:
                    await self._release([r[0] for r in got])
            raise
        self.connected = True
        if rows:
            self._acks.hold = self._ack_hold
            return rows
        self._acks.hold = 0.0  # idle: no reservation comes soon to carry them
        wait = self.options.poll_interval
        due = await self.relaxed.fetchval(self.sql.next_due, self.pipeline_name)
        if due is not None:
            wait = min(wait, max(0.0, due))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await self._wake.wait()
        return ()

    async def _reserve(self, n: int, acks: Sequence[Handle]
                       ) -> tuple[Sequence[Any], list[None]]:
        """:attr:`Queries.reserve_acking`: the rows reserved, and the acks' outcomes."""
        rows = await self.relaxed.fetch(self.sql.reserve_acking, self.pipeline_name, n,
                                        self.owner, self._lease_ms, [h[0] for h in acks],
                                        [h[1] for h in acks])
        if acks:
            self._count_lost(len(acks), rows[0][8])
        return (() if rows[0][0] is None else rows), [None] * len(acks)

    def _job(self, handle: Handle, job: Job) -> Job:
        self._held[handle[0]] = job
        return job

    def decode(self, raw: Any) -> Job:
        seq, id_, name, payload, headers, priority, auto_ack, deliveries, _ = raw
        self._held[seq] = job = Job.make(
            self, (seq, deliveries), id_ or new_id(), name or DEDUCED_BY_RR, payload,
            {} if headers == "{}" else decode_headers(headers), self.pipeline_name,
            self.priority if priority is None else priority, auto_ack,
            self.options.visibility_timeout)
        return job

    def poison(self, raw: Any, reason: str) -> Job:
        handle = (raw[0], raw[7])
        return self._job(handle, self.poison_job(handle, raw[3], reason,
                                                 lease=self.options.visibility_timeout))

    async def give_back(self, jobs: Sequence[Job]) -> None:
        """Jobs taken back at pause or stop are released, ready at once in their places."""
        seqs = [job.handle[0] for job in jobs if job.settled is None]
        for seq in seqs:
            self._held.pop(seq, None)
        if seqs:
            try:
                await self._release(seqs)
            except Exception as exc:  # they come back when their lease ends
                self.log.warning("pipeline %r: giving %d jobs back failed (they return "
                                 "when their lease ends): %s", self.pipeline_name, len(seqs),
                                 describe_error(exc))

    async def _release(self, seqs: list[int]) -> None:
        await self.relaxed.fetchval(self.sql.release, seqs, self.owner, self.channel,
                                 self.pipeline_name)

    def queued_lease(self) -> float:
        """``visibility_timeout``: the kit renews the reservations of the jobs no handler
        has taken yet every third of it (:meth:`renew_queued`)."""
        return self.options.visibility_timeout

    async def _start_consuming(self) -> None:
        """Open the consumer's connections before its first reservation: the pool of
        reservations and acks, all of its connections at once (one per reservation in
        flight and per ack batch), and the LISTEN connection."""
        if self.relaxed is None:
            # A reservation or an ack lost to a crash of the server in the few ms before
            # its WAL is flushed only makes the job come again (at-least-once); the next
            # durable commit flushes them. Pushes, requeues and dead letters wait.
            size = 1 + ACK_BATCHES
            self.relaxed = await asyncpg.create_pool(
                self.dsn, min_size=size, max_size=size,
                server_settings={"application_name": "rrjobs", "synchronous_commit": "off"})
        await self._listen()
        await super()._start_consuming()

    async def _stop_consuming(self) -> None:
        try:
            await super()._stop_consuming()
        finally:
            self._acks.hold = 0.0  # no reservation comes to carry them

    async def renew_queued(self, jobs: Sequence[Job], seconds: float
                           ) -> list[BaseException | None]:
        """One ``UPDATE`` of the reservations this driver still holds (a handler's job is
        extended only through ``Job.extend_lease``: a stuck holder loses it)."""
        held = [self._held.get(j.handle[0]) is j for j in jobs]
        out: list[BaseException | None] = [None if h else self._lost(j)
                                           for j, h in zip(jobs, held, strict=True)]
        seqs = [j.handle[0] for j, h in zip(jobs, held, strict=True) if h]
        if seqs:
            try:
                await self.relaxed.execute(self.sql.renew, seqs, self.owner,
                                           whole_millis(seconds))
            except Exception as exc:
                return [exc if h else e for h, e in zip(held, out, strict=True)]
        return out

    async def _close(self) -> None:
        await self.supervisor.stop()
        self._held.clear()
        listener, self._listener = self._listener, None
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.close(timeout=2)
        pool, relaxed = self.pool, self.relaxed
        try:
            if pool is not None:
                await self.bounded(self._acks.drain(), "acknowledging")
                await self.bounded(self._inserts.drain(), "pushing")
                await self.bounded(pool.fetchval(self.sql.release_all, self.pipeline_name,
                                                 self.owner, self.channel),
                                   "giving unsettled jobs back")
        finally:
            self.pool = self.relaxed = None
            for each in (pool, relaxed):
                if each is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(each.close(), 5)
                    each.terminate()

    # -- settling -----------------------------------------------------------------------

    def _check(self, job: Job) -> Handle:
        self.check_not_stopped(job)
        handle: Handle = job.handle
        if self._held.get(handle[0]) is not job:
            raise AckLostError(f"job {job.id}: its reservation was lost (its lease expired "
                               "and it was delivered again, or a pause gave it back)")
        return handle

    def _done(self, job: Job) -> None:
        if self._held.get(job.handle[0]) is job:
            del self._held[job.handle[0]]
        self.settled(job)

    def _lost(self, job: Job) -> AckLostError:
        return AckLostError(f"job {job.id}: its reservation was lost (lease expired)")

    async def _delete(self, handles: Sequence[Handle]) -> list[None]:
        """One ``DELETE`` of the acks ``handles``; those whose reservation was gone
        (its lease ended, the job was delivered again) are logged together."""
        deleted = await self.relaxed.fetchval(self.sql.ack, [h[0] for h in handles],
                                              [h[1] for h in handles], self.owner)
        self._count_lost(len(handles), deleted)
        return [None] * len(handles)

    def _count_lost(self, acked: int, deleted: int) -> None:
        if deleted < acked:
            self.log.warning("pipeline %r: %d acknowledged jobs had lost their reservation "
                             "(lease expired): they are delivered again",
                             self.pipeline_name, acked - deleted)

    def ack_now(self, job: Job) -> None:
        """Delete the job's row. Returns once the delete is queued, not committed: it
        goes with the acks of the same moment in one ``DELETE``, or in the next
        reservation while the consumer is busy (at most :data:`ACK_HOLD` later). Should
        the process or the server die in between, the job is delivered again
        (at-least-once; nothing is lost). Never blocks."""
        handle = self._check(job)
        self._acks.post(handle)
        self._done(job)

    async def dead_letter(self, job: Job) -> None:
        seq, deliveries = self._check(job)
        try:
            if self.options.dead_letter:
                status = await self.pool.execute(self.sql.dead_letter, seq, deliveries,
                                                 self.owner, encode_headers(job.headers))
                moved = status.endswith(" 1")
            else:
                moved = (await self.pool.execute(self.sql.delete, seq, deliveries,
                                                 self.owner)).endswith(" 1")
                self.dropped(job, "dead_letter")
        finally:
            self._done(job)
        if not moved:
            raise self._lost(job)

    async def requeue(self, job: Job, headers: Headers, delay: float) -> None:
        seq, deliveries = self._check(job)
        try:
            moved = await self.pool.fetchval(
                self.sql.requeue, seq, deliveries, self.owner, encode_headers(headers),
                whole_millis(delay), self.channel, self.pipeline_name)
        finally:
            self._done(job)
        if not moved:
            raise self._lost(job)

    async def extend(self, job: Job, seconds: float) -> None:
        seq, deliveries = self._check(job)
        status = await self.pool.execute(self.sql.extend, seq, deliveries, self.owner,
                                         whole_millis(seconds))
        if not status.endswith(" 1"):
            raise self._lost(job)

    def _pool(self) -> Any:
        if self.pool is None:
            raise PipelineStateError(f"pipeline {self.pipeline_name!r} is stopped")
        return self.pool

    # -- state ----------------------------------------------------------------------------

    async def state(self) -> State:
        await self._acks.drain()  # acks made before this call are counted
        if self.pool is not None:
            row = await self.pool.fetchrow(self.sql.counts, self.pipeline_name)
        else:
            conn = await asyncpg.connect(self.dsn)
            try:
                row = await conn.fetchrow(self.sql.counts, self.pipeline_name)
            finally:
                await conn.close()
        ready, delayed, reserved = row
        queued = self.lane.queued
        return self.state_of(self.options.table, ready + queued, delayed,
                             max(0, reserved - queued))


class PostgresConstructor(DriverConstructor):
    """Builds ``postgres`` drivers. Registered as the ``postgres`` entry point."""

    driver_class = PostgresDriver
    options_model = PostgresOptions
    section_model = PostgresSection
