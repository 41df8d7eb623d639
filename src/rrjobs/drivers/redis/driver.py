"""The ``redis`` driver: Redis Streams with consumer groups, on redis-py's asyncio client.

Keys, the entry layout, leases, delays, priority bands, durability and failure handling
are described for users in ``docs/drivers/redis.md``. The receive loop is the kit's
:class:`~rrjobs.core.leases.LeasingDriver`: ``XREADGROUP`` fetches, ``XAUTOCLAIM`` takes
back the entries of a consumer whose lease (``visibility_timeout``, the entry's idle
time) ran out, and the lease of a long job is extended by touching its entry (``XCLAIM``
to the same consumer with ``JUSTID``). Acks (``XACK`` + ``XDEL``) go out batched through
:class:`~rrjobs.core.batcher.Batcher`; a copy (requeue, delay, dead letter) and the ack
of its original are one Lua script, atomic. Delayed jobs wait in a sorted set and a hash
per job; one Lua script moves the due ones into their stream.

Every key of a pipeline carries the hash tag ``{queue}``: the scripts and pipelines
touch one hash slot, also on Redis Cluster.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Awaitable, Sequence
from dataclasses import replace
from typing import Any, ClassVar
from urllib.parse import urlsplit

from redis import exceptions as rexc
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.cluster import ClusterNode

from rrjobs.core.batcher import send_all
from rrjobs.core.capabilities import Capabilities
from rrjobs.core.constructor import DriverConstructor
from rrjobs.core.delays import MILLISECOND, whole_millis
from rrjobs.core.errors import AckLostError, RRJobsError
from rrjobs.core.headers import Headers
from rrjobs.core.job import Job
from rrjobs.core.leases import LeasingDriver
from rrjobs.core.message import Message
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.secrets import redact_error
from rrjobs.core.state import State
from rrjobs.core.tls import client_ssl_context
from rrjobs.drivers.redis import codec
from rrjobs.drivers.redis.config import RedisOptions, RedisSection
from rrjobs.drivers.redis.deadletters import DeadLetterStream

#: The largest payload (Redis takes 512 MB a value; a job is read whole by a consumer).
MAX_PAYLOAD = 16 << 20
#: Acks of one batch, and ack batches in flight.
ACK_BATCH, ACK_CONCURRENCY = 500, 2
#: Delayed jobs one run of the move script moves at most.
MOVE_LIMIT = 500
#: A delayed job's hash field naming the stream it goes to.
TARGET = b"\x00stream"

#: Move the due jobs of sorted set KEYS[1] (members: ids of hashes ARGV[2]..id) into
#: their streams; ARGV[1]: the most to move. Due against the server's clock.
MOVE_DUE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, uid in ipairs(due) do
  local key = ARGV[2] .. uid
  local flat = redis.call('HGETALL', key)
  local stream, args = nil, {}
  for i = 1, #flat, 2 do
    if flat[i] == '\\0stream' then stream = flat[i + 1]
    else args[#args + 1] = flat[i]; args[#args + 1] = flat[i + 1] end
  end
  if stream then redis.call('XADD', stream, '*', unpack(args)) end
  redis.call('DEL', key)
  redis.call('ZREM', KEYS[1], uid)
end
return #due
"""

#: Settle entry ARGV[2] of stream KEYS[1] (group ARGV[1]) with a copy: XACK it (0 when it
#: was no longer pending: nothing is copied), then add the fields ARGV[5..] to stream
#: KEYS[2], or with ARGV[3] a delay in ms store them in hash KEYS[3] scheduled in sorted
#: set KEYS[2] as member ARGV[4]; the original is deleted. ARGV[2] "": a delayed push.
COPY = """
if ARGV[2] ~= '' then
  if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 0 then return 0 end
  redis.call('XDEL', KEYS[1], ARGV[2])
end
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
if ARGV[3] == '' then
  redis.call('XADD', KEYS[2], '*', unpack(fields))
else
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.ceil(tonumber(t[2]) / 1000)
  redis.call('HSET', KEYS[3], unpack(fields))
  redis.call('ZADD', KEYS[2], now + tonumber(ARGV[3]), ARGV[4])
end
return 1
"""

#: Touch entry ARGV[3] of stream KEYS[1] if consumer ARGV[2] of group ARGV[1] still owns
#: it: its idle time becomes ARGV[4] ms (0: a full lease; the lease plus one: claimable).
TOUCH = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'IDLE', tonumber(ARGV[4]),
           'JUSTID')
return 1
"""

#: TOUCH for the entries ARGV[4..] of stream KEYS[1]: those consumer ARGV[2] of group
#: ARGV[1] still owns get idle time ARGV[3] ms, in one XCLAIM; 1 or 0 per entry.
TOUCH_MANY = """
local claim, out = {KEYS[1], ARGV[1], ARGV[2], 0}, {}
for i = 4, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 0 or p[1][2] ~= ARGV[2] then out[#out + 1] = 0
  else claim[#claim + 1] = ARGV[i]; out[#out + 1] = 1 end
end
if #claim > 4 then
  claim[#claim + 1] = 'IDLE'
  claim[#claim + 1] = tonumber(ARGV[3])
  claim[#claim + 1] = 'JUSTID'
  redis.call('XCLAIM', unpack(claim))
end
return out
"""

#: Forget consumer ARGV[2] of group ARGV[1] on streams KEYS if it holds no entry there.
FORGET = """
for _, key in ipairs(KEYS) do
  if redis.call('EXISTS', key) == 1 and
     #redis.call('XPENDING', key, ARGV[1], '-', '+', 1, ARGV[2]) == 0 then
    pcall(redis.call, 'XGROUP', 'DELCONSUMER', key, ARGV[1], ARGV[2])
  end
end
return 1
"""

#: An entry as fetched: its stream, its id and its fields.
Raw = tuple[bytes, bytes, dict[bytes, bytes]]
#: A job's handle: the stream and the entry id.
Handle = tuple[bytes, bytes]


class RedisError(RRJobsError):
    """A Redis call failed."""


def keys_of(queue: str) -> tuple[str, str]:
    """The key prefix (with the hash tag) of queue ``queue`` and its delayed set."""
    prefix = f"rrjobs:{{{queue}}}:"
    return prefix, f"{prefix}delayed"


def stream_keys(queue: str, bands: Sequence[int]) -> list[str]:
    """The streams of ``queue``: one, or one per priority band (lowest band first)."""
    prefix, _ = keys_of(queue)
    return [f"{prefix}jobs:{band}" for band in bands] if bands else [f"{prefix}jobs"]


#: Every pipeline's (``reserved``: the group's pending entries, every consumer's).
BASE_CAPABILITIES = Capabilities(durable=True, max_payload=MAX_PAYLOAD, lease_extension=True,
                                 redelivery_on_crash=True, delay_granularity=MILLISECOND,
                                 shared_queue=True)


def capabilities_for(options: RedisOptions) -> Capabilities:
    return replace(BASE_CAPABILITIES, dead_letter=options.dead_letter,
                   dead_letter_read=options.dead_letter)


def client_for(section: RedisSection) -> Redis | RedisCluster:
    """The redis-py client of ``section`` (not connected yet; TLS files read here)."""
    kwargs: dict[str, Any] = {"socket_connect_timeout": section.dial_timeout,
                              "health_check_interval": 10}
    if section.username:
        kwargs["username"] = section.username
    if section.password:
        kwargs["password"] = section.password.get_secret_value()
    if section.uses_tls:
        kwargs["ssl"] = True
        if section.tls is not None:
            context = client_ssl_context(section.tls)
            kwargs.update(ssl_ca_certs=section.tls.root_ca or None,
                          ssl_certfile=section.tls.cert or None,
                          ssl_keyfile=section.tls.key or None,
                          ssl_min_version=context.minimum_version)
    nodes = [urlsplit(n) for n in section.nodes()]
    first = nodes[0]
    if first.username and "username" not in kwargs:
        kwargs["username"] = first.username
    if first.password and "password" not in kwargs:
        kwargs["password"] = first.password
    if section.cluster:
        return RedisCluster(startup_nodes=[ClusterNode(n.hostname or "127.0.0.1",
                                                       n.port or 6379) for n in nodes],
                            **kwargs)
    return Redis(host=first.hostname or "127.0.0.1", port=first.port or 6379, db=section.db,
                 **kwargs)


def consumer_name() -> str:
    """A consumer name unique to this driver: host, process id and a random part."""
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


class RedisDriver(LeasingDriver):
    """One pipeline on the streams of one queue.

    Every method runs on the event loop and never blocks it. ``push`` returns once
    Redis added the entry (see the docs' *Durability*). A job's ``handle`` is
    ``(stream, entry id)``.
    """

    name: ClassVar[str] = "redis"
    capabilities = BASE_CAPABILITIES
    lease_lost = "its visibility timeout ran out; Redis delivers it again"

    def __init__(self, pipeline: Pipeline, queue: PriorityQueue, options: RedisOptions,
                 section: RedisSection | None = None) -> None:
        super().__init__(pipeline, queue, options.prefetch)
        self.options = options
        self.section = section or RedisSection()
        self.capabilities = capabilities_for(options)
        self.queue_key = options.queue or self.pipeline_name
        self.prefix, self.delayed_key = keys_of(self.queue_key)
        self.streams = stream_keys(self.queue_key, options.priority_bands)
        self.dead_key = f"{self.prefix}dead"
        self.group = options.group
        self.consumer = options.consumer or consumer_name()
        self.forwarded_from = f"sorted set {self.delayed_key!r}"
        self.max_lease = max(1, int(options.visibility_timeout))  # type: ignore[misc]
        self._lease_ms = whole_millis(options.visibility_timeout)
        self.pause_wait = options.block + 1.0  # a blocking read in flight finishes
        self._client: Redis | RedisCluster | None = None
        self._claim_from = {key.encode(): b"0-0" for key in self.streams}
        self._next_claim = 0.0
        self._claim_every = min(5.0, max(0.05, options.visibility_timeout / 4))
        self._acks = self.settlement_batcher(self._ack_batch, "an ack", ACK_BATCH,
                                             ACK_CONCURRENCY)
        self._scripts: dict[str, Any] = {}

    # -- opening -----------------------------------------------------------------------------

    @property
    def client(self) -> Redis | RedisCluster:
        if self._client is None:
            raise RedisError(f"pipeline {self.pipeline_name!r} is not connected")
        return self._client

    async def open(self, where: str = "") -> None:
        """Connect, load the scripts and create the consumer group on each stream."""
        try:
            self._client = await asyncio.to_thread(client_for, self.section)
            client = self._client
            for name, lua in (("move", MOVE_DUE), ("copy", COPY), ("touch", TOUCH),
                              ("touch_many", TOUCH_MANY), ("forget", FORGET)):
                self._scripts[name] = client.register_script(lua)  # type: ignore[misc]
            await self._create_groups()
        except Exception as exc:  # an error may quote the URL, which may hold a password
            redact_error(exc)
            if isinstance(exc, rexc.RedisError):
                raise RedisError(f"redis: {self.section.shown()}: {exc}") from None
            raise
        if self.capabilities.dead_letter_read:
            self.dead_letters = DeadLetterStream(client, self.dead_key, self.pipeline_name,
                                                 self.priority)

    async def _create_groups(self) -> None:
        """``XGROUP CREATE ... 0 MKSTREAM`` (entries added before the group are read too)."""
        for key in self.streams:
            try:
                await self.client.xgroup_create(key, self.group, id="0", mkstream=True)
            except rexc.ResponseError as exc:
                if "BUSYGROUP" not in str(exc):
                    raise

    # -- pushing ------------------------------------------------------------------------------

    def stream_for(self, priority: int) -> str:
        """The stream of a job of ``priority``: the first band at least its priority."""
        bands = self.options.priority_bands
        for n, band in enumerate(bands):
            if priority <= band:
                return self.streams[n]
        return self.streams[-1]

    def _fields(self, job: Message | Job, headers: Headers) -> dict[bytes, bytes]:
        return codec.encode(job.id, job.name, bytes(job.payload), headers, job.priority,
                            job.auto_ack)

    async def _send(self, msg: Message) -> None:
        if msg.delay > 0:
            await self._copy(None, msg, msg.headers, whole_millis(msg.delay))
            return
        try:
            await self.client.xadd(self.stream_for(msg.priority),
                                   self._fields(msg, msg.headers))  # type: ignore[arg-type]
        except rexc.RedisError as exc:
            raise RedisError(f"redis: XADD: {exc}") from exc

    async def _send_batch(self, msgs: Sequence[Message]) -> None:
        """The undelayed messages in one pipeline (one round trip), the delayed ones
        each by the copy script, together."""
        now = [m for m in msgs if m.delay <= 0]
        later: list[Awaitable[Any]] = [self._copy(None, m, m.headers, whole_millis(m.delay))
                                       for m in msgs if m.delay > 0]
        if now:
            later.append(self._xadd_all(now))
        await send_all(later)

    async def _xadd_all(self, msgs: Sequence[Message]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for m in msgs:
            pipe.xadd(self.stream_for(m.priority), self._fields(m, m.headers))  # type: ignore[arg-type]
        try:
            await pipe.execute()
        except rexc.RedisError as exc:
            raise RedisError(f"redis: XADD: {exc}") from exc

    async def _copy(self, job: Job | None, msg: Message | Job, headers: Headers,
                    delay_ms: int, target: str = "") -> bool:
        """The copy script: ``msg`` with ``headers`` to ``target`` (default: its stream),
        or delayed by ``delay_ms`` into the delayed set; ``job``'s entry is acked and
        deleted in the same script. False: ``job`` was no longer pending."""
        fields = self._fields(msg, headers)
        stream, entry = job.handle if job is not None else (b"", b"")
        if delay_ms > 0:
            uid = f"{msg.id}:{uuid.uuid4().hex}"
            keys = [stream or self.streams[0], self.delayed_key, f"{self.prefix}delayed:{uid}"]
            fields[TARGET] = (target or self.stream_for(msg.priority)).encode()
            args: list[Any] = [self.group, entry, delay_ms, uid]
        else:
            keys = [stream or self.streams[0], target or self.stream_for(msg.priority)]
            args = [self.group, entry, "", ""]
        for key, value in fields.items():
            args += [key, value]
        try:
            return bool(await self._scripts["copy"](keys=keys, args=args))
        except rexc.RedisError as exc:
            raise RedisError(f"redis: copying job {msg.id}: {exc}") from exc

    # -- delays ---------------------------------------------------------------------------------

    async def _serve(self) -> None:  # every server moves due jobs (the script is atomic)
        self.supervisor.start("delays", self._move_loop)

    async def _move_loop(self) -> None:
        while True:
            try:
                moved = await self._scripts["move"](keys=[self.delayed_key],
                                                    args=[MOVE_LIMIT, f"{self.prefix}delayed:"])
            except (rexc.ConnectionError, rexc.TimeoutError):
                moved = 0  # the fetch loop reports the outage; retried
                await asyncio.sleep(1.0)
            if moved < MOVE_LIMIT:
                await asyncio.sleep(self.options.delay_poll)

    # -- consuming (the PullDriver template) ---------------------------------------------------

    async def fetch(self, max_messages: int) -> Sequence[Raw]:
        """Entries whose lease ran out (``XAUTOCLAIM``, every quarter lease at most every
        5 s), else new entries (``XREADGROUP``, blocking up to ``block``)."""
        loop = asyncio.get_running_loop()
        if loop.time() >= self._next_claim:
            self._next_claim = loop.time() + self._claim_every
            self._received_at = loop.time()
            claimed = await self._claim(max_messages)
            if claimed:
                return claimed
        count = max(1, max_messages // len(self.streams))
        with self.in_flight:
            self._received_at = loop.time()
            reply = await self.client.xreadgroup(
                self.group, self.consumer, dict.fromkeys(self.streams, ">"),
                count=count, block=whole_millis(self.options.block))
        return self._entries(reply)

    def _entries(self, reply: Any) -> list[Raw]:
        """The entries of an ``XREADGROUP`` reply (``[[stream, [(id, fields)]]]``), bands
        in order."""
        by_stream = {bytes(stream): got for stream, got in reply or []}
        out: list[Raw] = []
        for key in self._claim_from:
            out.extend((key, entry, fields) for entry, fields in by_stream.get(key, ()) if fields)
        return out

    async def _claim(self, max_messages: int) -> list[Raw]:
        out: list[Raw] = []
        for key, start in self._claim_from.items():
            reply = await self.client.xautoclaim(key, self.group, self.consumer,
                                                 self._lease_ms, start, count=max_messages)
            nxt, entries = reply[0], reply[1]
            self._claim_from[key] = nxt if isinstance(nxt, bytes) else str(nxt).encode()
            out.extend((key, entry, fields) for entry, fields in entries if fields)
        return out

    async def fetch_failed(self, exc: Exception) -> bool:
        """Re-create the groups a restarted Redis lost (``NOGROUP``)."""
        if "NOGROUP" in str(exc):
            try:
                await self._create_groups()
                self.log.warning("pipeline %r: consumer group %r re-created",
                                 self.pipeline_name, self.group)
            except rexc.RedisError:
                pass
        return True

    def decode(self, raw: Raw) -> Job:
        stream, entry, fields = raw
        f, payload = codec.decode(fields, self.priority)
        self.leases.hold((stream, entry), self._received_at + self.options.visibility_timeout)
        return Job.make(self, (stream, entry), f.id, f.name, payload, f.headers,
                        self.pipeline_name, f.priority, f.auto_ack,
                        self.options.visibility_timeout)

    def poison(self, raw: Raw, reason: str) -> Job:
        stream, entry, fields = raw
        handle = (stream, entry)
        self.leases.hold(handle, self._received_at + self.options.visibility_timeout)
        return self.poison_job(handle, fields.get(codec.PAYLOAD, b""), reason,
                               lease=self.options.visibility_timeout)

    _received_at = 0.0

    # -- settling (the Settler protocol) ---------------------------------------------------

    def queue_name(self, job: Job) -> str:
        return self.queue_key

    def _let_go(self, job: Job) -> None:
        """``job`` is settled (or refused): its lease and its prefetch slot are free."""
        self.leases.let_go(job.handle)
        self.settled(job)

    async def ack(self, job: Job) -> None:
        """Returns once the ack (``XACK`` and ``XDEL``) is queued; sent batched in the
        background. ``stop`` waits for every queued ack."""
        try:
            self.check_held(job)
        finally:
            self._let_go(job)
        self._acks.post(job.handle)

    async def requeue(self, job: Job, headers: Headers, delay: float) -> None:
        """A copy (``headers``, ``delay``) and the original's ack, in one script."""
        await self._settle_copy(job, headers, whole_millis(delay))

    async def dead_letter(self, job: Job) -> None:
        """To the dead-letter stream (``dead_letter: true``), else acked and dropped."""
        if self.options.dead_letter:
            await self._settle_copy(job, job.headers, 0, self.dead_key)
            return
        try:
            self.check_held(job)
        finally:
            self._let_go(job)
        self.dropped(job, "dead_letter")
        await self._acks.submit(job.handle)

    async def _settle_copy(self, job: Job, headers: Headers, delay_ms: int,
                           target: str = "") -> None:
        try:
            self.check_held(job)
            copied = await self._copy(job, job, headers, delay_ms, target)
        finally:
            self._let_go(job)
        if not copied:
            raise AckLostError(f"redis: job {job.id}: no longer pending (acked or deleted "
                               "meanwhile)")

    async def change_lease(self, job: Job, seconds: int) -> None:
        """Touch the entry: its idle time becomes the lease less ``seconds``."""
        idle = max(0, self._lease_ms - seconds * 1000)
        if not await self._touch(job.handle, idle):
            self.leases.let_go(job.handle)
            raise AckLostError(f"redis: job {job.id}: claimed by another consumer")

    async def _touch(self, handle: Handle, idle_ms: int) -> bool:
        stream, entry = handle
        return bool(await self._scripts["touch"](keys=[stream],
                                                 args=[self.group, self.consumer, entry,
                                                       idle_ms]))

    def queued_lease(self) -> float:
        """``visibility_timeout``: the kit renews it for the jobs no handler has taken yet
        every third of it (:meth:`renew_queued`)."""
        return self.options.visibility_timeout

    async def renew_queued(self, jobs: Sequence[Job], seconds: float
                           ) -> list[BaseException | None]:
        """One ``TOUCH_MANY`` script per stream for the jobs still held: their entries'
        idle time becomes the lease less ``seconds``; an entry another consumer claimed
        is let go."""
        start = asyncio.get_running_loop().time()
        lease = min(seconds, self.options.visibility_timeout)
        idle = max(0, self._lease_ms - whole_millis(lease))
        out: list[BaseException | None] = [None] * len(jobs)
        by_stream: dict[bytes, list[int]] = {}
        for n, job in enumerate(jobs):
            if self.leases.holds(job.handle):
                by_stream.setdefault(job.handle[0], []).append(n)
            else:
                out[n] = AckLostError(f"redis: job {job.id}: {self.lease_lost}")
        for stream, idx in by_stream.items():
            try:
                touched = await self._touch_many(stream, [jobs[n].handle[1] for n in idx], idle)
            except rexc.RedisError as exc:
                for n in idx:
                    out[n] = RedisError(f"redis: renewing leases: {exc}")
                continue
            for n, ok in zip(idx, touched, strict=True):
                if ok:
                    self.leases.extended(jobs[n].handle, start + lease)
                else:
                    self.leases.let_go(jobs[n].handle)
                    out[n] = AckLostError(f"redis: job {jobs[n].id}: claimed by another "
                                          "consumer")
        return out

    async def _touch_many(self, stream: bytes, entries: Sequence[bytes], idle_ms: int
                          ) -> list[bool]:
        """``TOUCH_MANY``: whether each entry was still this consumer's (and is touched)."""
        touched = await self._scripts["touch_many"](
            keys=[stream], args=[self.group, self.consumer, idle_ms, *entries])
        return [bool(t) for t in touched]

    async def _give_back(self, handles: Sequence[Handle]) -> None:
        """Make the entries of ``handles`` claimable at once: one script per stream."""
        by_stream: dict[bytes, list[bytes]] = {}
        for stream, entry in handles:
            by_stream.setdefault(stream, []).append(entry)
        for stream, entries in by_stream.items():
            await self._touch_many(stream, entries, self._lease_ms + 1)

    async def _ack_batch(self, handles: Sequence[Handle]) -> list[BaseException | None]:
        by_stream: dict[bytes, list[bytes]] = {}
        for stream, entry in handles:
            by_stream.setdefault(stream, []).append(entry)
        pipe = self.client.pipeline(transaction=False)
        for stream, entries in by_stream.items():
            pipe.xack(stream, self.group, *entries)
            pipe.xdel(stream, *entries)
        await pipe.execute()
        return [None] * len(handles)

    # -- state and closing ----------------------------------------------------------------------

    async def state(self) -> State:
        """``XLEN`` and the group's pending count of each stream, the delayed set's size."""
        state = self.state_of(self.queue_key)
        if self.stopped or self._client is None:
            return state
        pipe = self.client.pipeline(transaction=False)
        for key in self.streams:
            pipe.xlen(key)
            pipe.xpending(key, self.group)
        pipe.zcard(self.delayed_key)
        try:
            replies = await pipe.execute()
        except rexc.RedisError as exc:
            raise RedisError(f"redis: state of {self.queue_key!r}: {exc}") from exc
        length = sum(int(r) for r in replies[0:-1:2])
        pending = sum(int(r.get("pending", 0)) for r in replies[1:-1:2])
        waiting = self.lane.queued + len(self.held)
        state.active = max(0, length - pending) + waiting
        state.reserved = max(0, pending - waiting)
        state.delayed = int(replies[-1])
        return state

    async def _close(self) -> None:
        """Make held jobs claimable at once, send every queued ack, drop the consumer
        if it holds nothing, close the client."""
        client = self._client
        if client is not None:
            try:
                held, self.held = self.held, []
                for job in held:
                    self.leases.let_go(job.handle)
                if held:
                    await self.bounded(self._give_back([job.handle for job in held]),
                                       "giving the jobs held back")
                await self.bounded(self._acks.drain(), "sending the acks")
                await self.bounded(self._scripts["forget"](keys=self.streams,
                                                           args=[self.group, self.consumer]),
                                   "removing the consumer")
            finally:
                self._client = None
                await client.aclose()


class RedisConstructor(DriverConstructor):
    """Builds ``redis`` drivers (the ``redis`` entry point); the ``redis:`` section is
    optional (default ``redis://127.0.0.1:6379``)."""

    driver_class = RedisDriver
    options_model = RedisOptions
    section_model = RedisSection
