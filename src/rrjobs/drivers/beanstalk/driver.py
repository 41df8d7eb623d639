"""The ``beanstalk`` driver: RoadRunner's Beanstalk driver on beanstalkd's own protocol.

Capabilities, options and settling are described for users in
``docs/drivers/beanstalk.md``. The consumer is the kit's
:class:`~rrjobs.core.leases.LeasingDriver`: a reserved job is leased to the
connection that reserved it for its TTR, ``touch`` renews it, and beanstalkd
gives every job of a connection that closes back to the tube. Two connections
per pipeline, as RoadRunner's: one puts (``use`` the tube), one reserves
(``watch`` the tube) and settles, since beanstalkd lets only the reserving
connection delete, release, bury or touch a job.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, ClassVar

from rrjobs.core.capabilities import Capabilities
from rrjobs.core.constructor import DriverConstructor
from rrjobs.core.delays import SECOND, whole_seconds
from rrjobs.core.errors import AckLostError, PayloadTooLargeError, RRJobsError
from rrjobs.core.headers import Headers
from rrjobs.core.job import Job
from rrjobs.core.leases import LeasingDriver
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.state import State
from rrjobs.drivers.beanstalk import codec
from rrjobs.drivers.beanstalk.config import (
    DEFAULT_DECLARE_RESERVE_TIMEOUT,
    DEFAULT_DECLARE_TUBE_PRIORITY,
    MAX_TTR,
    BeanstalkOptions,
    BeanstalkSection,
)
from rrjobs.drivers.beanstalk.deadletters import LETTER_TTR, BuriedJobs
from rrjobs.drivers.beanstalk.protocol import (
    BeanstalkError,
    CommandError,
    Connection,
    DeadlineSoon,
    NotFound,
    Reply,
    Reserved,
    connect,
)

#: Pause between non-blocking reserves that found nothing while jobs are out (a
#: blocking reserve would hold back their settlements on the reserving connection).
IDLE_POLL = 0.02
#: Delay of a dead letter's copy between its ``put`` and its ``bury`` (it is reserved
#: by id at once; the delay only keeps consumers off it if the process dies between).
DEAD_LETTER_HOLD = 3600
#: Seconds a reply may take beyond a command's own wait before the connection is dropped.
REPLY_GRACE = 10.0


class BeanstalkDriverError(RRJobsError):
    """A beanstalkd command failed."""


Handle = tuple[Connection, int]


#: Every tube's (``durable`` once the server says; ``reserved``: the tube's count of every
#: connection's jobs).
BASE_CAPABILITIES = Capabilities(durable=False, priority=False, lease_extension=True,
                                 redelivery_on_crash=True, delay_granularity=SECOND,
                                 max_delay=float(2**32 - 1), shared_queue=True)


class BeanstalkDriver(LeasingDriver):
    """One pipeline on one beanstalkd tube. A job's ``handle`` is ``(connection,
    job id)``: the connection that reserved it, which alone may settle it."""

    name: ClassVar[str] = "beanstalk"
    capabilities = BASE_CAPABILITIES
    lease_lost = "its TTR ran out or its connection closed; beanstalkd delivers it again"
    max_lease = MAX_TTR

    def __init__(self, pipeline: Pipeline, queue: PriorityQueue, options: BeanstalkOptions,
                 section: BeanstalkSection) -> None:
        super().__init__(pipeline, queue, options.prefetch)
        self.options, self.section = options, section
        self.tube = options.tube
        self.ttr = max(1, whole_seconds(options.ttr or section.timeout))
        self.reserve_timeout = whole_seconds(options.reserve_timeout)
        self.capabilities = replace(BASE_CAPABILITIES, dead_letter=options.bury_failed,
                                    dead_letter_read=options.bury_failed)
        self._producer: Connection | None = None
        self._consumer: Connection | None = None
        self._connecting = asyncio.Lock()
        if options.bury_failed:
            self.dead_letters = BuriedJobs(section.addr, section.timeout, self.tube,
                                           self.pipeline_name, self.priority,
                                           options.tube_priority)

    # -- connections ------------------------------------------------------------------

    def _orphan(self, conn: Connection, reply: Reply) -> None:
        """A reserve cancelled (pause, stop) got a job anyway: give it back."""
        if reply.word == b"RESERVED":
            with contextlib.suppress(BeanstalkError):
                conn.post(b"release %s %d 0" % (reply.args[0], self.options.tube_priority))

    async def _connect(self, *, consumer: bool) -> Connection:
        conn = await connect(self.section.addr, self.section.timeout, self._orphan)
        try:
            async with asyncio.timeout(self.section.timeout):
                await conn.use(self.tube)
                if consumer:
                    await conn.watch(self.tube)
                    if self.tube != "default":
                        await conn.ignore("default")
        except BaseException:
            await conn.close()
            raise
        return conn

    async def producer(self) -> Connection:
        conn = self._producer
        if conn is None or conn.closed:
            async with self._connecting:
                conn = self._producer
                if conn is None or conn.closed:
                    conn = self._producer = await self._connect(consumer=False)
                    self.connected = True
        return conn

    async def consumer(self) -> Connection:
        conn = self._consumer
        if conn is None or conn.closed:
            if conn is not None:  # its reservations went back to the tube
                self._forget(conn)
            conn = self._consumer = await self._connect(consumer=True)
        return conn

    def _forget(self, conn: Connection) -> None:
        for handle in [h for h in self.leases if h[0] is conn]:
            self.leases.let_go(handle)

    async def open(self, where: str) -> None:
        """Connect the producer, read the server's job size limit and binlog."""
        conn = await self.producer()
        stats = await conn.stats()
        limit = int(stats.get("max-job-size", "65535"))
        durable = stats.get("binlog-current-index", "0") not in ("0", "")
        self.capabilities = replace(self.capabilities, durable=durable,
                                    max_payload=max(0, limit - codec.ENVELOPE_RESERVE))

    async def _close(self) -> None:
        """Closing the consumer gives its reserved jobs back to the tube, once the
        deletes and releases sent are answered."""
        for conn in (self._consumer, self._producer):
            if conn is not None:
                await conn.settle(self.reserve_timeout + REPLY_GRACE)
                await conn.close()
        self._consumer = self._producer = None
        self.leases.clear()

    # -- pushing ----------------------------------------------------------------------

    def _body(self, job: Message | Job, headers: Headers, delay: int = 0) -> bytes:
        return codec.encode(id=job.id, name=job.name, pipeline=self.pipeline_name,
                            payload=bytes(job.payload), headers=headers,
                            priority=job.priority, auto_ack=job.auto_ack, delay=delay)

    async def _put(self, items: Sequence[tuple[bytes, int, int, int]]) -> None:
        """Put ``items`` (pipelined); a connection lost on the way is redialed and
        the puts retried once (a job may then be stored twice: at-least-once)."""
        for attempt in (1, 2):
            conn = await self.producer()
            try:
                await conn.put_many(items)
                return
            except (ConnectionError, OSError):
                if attempt == 2:
                    raise
            except CommandError as exc:
                if exc.reply == "JOB_TOO_BIG":
                    raise PayloadTooLargeError(
                        f"beanstalkd refused a job of the pipeline {self.pipeline_name!r} as "
                        "larger than its max-job-size (-z)") from None
                raise BeanstalkDriverError(str(exc)) from None

    async def _send(self, msg: Message) -> None:
        delay = whole_seconds(msg.delay)
        await self._put([(self._body(msg, msg.headers, delay), self.options.tube_priority,
                          delay, self.ttr)])

    async def _send_batch(self, msgs: Sequence[Message]) -> None:
        pri, ttr = self.options.tube_priority, self.ttr
        await self._put([(self._body(m, m.headers, d), pri, d, ttr)
                         for m in msgs for d in (whole_seconds(m.delay),)])

    # -- consuming --------------------------------------------------------------------

    def queued_lease(self) -> float:
        """The TTR: the kit ``touch``-es the jobs no handler has taken yet every third of
        it (pipelined on the reserving connection, through :meth:`extend`)."""
        return float(self.ttr)

    def fetch_want(self) -> int:
        return max(1, min(self.lane.prefetch // 2, 256))

    async def fetch(self, max_messages: int) -> Sequence[Any]:
        """Jobs ready now (pipelined non-blocking reserves); when nothing is out, one
        blocking reserve of ``reserve_timeout`` first."""
        conn = await self.consumer()
        got: list[Reserved] = []
        try:
            async with asyncio.timeout(self.reserve_timeout + REPLY_GRACE):
                if not self.leases:
                    try:
                        one = await conn.reserve(self.reserve_timeout)
                    except DeadlineSoon:
                        one = None
                    if one is not None:
                        got.append(one)
                if got or self.leases:
                    got.extend(await conn.reserve_many(max_messages - len(got)))
        except TimeoutError:
            await conn.close()
            raise BeanstalkDriverError("beanstalkd did not answer a reserve in time") from None
        if not self.lane.is_open:  # paused meanwhile: back to the tube
            for r in got:
                conn.post(b"release %d %d 0" % (r.id, self.options.tube_priority))
            return []
        ends = asyncio.get_running_loop().time() + self.ttr
        for r in got:
            self.leases.hold((conn, r.id), ends)
        if not got and self.leases:
            await asyncio.sleep(IDLE_POLL)
        return [(conn, r) for r in got]

    async def fetch_failed(self, exc: Exception) -> bool:
        conn = self._consumer
        if conn is not None and conn.closed:
            self._forget(conn)
            self._consumer = None
        return True

    def decode(self, raw: tuple[Connection, Reserved]) -> Job | None:
        conn, reserved = raw
        d = codec.decode(reserved.body, self.priority)
        # an auto_ack job is deleted when the worker pool takes it (the runtime acks it)
        return Job.make(self, (conn, reserved.id), d.id, d.name, d.payload, d.headers,
                        self.pipeline_name, d.priority, d.auto_ack, float(self.ttr))

    def poison(self, raw: tuple[Connection, Reserved], reason: str) -> Job:
        conn, reserved = raw
        return self.poison_job((conn, reserved.id), codec.payload_of(reserved.body), reason,
                               lease=float(self.ttr))

    # -- settling -----------------------------------------------------------------------

    def queue_name(self, job: Job) -> str:
        return self.tube

    async def _command(self, job: Job, command: bytes, what: str) -> None:
        """``command`` on the connection that reserved ``job``; a job no longer
        reserved there raises :class:`AckLostError`."""
        try:
            await job.handle[0].call(command)
        except (NotFound, ConnectionError) as exc:
            raise AckLostError(f"beanstalk: {what} of job {job.id}: {self.lease_lost} "
                               f"({exc})") from None

    async def _settle(self, job: Job, command: bytes, what: str) -> None:
        """``command`` on the job's connection; the job is settled either way."""
        try:
            self.check_held(job)
            await self._command(job, command, what)
        finally:
            self.leases.let_go(job.handle)
            self.settled(job)

    def ack_now(self, job: Job) -> None:
        """``delete``, sent at once and not awaited (pipelined with the connection's
        other commands): a delete beanstalkd refuses is logged, and the job is
        delivered again (at-least-once)."""
        try:
            self.check_held(job)
            conn, job_id = job.handle
            try:
                conn.post(b"delete %d" % job_id, lambda exc: self._ack_failed(job, exc))
            except ConnectionError as exc:
                raise AckLostError(f"beanstalk: delete of job {job.id}: {self.lease_lost} "
                                   f"({exc})") from None
        finally:
            self.leases.let_go(job.handle)
            self.settled(job)

    def _ack_failed(self, job: Job, exc: BaseException) -> None:
        level = logging.DEBUG if self.stopped or isinstance(exc, ConnectionError) \
            else logging.WARNING
        self.log.log(level, "pipeline %r: the delete of job %s failed (beanstalkd delivers "
                     "it again): %s", self.pipeline_name, job.id, exc)

    async def nack(self, job: Job, requeue: bool, delay: float) -> None:
        """``requeue``: ``release`` with the delay (the same job, native); otherwise
        buried with the job's headers (``bury_failed``) or deleted."""
        if requeue:
            await self._settle(job, b"release %d %d %d" % (
                job.handle[1], self.options.tube_priority, whole_seconds(delay)), "release")
        elif self.options.bury_failed:
            await self.dead_letter(job)
        else:
            await self._settle(job, b"delete %d" % job.handle[1], "delete")

    async def requeue(self, job: Job, headers: Headers, delay: float) -> None:
        """Put a copy with ``headers`` and ``delay``, then delete the original (given
        back at once if the put fails)."""
        seconds = whole_seconds(delay)
        body = self._body(job, headers, seconds)
        await self._replace(job, lambda: self._put(
            [(body, self.options.tube_priority, seconds, self.ttr)]), "requeue")

    async def dead_letter(self, job: Job) -> None:
        """Bury a copy carrying the job's headers (``rr_error`` & co.), then delete the
        original: a buried body cannot be rewritten. The copy is put delayed on the
        producer connection, reserved by id and buried there, pipelined."""
        body = self._body(job, job.headers)
        await self._replace(job, lambda: self._bury_copy(body), "bury")

    async def _replace(self, job: Job, send: Callable[[], Awaitable[None]], what: str) -> None:
        """``send()`` a copy of ``job``, then delete the original; the job is settled
        either way, and given back to the tube at once when the copy failed."""
        try:
            self.check_held(job)
            conn, job_id = job.handle
            await self.copy_or_give_back(send(), lambda: conn.post(
                b"release %d %d 0" % (job_id, self.options.tube_priority)))
            await self._command(job, b"delete %d" % job_id, f"{what} (the copy is stored)")
        finally:
            self.leases.let_go(job.handle)
            self.settled(job)

    async def _bury_copy(self, body: bytes) -> None:
        conn = await self.producer()
        pri = self.options.tube_priority
        job_id = await conn.put(body, pri, DEAD_LETTER_HOLD, LETTER_TTR)
        reply = await conn.call(b"reserve-job %d" % job_id)
        if reply.word != b"RESERVED":
            raise BeanstalkDriverError(f"beanstalkd: reserve-job {job_id}: {reply.word!r}")
        await conn.bury(job_id, pri)

    async def change_lease(self, job: Job, seconds: int) -> None:
        """``touch``: beanstalkd restarts the job's TTR (``seconds`` cannot be chosen)."""
        await self._command(job, b"touch %d" % job.handle[1], "touch")

    async def extend(self, job: Job, seconds: float) -> None:
        """A ``touch``: the job's lease is its TTR again, counted from the call."""
        self.check_held(job)
        start = asyncio.get_running_loop().time()
        await self.change_lease(job, self.ttr)
        self.leases.extended(job.handle, start + self.ttr)

    # -- state --------------------------------------------------------------------------

    async def state(self) -> State:
        """``stats-tube``: ready, delayed and reserved jobs (a tube not created yet: 0)."""
        stats = await (await self.producer()).stats_tube(self.tube) or {}
        queued = self.lane.queued
        reserved = int(stats.get("current-jobs-reserved", "0"))
        return self.state_of(self.tube, active=int(stats.get("current-jobs-ready", "0")) + queued,
                             delayed=int(stats.get("current-jobs-delayed", "0")),
                             reserved=max(0, reserved - queued))


class BeanstalkConstructor(DriverConstructor):
    driver_class = BeanstalkDriver
    options_model = BeanstalkOptions
    section_model = BeanstalkSection
    declare_defaults = {"tube_priority": DEFAULT_DECLARE_TUBE_PRIORITY,
                        "reserve_timeout": DEFAULT_DECLARE_RESERVE_TIMEOUT}
