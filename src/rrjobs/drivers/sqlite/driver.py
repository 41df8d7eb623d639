"""The ``sqlite`` driver: durable jobs in one local SQLite file, no broker.

``push`` → INSERT → the consumer reserves ready rows while fewer than
``prefetch`` are held → priority queue → handler → ack = DELETE. Guarantees,
durability, leases, hand-off: ``docs/drivers/sqlite.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import cache, partial
from typing import Any, ClassVar, cast

from rrjobs.core.base import BaseDriver
from rrjobs.core.capabilities import Capabilities
from rrjobs.core.constructor import DriverConstructor
from rrjobs.core.deadletters import DeadLetter, Replay, failed_at_text, find_scanned, take_scanned
from rrjobs.core.delays import due_at_ms
from rrjobs.core.errors import AckLostError, ConfigError
from rrjobs.core.feed import Feed
from rrjobs.core.headers import DEDUCED_BY_RR, RR_ERROR, UNREADABLE, Headers
from rrjobs.core.job import Job
from rrjobs.core.lane import Lane
from rrjobs.core.message import Message, new_id
from rrjobs.core.outage import Outage
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.state import State
from rrjobs.drivers.sqlite import journal, queries
from rrjobs.drivers.sqlite.codec import decode_headers, decode_payload, encode_headers
from rrjobs.drivers.sqlite.config import SQLiteOptions
from rrjobs.drivers.sqlite.schema import StoreError, connect_reader
from rrjobs.drivers.sqlite.store import Coalescer, Store

#: The largest payload accepted (a huge one would stall the file's one writer thread).
MAX_PAYLOAD = 64 * 1024 * 1024

#: At most this many jobs are reserved by one query.
FETCH_MAX = 512
#: Dead letters read per query while a replay takes them all.
DEAD_PAGE = 100

#: ``shared_queue``: processes on one file (a local file system) share its jobs;
#: ``reserved``: the file's count of every process's reserved rows.
CAPABILITIES = Capabilities(durable=True, max_payload=MAX_PAYLOAD, lease_extension=True,
                            redelivery_on_crash=True, delay_granularity=0.001,
                            shared_queue=True)

#: Owners (driver instances) alive in this process; see :func:`owner_is_dead`.
_LIVE_OWNERS: set[str] = set()


@cache
def _host() -> str:
    return socket.gethostname().replace(":", "_")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def available_at(delay: float) -> int:
    """When a job pushed now with ``delay`` seconds becomes ready, in unix ms
    rounded *up* (never early); ``0``, "at once", without a delay."""
    return due_at_ms(delay) if delay > 0 else 0


def owner_is_dead(owner: str) -> bool:
    """Whether the process that made reservation ``owner`` (``host:pid:token``) is gone:
    a stopped driver of this process, a process of this host that no longer runs,
    or an earlier one with this pid. Another host's: unknown, the lease decides."""
    parts = owner.rsplit(":", 2)
    if owner in _LIVE_OWNERS or len(parts) != 3 or parts[0] != _host() or not parts[1].isdigit():
        return False
    pid = int(parts[1])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        pass
    return pid == os.getpid()  # ours: a stopped driver, or an earlier process with this pid


class SQLiteJob(Job):
    """A reserved row (settlement errors: ``docs/drivers/sqlite.md``). ``seq``: its
    sequence number (FIFO order, unique in the file); ``delivery``: how many times
    it has been reserved, this one included."""

    __slots__ = ("delivery", "seq")
    seq: int
    delivery: int


def _open_pipeline(conn: sqlite3.Connection, pipeline: str, priority: int) -> int:
    """Record the pipeline; return the reservations of dead owners to the queue."""
    queries.register_pipeline(conn, pipeline, priority, now_ms())
    return sum(queries.release(conn, pipeline, owner)
               for owner in queries.owners(conn, pipeline) if owner_is_dead(owner))


@dataclass(slots=True)
class _Held:
    """One reservation in flight: the acks it deletes, the jobs it delivered, and
    whether its commit failed after they were delivered (:meth:`Store.write`'s
    ``void``)."""

    acked: list[int]
    jobs: list[SQLiteJob] = field(default_factory=list)
    voided: bool = False


class SQLiteDriver(BaseDriver):
    """One pipeline stored in an SQLite file. Never blocks the loop (SQLite runs on
    the store's threads); ``push``, ``nack`` and ``requeue`` return once
    committed, ``ack`` once queued (see :meth:`ack_now`)."""

    name: ClassVar[str] = "sqlite"

    def __init__(self, pipeline: Pipeline, queue: PriorityQueue, options: SQLiteOptions,
                 section: Any = None) -> None:
        super().__init__(pipeline, queue)
        self.priority = options.priority
        self.options = options
        self.prefetch = options.prefetch
        if options.dead_letter:
            self.capabilities = replace(CAPABILITIES, dead_letter=True, dead_letter_read=True)
            self.dead_letters = self  # the rrjobs_dead table (the methods below)
        self.owner = f"{_host()}:{os.getpid()}:{uuid.uuid4().hex[:16]}"  # of its reservations
        self._lease_ms = round(options.lease * 1000)
        self._outstanding: dict[int, SQLiteJob] = {}  # reserved and not settled, by seq
        #: reserved jobs (counted in ``_outstanding``) waiting for room in the priority queue
        self.feed = Feed(Lane(queue, self.pipeline_name, self.prefetch), self.supervisor,
                         counted=True)
        self._refill = max(1, min(FETCH_MAX // 2, self.prefetch // 4))
        self._wake = asyncio.Event()
        self._need_room = False
        #: reserving jobs keeps failing (logged as the kit's fetch loop logs; never a restart)
        self._outage = Outage("reserving jobs", self.supervisor.owner, self.log, math.inf)
        self.store: Store
        self._released = True
        #: the file may hold ready jobs of this pipeline nobody reserved: no hand-off (FIFO)
        self._backlog = True
        self._unreserved_writes = 0  # writes that left ready, unreserved jobs in the file
        self._handoff_pending = 0  # jobs being inserted already reserved for this consumer
        self._epoch = 0  # bumped when the consumer stops: hand-offs begun before are void
        self._journal: journal.Journal | None = None  # with push_journal: the store's
        self._fold_seen: asyncio.Future[None] | None = None
        #: seqs acked since the loop's current iteration began, deleted together after it
        self._acked: list[int] = []

    capabilities = CAPABILITIES

    async def open(self, where: str) -> None:
        """Open (create, migrate) the file; jobs reserved by dead processes return to
        the queue. :class:`ConfigError` at ``where.file`` if the file is unusable."""
        options = self.options
        try:
            store = await Store.acquire(options.file, synchronous=options.synchronous,
                                        permissions=options.permissions)
        except StoreError as exc:
            raise ConfigError(f"{where}.file", str(exc)) from None
        self.store = store
        self._released = False
        self._inserts: Coalescer[Sequence[queries.InsertRow], int] = Coalescer(
            store, queries.insert_batches)
        self._acks: Coalescer[int, None] = Coalescer(store, queries.delete_acks,
                                                     self._acks_failed, durable=False)
        store.before_flush.append(self._send_acks)
        if options.push_journal:
            self._journal = journal.of(store)
        _LIVE_OWNERS.add(self.owner)
        store.subscribe(self.pipeline_name, self._wake.set)
        folded = await journal.recover(store)
        if folded:
            self.log.warning("%s: %d jobs pushed by a process that is gone were taken from "
                             "its push journal", store.path, folded)
        recovered = await store.write(partial(
            _open_pipeline, pipeline=self.pipeline_name, priority=self.priority))
        if recovered:
            self.log.warning("pipeline %r: %d jobs reserved by a process that is gone returned "
                        "to the queue", self.pipeline_name, recovered)

    def _row(self, msg: Message, created: int, until: int | None = None) -> queries.InsertRow:
        """The row of ``msg``; reserved for this consumer until ``until`` (unix ms) if given."""
        return (self.pipeline_name, msg.id, msg.name, bytes(msg.payload),
                encode_headers(msg.headers), msg.priority, 1 if msg.auto_ack else 0,
                available_at(msg.delay), created, 0 if until is None else 1,
                None if until is None else self.owner, until)

    async def _send(self, msg: Message) -> None:
        await self._send_batch((msg,))

    def _handoff_room(self, msgs: Sequence[Message]) -> int:
        """How many of ``msgs`` (a prefix without delays) go straight to this
        process's consumer: only while it consumes, has prefetch room and the
        file holds no ready job of the pipeline it has not reserved."""
        if not self.consuming or self._backlog or self.stopped or self._journal is not None:
            return 0
        room = max(0, min(len(msgs), self._room()))
        return next((i for i, m in enumerate(msgs[:room]) if m.delay > 0), room)

    async def _send_batch(self, msgs: Sequence[Message]) -> None:
        """Insert ``msgs`` (one transaction, shared with concurrent pushes);
        return once committed. *Hand-off*: the first :meth:`_handoff_room` jobs
        are inserted already reserved for this consumer and, once committed,
        queued without being read back (durable and leased like any other)."""
        if not msgs:
            return
        created = now_ms()
        n = self._handoff_room(msgs)
        row, until = self._row, created + self._lease_ms
        rows = [row(m, created, until if i < n else None) for i, m in enumerate(msgs)]
        if any(m.delay <= 0 for m in msgs[n:]):
            self._backlog = True
            self._unreserved_writes += 1
        if self._journal is not None:  # n == 0: returns once journaled
            await self._journaled(self._journal, rows)
            return
        epoch = self._epoch
        self._handoff_pending += n
        try:
            first = await self._inserts.add(rows)
        finally:
            self._handoff_pending -= n
        if n and first is not None:
            self._hand_off(msgs, n, first, epoch)
        if n < len(msgs):
            self.store.notify(self.pipeline_name)

    async def _journaled(self, jnl: journal.Journal, rows: list[queries.InsertRow]) -> None:
        """Append ``rows`` to the push journal; wait for their commit only while the
        writer is more than :data:`journal.MAX_UNFOLDED` rows behind."""
        fut = jnl.append(rows)
        if fut is not self._fold_seen:  # one wake-up of the consumers per fold
            self._fold_seen = fut
            fut.add_done_callback(self._journal_folded)
        if jnl.unfolded > journal.MAX_UNFOLDED:
            await asyncio.shield(fut)

    def _journal_folded(self, fut: asyncio.Future[None]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self.store.notify(self.pipeline_name)

    def _hand_off(self, msgs: Sequence[Message], n: int, first: int, epoch: int) -> None:
        """Queue the first ``n`` of ``msgs``, committed reserved from seq ``first``.
        If the consumer stopped meanwhile, its release returned them to the file."""
        if epoch != self._epoch or self.stopped:
            return
        jobs = [self._make(seq, 1, m.id, m.name, bytes(m.payload),
                           {k: list(v) for k, v in m.headers.items()}, m.priority, m.auto_ack)
                for seq, m in enumerate(msgs[:n], first)]
        self._outstanding.update((job.seq, job) for job in jobs)
        self.feed.ready.extend(jobs)
        self.feed.pump()

    def _make(self, seq: int, delivery: int, id: str, name: str, payload: bytes,
              headers: Headers, priority: int, auto_ack: bool,
              failure: str | None = None) -> SQLiteJob:
        job = cast(SQLiteJob, SQLiteJob.make(self, None, id, name, payload, headers,
                                             self.pipeline_name, priority, auto_ack,
                                             self.options.lease))
        job.seq, job.delivery, job.failure = seq, delivery, failure
        return job

    def decode(self, raw: Any) -> SQLiteJob:
        seq, id_, name, payload, headers, priority, auto_ack, deliveries = raw
        return self._make(seq, deliveries, id_, name or DEDUCED_BY_RR,
                          payload if type(payload) is bytes else decode_payload(payload),
                          {} if headers == "{}" else decode_headers(headers),
                          self.priority if priority is None else int(priority), bool(auto_ack))

    def poison(self, raw: Any, reason: str) -> SQLiteJob:
        seq, deliveries, payload = raw[0], raw[7], raw[3]
        return self._make(seq, deliveries, new_id(), UNREADABLE,
                          payload if isinstance(payload, bytes) else str(payload).encode(),
                          {RR_ERROR: [reason]}, self.priority, False, failure=reason)

    def _room(self) -> int:
        return self.prefetch - len(self._outstanding) - self._handoff_pending

    async def _consume(self) -> None:
        """Reserve ready jobs into the priority queue while prefetch allows; sleep until
        a push, a settlement that frees room, the next due delay or lease expiry, or
        the poll interval (which reserves only if ``PRAGMA data_version`` changed)."""
        store = self.store
        wake_at: int | None = None  # the next due delay or lease expiry (unix ms)
        version: int | None = None  # the file's data_version at the last poll
        polled = False  # woken by the poll interval alone
        while True:
            self._wake.clear()
            room = self._room()
            unchanged = False
            if room > 0 and polled and (wake_at is None or now_ms() < wake_at):
                try:
                    seen, version = version, await store.read(queries.data_version)
                except StoreError:
                    seen = None
                unchanged = seen is not None and seen == version and not self._wake.is_set()
            polled = False
            if room > 0 and not unchanged:
                limit = min(room, FETCH_MAX)
                start = now_ms()
                mark = self._unreserved_writes
                acked, self._acked = self._acked, []  # deleted by the same operation
                held = _Held(acked)
                try:
                    # delivered before its commit, which overlaps the handlers' work
                    res = await store.write(partial(
                        queries.reserve, pipeline=self.pipeline_name, owner=self.owner,
                        limit=limit, now_ms=start, until_ms=start + self._lease_ms,
                        acked=acked), durable=False, void=partial(self._void, held))
                except StoreError as exc:
                    if acked:
                        self._acks_failed(acked, exc)
                    self.connected = False
                    await self._outage.failed(exc)
                    continue
                self.connected = True
                self._outage.ok()
                if res.expired:
                    self.log.warning("pipeline %r: %d reservations whose lease expired returned to "
                                "the queue", self.pipeline_name, res.expired)
                jobs = [j for j in map(self.accept, res.rows) if isinstance(j, SQLiteJob)]
                if held.voided:  # its commit failed already: the rows are still ready
                    continue
                held.jobs = jobs
                self._outstanding.update((job.seq, job) for job in jobs)
                if len(jobs) == limit:
                    self._backlog = True
                elif mark == self._unreserved_writes:
                    self._backlog = False  # caught up: pushes may be handed off
                self.feed.ready.extend(jobs)
                self.feed.pump()
                if len(jobs) == limit:
                    continue
                wake_at = res.next_wake_ms
            self._need_room = self._room() <= 0
            if self._wake.is_set():
                continue
            timeout: float | None = None
            poll = self.options.poll_interval
            if not self._need_room:
                if wake_at is not None:
                    timeout = max(0.0, (wake_at - now_ms()) / 1000)
                if poll > 0 and (timeout is None or poll < timeout):
                    timeout, polled = poll, True
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
                polled = False

    async def _renew(self) -> None:
        """Every lease/3, renew the leases of the jobs waiting in the priority queue (a
        handler's job only through ``Job.extend_lease``: a stuck holder loses it)."""
        while True:
            await asyncio.sleep(self.options.lease / 3)
            seqs = [j.seq for j in (*self.queue, *self.feed.ready)
                    if isinstance(j, SQLiteJob) and j.settler is self]
            if not seqs:
                continue
            try:
                await self.store.write(partial(queries.renew, owner=self.owner, seqs=seqs,
                                               until_ms=now_ms() + self._lease_ms),
                                       durable=False)
            except StoreError as exc:
                self.log.error("pipeline %r: renewing reservations failed: %s",
                          self.pipeline_name, exc)

    async def _start_consuming(self) -> None:
        if not self.supervisor.running("renew"):
            self.supervisor.start("renew", self._renew)
        self.feed.open()
        self.supervisor.start("consume", self._consume)

    async def _stop_consuming(self) -> None:
        self._epoch += 1
        self._backlog = True
        await self.supervisor.stop_task("consume")
        await self.feed.close()  # the queued jobs back in ``feed.ready``
        for job in self.feed.ready:
            if isinstance(job, SQLiteJob):
                self._outstanding.pop(job.seq, None)
        self.feed.ready.clear()
        self._send_acks()
        # Everything this driver reserved goes back, except the jobs in handlers.
        await self.store.write(partial(queries.release, pipeline=self.pipeline_name,
                                       owner=self.owner, keep=list(self._outstanding)),
                               durable=False)

    async def _close(self) -> None:
        self._epoch += 1
        await self.supervisor.stop()
        self._outstanding.clear()
        self.feed.ready.clear()
        if self._released:
            return
        self._released = True
        store = self.store
        store.unsubscribe(self.pipeline_name, self._wake.set)
        self._send_acks()
        with contextlib.suppress(ValueError):
            store.before_flush.remove(self._send_acks)
        try:
            if not store.closed:
                n = await store.write(partial(queries.release, pipeline=self.pipeline_name,
                                              owner=self.owner), durable=False)
                if n:
                    self.log.info("pipeline %r stopped: %d unsettled jobs returned to the queue",
                             self.pipeline_name, n)
        finally:
            _LIVE_OWNERS.discard(self.owner)
            await store.release()

    def _check(self, job: Job) -> SQLiteJob:
        assert isinstance(job, SQLiteJob)
        self.check_not_stopped(job)  # it was returned to the queue
        if self._outstanding.get(job.seq) is not job:
            raise AckLostError(f"job {job.id}: its reservation was lost (its lease expired and "
                               "it was delivered again, or it was returned to the queue by a "
                               "pause)")
        return job

    def _done(self, job: SQLiteJob) -> None:
        outstanding = self._outstanding
        if outstanding.get(job.seq) is job:
            del outstanding[job.seq]
            if self._need_room and (self.prefetch - len(outstanding) >= self._refill
                                    or not outstanding):
                self._wake.set()

    def ack_now(self, job: Job) -> None:
        """Delete the job's row. Returns once the delete is queued, not committed:
        the acks of one iteration of the event loop are queued together when it
        ends (or at once by :meth:`Store.flush`, a pause or a stop) and commit with
        the next group (milliseconds). Should the process die in between, the
        job is delivered again (at-least-once; nothing is lost). Never blocks."""
        job = self._check(job)
        acked = self._acked
        acked.append(job.seq)
        if len(acked) == 1:
            asyncio.get_running_loop().call_soon(self._acks_due)
        self._done(job)

    def _acks_due(self) -> None:
        """The turn of the first ack waiting has ended: the consumer, woken by the room
        they freed, takes them into its next reservation in the next turn; those it did
        not take are queued once that turn ends."""
        asyncio.get_running_loop().call_soon(self._send_acks)

    def _send_acks(self) -> None:
        """Queue the deletes of the acks waiting in :attr:`_acked` as one operation, behind
        the writes queued before it."""
        seqs = self._acked
        if not seqs:
            return
        self._acked = []
        try:
            self._acks.extend_nowait(seqs)
        except StoreError as exc:  # closed meanwhile: those jobs are delivered again
            self._acks_failed(seqs, exc)

    async def dead_letter(self, job: Job) -> None:
        job = self._check(job)
        try:
            if self.options.dead_letter:
                await self.store.write(partial(queries.dead_letter, seq=job.seq,
                                               headers=encode_headers(job.headers),
                                               now_ms=now_ms()))
            else:
                await self.store.write(partial(queries.delete, seq=job.seq), durable=False)
        finally:
            self._done(job)

    async def requeue(self, job: Job, headers: Headers, delay: float) -> None:
        job = self._check(job)
        if delay <= 0:
            self._backlog = True
            self._unreserved_writes += 1
        try:
            moved = await self.store.write(partial(
                queries.requeue, seq=job.seq, owner=self.owner, deliveries=job.delivery,
                headers=encode_headers(headers), available_at=available_at(delay)))
        finally:
            self._done(job)
        if not moved:
            raise AckLostError(f"job {job.id}: its reservation was lost (lease expired); it "
                               "is back in the queue without the requeue's headers")
        self.store.notify(self.pipeline_name)

    async def extend(self, job: Job, seconds: float) -> None:
        job = self._check(job)
        ok = await self.store.write(partial(
            queries.extend, seq=job.seq, owner=self.owner, deliveries=job.delivery,
            until_ms=now_ms() + round(seconds * 1000)), durable=False)
        if not ok:
            raise AckLostError(f"job {job.id}: its reservation was lost (lease expired)")

    # -- dead letters (DeadLetterStore: the rrjobs_dead table, walked by seq) ----------

    def _letter(self, row: queries.DeadRow) -> DeadLetter:
        _, job_id, name, payload, headers, priority, failed_ms = row
        return DeadLetter.of(str(job_id or ""), str(name or DEDUCED_BY_RR),
                             decode_payload(payload), decode_headers(headers),
                             self.pipeline_name, int(priority or 0),
                             failed_at_text(failed_ms / 1000))

    async def _scan(self, end: int | None = None) -> AsyncIterator[tuple[int, DeadLetter]]:
        """``(seq, letter)`` of the pipeline's dead letters, oldest first, a page at a
        time, up to seq ``end`` (every one when ``None``)."""
        after = 0
        while rows := await self.store.read(partial(
                queries.dead_letters, pipeline=self.pipeline_name, limit=DEAD_PAGE,
                after_seq=after)):
            for row in rows:
                if end is not None and row[0] > end:
                    return
                yield row[0], self._letter(row)
            after = rows[-1][0]

    async def list_dead_letters(self, limit: int) -> list[DeadLetter]:
        rows = await self.store.read(partial(queries.dead_letters, pipeline=self.pipeline_name,
                                             limit=limit))
        return [self._letter(r) for r in rows]

    async def peek_dead_letter(self, id: str) -> DeadLetter | None:
        return await find_scanned(self._scan(), id)

    async def take_dead_letters(self, ids: Sequence[str] | None,
                                replay: Replay) -> list[str]:
        """Of the letters there are when the take begins; each row is deleted once its
        letter is replayed."""
        end = await self.store.read(partial(queries.last_dead_seq, pipeline=self.pipeline_name))
        return await take_scanned(self._scan(end), ids, replay, lambda seq: self.store.write(
            partial(queries.delete_dead, seq=seq)))

    async def purge_dead_letters(self) -> int:
        return await self.store.write(partial(queries.purge_dead, pipeline=self.pipeline_name))

    def _void(self, held: _Held, exc: BaseException) -> None:
        """A reservation delivered before its commit was rolled back: its jobs were not
        reserved (their settlements fail as after a lost lease, and they are delivered
        again) and the acks it carried not deleted."""
        held.voided = True
        lost = [job for job in held.jobs if self._outstanding.get(job.seq) is job]
        for job in lost:
            self._done(job)
        self._backlog = True  # the rows are ready in the file again: reserve them
        self._wake.set()
        self.log.error("pipeline %r: a reservation failed to commit; its jobs will be "
                       "delivered again: %s", self.pipeline_name, exc)
        if held.acked:
            self._acks_failed(held.acked, exc)

    def _acks_failed(self, seqs: list[int], exc: BaseException) -> None:
        self.log.error("pipeline %r: %d acknowledgements failed; those jobs will be delivered "
                  "again: %s", self.pipeline_name, len(seqs), exc)

    async def state(self) -> State:
        store = self.store
        if not store.closed:
            await store.flush()  # acks queued before this call are counted
        count = partial(queries.counts, pipeline=self.pipeline_name, now_ms=now_ms())
        counts = await (asyncio.to_thread(_read_file, store.path, count) if store.closed
                        else store.read(count))
        queued = self.queue.count(self.pipeline_name)
        return self.state_of(store.path, counts.ready + queued, counts.delayed,
                             max(0, counts.reserved - queued))


class BoltDBDriver(SQLiteDriver):
    """The ``boltdb`` alias: RoadRunner's keys, this driver's SQLite file format."""

    name: ClassVar[str] = "boltdb"


def _read_file(path: str, query: Callable[[sqlite3.Connection], queries.Counts]) -> queries.Counts:
    with contextlib.closing(connect_reader(path)) as conn:
        return query(conn)


class SQLiteConstructor(DriverConstructor):
    """Builds ``sqlite`` drivers. Registered as the ``sqlite`` entry point."""

    file_options: ClassVar[tuple[str, ...]] = ("file",)
    driver_class = SQLiteDriver
    options_model = SQLiteOptions


class BoltDBConstructor(SQLiteConstructor):
    """Builds ``boltdb`` pipelines (RoadRunner configs) on the SQLite driver."""

    driver_class = BoltDBDriver
