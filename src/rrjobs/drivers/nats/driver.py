"""The ``nats`` driver on the driver kit: a durable JetStream pull consumer fetched by the
:class:`~rrjobs.core.pull.PullDriver` loop, delays through a delay stream and its forwarder
(capabilities and behaviour: ``docs/drivers/nats.md``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from typing import Any, ClassVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StreamConfig

from rrjobs.core.base import describe_error
from rrjobs.core.batcher import Batcher, send_all
from rrjobs.core.capabilities import Capabilities
from rrjobs.core.constructor import DriverConstructor
from rrjobs.core.errors import AckLostError, ConfigError, PipelineStateError, RRJobsError
from rrjobs.core.headers import Headers
from rrjobs.core.job import Job
from rrjobs.core.message import Message
from rrjobs.core.outage import Outage
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.pull import PullDriver
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.secrets import scrub
from rrjobs.core.state import State
from rrjobs.core.tls import client_ssl_context
from rrjobs.drivers.nats import codec
from rrjobs.drivers.nats.config import (
    DEFAULT_DECLARE_PREFETCH,
    NATSOptions,
    NATSSection,
    subject_matches,
)
from rrjobs.drivers.nats.deadletters import DeadLetterSubject

CONNECT_TIMEOUT = 10.0  #: how long building a driver waits for the server
FETCH_TIMEOUT = 0.5  #: how long one fetch waits for the first message
EXPIRY_MARGIN = 0.05  #: extra wait for what an expiring pull request still delivers
CHECK_INTERVAL = 5.0  #: how often an idle fetch loop checks that its consumers exist
CHECK_TIMEOUT = 2.0  #: how long that check (and ``state``) waits for the server
RECONNECT_BUFFER = 20 * 1024 * 1024  #: nats-py's reconnect buffer (RoadRunner's)
HEADER_RESERVE = 8192  #: message bytes kept for the headers and the JSON around the payload
PUBLISH_WINDOW = 1024  #: publishes of one ``push_batch`` in flight at once
DELETE_BATCH, DELETES_IN_FLIGHT = 256, 4  #: ``delete_after_ack``'s deletions per batch, batches
FORWARD_BATCH, FORWARD_TIMEOUT = 256, 2.0  #: what one fetch of the forwarder asks, waits for
FORWARDER_ACK_WAIT = 30.0  #: a forwarder that died releases its messages after this

#: What a signal (``+ACK``, ``-NAK``, ``+TERM``, ``+WPI``) raises when it cannot be sent.
_LOST = (nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError,
         nats.errors.ConnectionDrainingError)


def _cannot_heal(exc: Exception) -> bool:
    """A refusal that retrying cannot change: the server's certificate does not verify,
    or the server refuses the login (nats-py reports it as a plain ``Error``)."""
    return isinstance(exc, ssl.SSLCertVerificationError | nats.errors.AuthorizationError) or (
        isinstance(exc, nats.errors.Error) and "authorization violation" in str(exc).lower())


class _Client(Client):
    """nats-py's client keeping every line of a repeated header key (RoadRunner writes one line
    per value; nats-py keeps the last)."""

    async def _process_headers(self, headers: Any) -> dict[str, str] | None:
        hdr = await super()._process_headers(headers)
        if hdr and "Status" not in hdr and bytes(headers).count(b"\r\n") - 2 > len(hdr):
            return codec.header_lines(bytes(headers))
        return hdr

    @classmethod
    async def open(cls, **options: Any) -> Client:
        nc = cls()
        await nc.connect(**options)
        return nc


class NATSUnavailableError(RRJobsError):
    """The NATS server could not be reached or has no JetStream."""


#: Every pipeline's (``reserved``: the durable consumer's count of every process's jobs).
BASE_CAPABILITIES = Capabilities(durable=True, lease_extension=True, redelivery_on_crash=True,
                                 delay_granularity=0.001, shared_queue=True)


def capabilities_for(options: NATSOptions, server_max: int | None = None) -> Capabilities:
    """What a pipeline with ``options`` can do; once connected, ``max_payload`` fits a message
    of ``server_max`` bytes (base64 in the JSON body, ``HEADER_RESERVE`` for the rest)."""
    max_payload = None if server_max is None else max(0, (server_max - HEADER_RESERVE) * 3 // 4)
    dead_letter = bool(options.dead_letter_subject)
    return replace(BASE_CAPABILITIES, max_payload=max_payload, dead_letter=dead_letter,
                   dead_letter_read=dead_letter)


class NATSDriver(PullDriver):
    """One pipeline on a JetStream stream, settling its jobs (``handle``: the nats-py message)
    as the table in ``docs/drivers/nats.md`` says. Event-loop only, never blocking; ``push``
    returns once JetStream stored the message (its PubAck); pushes may run concurrently."""

    name: ClassVar[str] = "nats"
    capabilities = BASE_CAPABILITIES
    pause_wait = FETCH_TIMEOUT + 1.0  # the fetch in flight finishes

    def __init__(self, pipeline: Pipeline, queue: PriorityQueue, options: NATSOptions,
                 section: NATSSection | None = None) -> None:
        super().__init__(pipeline, queue, options.prefetch)
        self.priority = options.priority
        self.section = section or NATSSection()
        self.options = options
        self.capabilities = capabilities_for(options)
        self.subject, self.stream, self.consumer = (options.subject, options.stream,
                                                    options.consumer_name())
        self.delay_stream, self.delay_subject = (options.delay_stream_name(),
                                                 options.delay_subject())
        self.forwarded_from = f"delay stream {self.delay_stream!r}"
        self.nc: Client | None = None
        self.js: Any = None
        self._sub: Any = None
        self._fetch_started = self._next_fetch = 0.0
        self._checked = time.monotonic()
        self._closing = False
        self._last_error: Exception | None = None
        #: while ``open`` connects: set by the first refusal that cannot heal
        self._refused: asyncio.Future[Exception] | None = None
        self._where = ""  #: the options' key path (``jobs.pipelines.<name>.config``)
        # nats-py redials by itself (reconnect_time_wait=1, for ever); the fetch loop's limit
        self.outage.retry = (f"reconnecting every 1 s, the pipeline is restarted after "
                             f"{self.restart_after:g} s of failures")
        self._deletes: Batcher[int, None] | None = (
            Batcher(self._delete_msgs, DELETE_BATCH, DELETES_IN_FLIGHT, self._delete_failed)
            if options.delete_after_ack else None)

    # -- opening ----------------------------------------------------------------------------

    async def open(self, where: str = "") -> None:
        """Connect (TLS files read in a thread) and declare the streams and consumers:
        :class:`NATSUnavailableError` when the server does not answer or refuses,
        :class:`ConfigError` at ``<where>.deliver_new`` for a contradicting consumer."""
        self._where = where
        tls_config = self.section.tls
        tls = await asyncio.to_thread(client_ssl_context, tls_config) if tls_config else None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                self.nc = await self._connect(tls)
                self.js = self.nc.jetstream()
                if self.options.dead_letter_subject:  # ``rrjobs dlq``'s reader
                    self.dead_letters = DeadLetterSubject(
                        self.js, self.options.dead_letter_subject, self.pipeline_name,
                        self.priority)
                self.capabilities = capabilities_for(self.options, self.nc.max_payload)
                await self._declare()
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            await self._close_connection()
            last = self._last_error
            shown = last is not None and last is not exc
            cause = f" (last error: {type(last).__name__}: {last})" if shown else ""
            raise NATSUnavailableError(scrub(  # nats-py may name the server with its userinfo
                f"nats: {self.section.shown()}: {type(exc).__name__}: {exc}{cause}")) from None

    async def _connect(self, tls: ssl.SSLContext | None) -> Client:
        """nats-py's connect, which retries every failure until the timeout; a server
        certificate that does not verify or a refused login ends it at once."""
        self._refused = refused = asyncio.get_running_loop().create_future()
        connecting = asyncio.ensure_future(_Client.open(
            servers=self.section.servers(), name=f"rrjobs-{self.pipeline_name}",
            no_echo=True, tls=tls, connect_timeout=CONNECT_TIMEOUT,
            user_credentials=self.section.credentials or None,
            max_reconnect_attempts=-1, reconnect_time_wait=1, ping_interval=10,
            pending_size=RECONNECT_BUFFER, error_cb=self._on_error,
            disconnected_cb=self._on_disconnect, reconnected_cb=self._on_reconnect))
        try:
            await asyncio.wait((connecting, refused), return_when=asyncio.FIRST_COMPLETED)
        finally:
            self._refused = None
            if not connecting.done():
                connecting.cancel()
                with contextlib.suppress(BaseException):
                    await connecting
        if connecting.done() and not connecting.cancelled():
            return connecting.result()
        raise refused.result()

    async def _declare(self) -> None:
        """The stream, the delay stream, the dead-letter stream when needed, the consumers."""
        js, o = self.js, self.options
        await self._ensure_stream(self.stream, self.subject, RetentionPolicy.LIMITS)
        await self._ensure_stream(self.delay_stream, o.delay_subjects(), RetentionPolicy.WORK_QUEUE)
        if o.dead_letter_subject:
            try:
                await js.find_stream_name_by_subject(o.dead_letter_subject)
            except nats.js.errors.NotFoundError:
                await js.add_stream(StreamConfig(name=f"{self.stream}-dlq",
                                                 subjects=[o.dead_letter_subject]))
        config = ConsumerConfig(
            durable_name=self.consumer, name=self.consumer, ack_policy=AckPolicy.EXPLICIT,
            ack_wait=o.ack_wait, max_ack_pending=-1, filter_subject=self.subject,
            deliver_policy=DeliverPolicy.NEW if o.deliver_new else DeliverPolicy.ALL,
            max_deliver=-1)
        await self._ensure_consumer(self.stream, config,
                                    explicit="deliver_new" in o.model_fields_set)
        await self._ensure_consumer(self.delay_stream, ConsumerConfig(  # no max_ack_pending
            durable_name=self.consumer, name=self.consumer, ack_policy=AckPolicy.EXPLICIT,
            ack_wait=FORWARDER_ACK_WAIT, max_ack_pending=-1, filter_subject=self.delay_subject,
            deliver_policy=DeliverPolicy.ALL, max_deliver=-1))

    async def _ensure_stream(self, name: str, subject: str, retention: RetentionPolicy) -> None:
        """Create stream ``name``, or add ``subject`` when none of its subjects covers it."""
        try:
            info = await self.js.stream_info(name)
        except nats.js.errors.NotFoundError:
            await self.js.add_stream(StreamConfig(name=name, subjects=[subject],
                                                  retention=retention))
            return
        subjects = list(info.config.subjects or [])
        if not any(subject_matches(p, subject) for p in subjects):
            info.config.subjects = [*subjects, subject]
            await self.js.update_stream(info.config)

    async def _ensure_consumer(self, stream: str, config: ConsumerConfig,
                               explicit: bool = False) -> None:
        """Create or update the durable consumer. Its deliver policy cannot change: an
        ``explicit`` ``deliver_new`` contradicting it is a ConfigError, else it stays (logged);
        any other refusal is raised."""
        try:
            await self.js.add_consumer(stream, config=config)
        except nats.js.errors.APIError as exc:
            try:
                info = await self.js.consumer_info(stream, config.durable_name)
            except nats.js.errors.NotFoundError:
                raise exc from None
            if info.config.deliver_policy == config.deliver_policy:
                raise
            policy = getattr(info.config.deliver_policy, "value", info.config.deliver_policy)
            if explicit:
                path = f"{self._where}.deliver_new" if self._where else "deliver_new"
                raise ConfigError(path, f"the existing JetStream consumer "
                                  f"{config.durable_name!r} of stream {stream!r} has deliver "
                                  f"policy {policy!r}, which JetStream cannot change (delete "
                                  "the consumer or leave deliver_new unset)") from None
            self.log.warning("pipeline %r: consumer %r keeps its deliver policy %s (deliver_new "
                             "applies when the consumer is created)", self.pipeline_name,
                             config.durable_name, policy)
            config.deliver_policy = info.config.deliver_policy
            await self.js.add_consumer(stream, config=config)

    # -- connection events ---------------------------------------------------------------------

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        refused = self._refused
        if refused is not None and not refused.done() and _cannot_heal(exc):
            refused.set_result(exc)
        self.log.debug("pipeline %r: nats: %s: %s", self.pipeline_name, type(exc).__name__,
                       scrub(str(exc)))

    async def _on_disconnect(self) -> None:
        if not self._closing:
            self.connected = False
            self.outage.down(self._last_error or ConnectionError("disconnected"),
                             call="the connection to nats")

    async def _on_reconnect(self) -> None:
        self.connected = True
        self._checked = 0.0  # the server may have lost the stream: check at the next idle fetch
        self.outage.ok()

    def _unavailable(self) -> NATSUnavailableError:
        return NATSUnavailableError(f"nats: {self.section.shown()}: not connected")

    def _connected(self) -> bool:
        return self.nc is not None and self.nc.is_connected

    # -- pushing ----------------------------------------------------------------------------

    def _encode(self, m: Message | Job, headers: Headers,
                delay: float) -> tuple[str, bytes, dict[str, str]]:
        """The subject, or the delay stream with ``rr_due``, and what to publish there."""
        body = codec.encode_body(m.id, m.name, m.payload, m.priority, self.pipeline_name,
                                 m.auto_ack)
        if delay > 0:
            return self.delay_subject, body, codec.encode_headers(headers, codec.due_header(delay))
        return self.subject, body, codec.encode_headers(headers)

    async def _publish(self, subject: str, body: bytes, headers: dict[str, str],
                       copy_of: Job | None = None) -> None:
        """Publish; if JetStream refuses a copy of a job, ``-NAK`` the original and raise."""
        if self.js is None:
            raise PipelineStateError(f"pipeline {self.pipeline_name!r} is not connected")
        send = self.js.publish(subject, body, headers=headers or None)
        await (send if copy_of is None else self.copy_or_give_back(
            send, lambda: self._quietly(copy_of.handle.nak())))

    async def _send(self, msg: Message) -> None:
        await self._publish(*self._encode(msg, msg.headers, msg.delay))

    async def _send_batch(self, msgs: Sequence[Message]) -> None:
        """Publish up to ``PUBLISH_WINDOW`` messages at once, then wait for their PubAcks;
        the first failure is raised."""
        encoded = [self._encode(m, m.headers, m.delay) for m in msgs]
        for start in range(0, len(encoded), PUBLISH_WINDOW):
            await send_all(self._publish(*e) for e in encoded[start:start + PUBLISH_WINDOW])

    # -- consuming (the PullDriver template calls these) -----------------------------------------

    async def _start_consuming(self) -> None:
        if self.js is None:
            raise PipelineStateError(f"pipeline {self.pipeline_name!r} is not connected")
        self._sub = await self.js.pull_subscribe_bind(durable=self.consumer, stream=self.stream)
        await super()._start_consuming()

    async def _serve(self) -> None:  # every server forwards, sharing the durable consumer
        if self.js is None:
            raise PipelineStateError(f"pipeline {self.pipeline_name!r} is not connected")
        self.supervisor.start("delays", self._forward_loop)

    async def fetch(self, max_messages: int) -> Sequence[Any]:
        """Up to ``max_messages`` (at most ``rate_limit`` a second; none after ``FETCH_TIMEOUT``);
        raises while disconnected, and when an idle check finds a consumer gone."""
        sub, rate = self._sub, self.options.rate_limit
        if sub is None or not self._connected():
            raise self._unavailable()
        if rate is not None:
            await asyncio.sleep(max(0.0, self._next_fetch - time.monotonic()))
            max_messages = min(max_messages, rate)
        msgs: list[Any] = []
        with self.in_flight, contextlib.suppress(TimeoutError):
            self._fetch_started = time.monotonic()
            msgs = await sub.fetch(max_messages, timeout=FETCH_TIMEOUT)
        if not msgs:
            if not self._connected():
                raise self._unavailable()
            if time.monotonic() - self._checked > CHECK_INTERVAL:
                # a deleted consumer answers nothing at all: its info raises NotFoundError
                self._checked = time.monotonic()
                for stream in (self.stream, self.delay_stream):
                    await self.js.consumer_info(stream, self.consumer, timeout=CHECK_TIMEOUT)
        elif rate is not None:
            self._next_fetch = time.monotonic() + len(msgs) / rate
        return msgs

    async def fetch_failed(self, exc: Exception) -> bool:
        """A stream or consumer is gone (a server that lost its storage): declare them again."""
        if isinstance(exc, nats.js.errors.NotFoundError):
            self.log.warning("pipeline %r: %s; declaring the streams and consumers again",
                             self.pipeline_name, exc)
            try:
                await self._declare()
            except Exception as again:
                self.log.warning("pipeline %r: declaring failed: %s", self.pipeline_name,
                                 describe_error(again))
        return True

    def queued_lease(self) -> float:
        """``ack_wait``: the kit sends ``+WPI`` for the jobs no handler has taken yet
        every third of it (through :meth:`extend`)."""
        return self.options.ack_wait

    def decode(self, raw: Any) -> Job:
        return codec.decode(self, raw, self.pipeline_name, self.priority, self.options.ack_wait)

    def poison(self, raw: Any, reason: str) -> Job:
        return self.poison_job(raw, raw.data or b"", reason, lease=self.options.ack_wait)

    async def _forward_loop(self) -> None:
        """The supervised task ``delays``: move due jobs from the delay stream to the
        subject, with backoff; ask for a restart when it keeps failing."""
        outage = Outage("forwarding delayed jobs", self.supervisor.owner, self.log,
                        self.restart_after)
        sub = None
        try:
            while True:
                try:
                    sub = sub or await self.js.pull_subscribe_bind(durable=self.consumer,
                                                                   stream=self.delay_stream)
                    try:
                        msgs = await sub.fetch(FORWARD_BATCH, timeout=FORWARD_TIMEOUT)
                    except TimeoutError:
                        if not self._connected():
                            raise self._unavailable() from None
                        msgs = []
                    await self._forward(msgs)
                except Exception as exc:  # while disconnected the fetch loop tells
                    reason = await outage.failed(exc, warn=self.connected)
                    if reason is not None:
                        self.request_restart(reason)
                        return
                else:
                    outage.ok()
        finally:
            if sub is not None:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()

    async def _forward(self, msgs: list[Any]) -> None:
        """Publish the due ``msgs`` to the subject, then ack them; ``-NAK`` the others with the
        time they still have to wait. A refused copy stays unacked (``FORWARDER_ACK_WAIT``)."""
        now = time.time() * 1000
        due: list[Any] = []
        for msg in msgs:
            when = codec.due_ms(msg.headers)
            if when is not None and when > now:
                await msg.nak(delay=(when - now) / 1000)
            else:
                due.append(msg)

        async def move(msg: Any) -> None:
            headers = codec.HeaderLines([(k, v) for k, v in (msg.headers or {}).items()
                                         if k != codec.RR_DUE])
            await self.js.publish(self.subject, msg.data, headers=headers or None)
            await msg.ack()

        for result in await asyncio.gather(*map(move, due), return_exceptions=True):
            if isinstance(result, Exception):
                self.log.warning("delay stream: forwarding a due job to %r failed: %s",
                                 self.subject, result)

    async def _stop_consuming(self) -> None:
        """Let a fetch in flight finish, ``-NAK`` the queued jobs in order, wait until the
        last pull request expired (nats-py leaves it open at the server), ``-NAK`` what it
        delivered meanwhile, drop the subscription."""
        await super()._stop_consuming()
        sub, self._sub = self._sub, None
        if sub is None:
            return
        left = self._fetch_started + FETCH_TIMEOUT + EXPIRY_MARGIN - time.monotonic()
        if left > 0 and self._connected():
            await asyncio.sleep(left)
        inner = getattr(sub, "_sub", None)  # nats-py's Subscription behind the pull one
        while inner is not None:
            try:
                msg = await inner.next_msg(timeout=0.001)
            except Exception:
                break
            if msg.reply and msg.reply.startswith("$JS.ACK."):
                await self._quietly(msg.nak())
        with contextlib.suppress(Exception):
            await sub.unsubscribe()

    async def give_back(self, jobs: Sequence[Job]) -> None:
        """``-NAK`` jobs taken back at pause or stop (their slots are free already)."""
        for job in jobs:
            await self._quietly(job.handle.nak())

    async def _quietly(self, settle: Coroutine[Any, Any, Any]) -> None:
        try:
            await settle
        except Exception as exc:
            self.log.debug("pipeline %r: settle failed: %s", self.pipeline_name, exc)

    # -- settlement (the Settler protocol) -----------------------------------------------------

    def queue_name(self, job: Job) -> str:
        """The subject (``queue`` in RoadRunner's context JSON)."""
        return self.subject

    def _reachable(self, job: Job) -> bool:
        """Whether a settlement of ``job`` can be sent now: ``False`` while disconnected
        (one WARNING per outage; JetStream redelivers the job after ``ack_wait``)."""
        if self._connected():
            return True
        self.check_not_stopped(job)
        if self.nc is None or self.nc.is_closed:
            raise AckLostError(f"job {job.id}: the nats connection is closed; JetStream "
                               "redelivers it after ack_wait")
        self.outage.down(self._unavailable(), call=f"settling job {job.id}",
                         note="; JetStream delivers it again after ack_wait")
        return False

    async def _signal(self, job: Job, signal: Coroutine[Any, Any, Any],
                      final: bool = False) -> None:
        """Send a ``+ACK``/``-NAK``/``+TERM``/``+WPI`` (after a ``final`` one, delete the message
        in the background with ``delete_after_ack``); :class:`AckLostError` when it cannot."""
        try:
            await signal
        except _LOST as exc:
            raise AckLostError(f"job {job.id}: {exc}; JetStream redelivers it after "
                               "ack_wait") from None
        if final and self._deletes is not None:
            self._deletes.post(job.handle.metadata.sequence.stream)

    async def _delete_msgs(self, seqs: Sequence[int]) -> list[BaseException | None]:
        async def one(seq: int) -> None:
            with contextlib.suppress(nats.js.errors.NotFoundError):  # a redelivered copy
                await self.js.delete_msg(self.stream, seq)
        return await asyncio.gather(*map(one, seqs), return_exceptions=True)

    def _delete_failed(self, exc: BaseException) -> None:
        # harmless (the message is acknowledged) and expected around an outage: no WARNING
        quiet = (not self.connected or self.outage.failing
                 or isinstance(exc, (nats.errors.TimeoutError, *_LOST)))
        self.log.log(logging.DEBUG if quiet else logging.WARNING,
                     "pipeline %r: deleting an acknowledged message failed (it stays in the "
                     "stream, acknowledged): %s", self.pipeline_name, describe_error(exc))

    async def ack(self, job: Job) -> None:
        try:
            if self._reachable(job):
                await self._signal(job, job.handle.ack(), final=True)
        finally:
            self.settled(job)

    async def nack(self, job: Job, requeue: bool, delay: float) -> None:
        if requeue and delay > 0:
            await self.requeue(job, job.headers, delay)
            return
        try:
            if not self._reachable(job):
                return
            if requeue:
                await self._signal(job, job.handle.nak())
                return
            dead = self.options.dead_letter_subject
            if dead:
                _, body, nats_headers = self._encode(job, job.headers, 0)  # no x-nats-subject
                await self._publish(dead, body, nats_headers, copy_of=job)
            else:
                self.dropped(job, "dead_letter_subject")
            await self._signal(job, job.handle.term(), final=True)
        finally:
            self.settled(job)

    async def requeue(self, job: Job, headers: Headers, delay: float) -> None:
        try:
            if self._reachable(job):
                await self._publish(*self._encode(job, headers, delay), copy_of=job)
                await self._signal(job, job.handle.ack(), final=True)
        finally:
            self.settled(job)

    async def extend(self, job: Job, seconds: float) -> None:
        """``+WPI``: JetStream waits ``ack_wait`` again from now (``seconds`` beyond
        ``ack_wait`` cannot be had: the worker pool extends every ``lease / 2``)."""
        if self._reachable(job):
            await self._signal(job, job.handle.in_progress())

    # -- lifecycle --------------------------------------------------------------------------------

    async def _close(self) -> None:
        if self._deletes is not None and self._connected():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CHECK_TIMEOUT):
                    await self._deletes.drain()
        if self.options.delete_stream_on_stop and self.js is not None:
            for stream in (self.stream, self.delay_stream):
                try:
                    await self.js.delete_stream(stream)
                except Exception as exc:
                    self.log.warning("pipeline %r: deleting stream %r failed: %s",
                                     self.pipeline_name, stream, exc)
        await self._close_connection()

    async def _close_connection(self) -> None:
        nc, self.nc, self.js = self.nc, None, None
        self._closing = True
        if nc is not None and not nc.is_closed:
            try:
                await nc.drain()
            except Exception:
                with contextlib.suppress(Exception):
                    await nc.close()

    async def state(self) -> State:
        """``active``: not delivered, to be redelivered or queued; ``reserved``: held;
        ``delayed``: in the delay stream (only local counts while disconnected)."""
        queued = self.lane.queued
        active, delayed, reserved = queued, 0, 0
        if self.js is not None and not self.stopped and self._connected():
            try:
                info = await self.js.consumer_info(self.stream, self.consumer,
                                                   timeout=CHECK_TIMEOUT)
                redelivered = info.num_redelivered or 0
                active = info.num_pending + redelivered + queued
                reserved = max(0, (info.num_ack_pending or 0) - redelivered - queued)
                delayed = (await self.js.stream_info(self.delay_stream)).state.messages
            except (nats.errors.Error, TimeoutError) as exc:
                self.log.debug("pipeline %r: state: %s", self.pipeline_name, exc)
        return self.state_of(self.subject, active, delayed, reserved)


class NATSConstructor(DriverConstructor):
    """Builds ``nats`` drivers (the ``nats`` entry point)."""

    driver_class = NATSDriver
    options_model = NATSOptions
    section_model = NATSSection
    declare_defaults = {"prefetch": DEFAULT_DECLARE_PREFETCH}  # RoadRunner's ``Declare``
