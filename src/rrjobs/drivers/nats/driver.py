"""The ``nats`` driver: RoadRunner's NATS JetStream driver on nats-py, with job semantics that hold.

Capabilities:

* Delays: yes, durable, any length: a delay stream and a forwarder that
  ``-NAK``s each job with its remaining delay, so JetStream holds it until due
  (see :mod:`rrjobs.drivers.nats.delays`). RoadRunner refuses delays on NATS.
* Priority: in the runtime's priority queue, within the prefetch window
  (a JetStream stream is FIFO).
* Durable: yes (the stream's storage; RoadRunner's default, file storage).
* Max payload: (the server's ``max_payload`` - ``HEADER_RESERVE``) * 3/4: the
  JSON body carries the payload in base64.
* Dead-letter: with ``dead_letter_subject`` (when no stream holds that
  subject, the stream ``<stream>-dlq`` is created for it); otherwise
  ``nack()`` drops the job explicitly (logged) with ``+TERM``. JetStream has
  no dead-letter of its own.
* Lease extension: yes, ``+WPI`` (AckProgress) restarts ``ack_wait``; each
  job's ``lease`` is ``ack_wait``.
* Redelivery after a crash: yes, JetStream redelivers every unacked message
  after ``ack_wait``.
* Pause: yes: jobs in the priority queue are ``-NAK``-ed in order (JetStream
  hands them out again first on ``resume``), fetching stops and the pull
  subscription is dropped once its last pull request expired.

Consumer: one **durable pull consumer** per ``stream``/``subject`` (the
``consumer`` option), ``AckExplicit``, ``ack_wait``, ``max_ack_pending`` =
``prefetch``, filtered on ``subject``. Drivers with the same options share its
work; a restarted driver continues where it stopped. (RoadRunner creates a
fresh ephemeral consumer on every run, which redelivers everything still in a
stream with the default ``limits`` retention.) Fetches ask for as many
messages as ``prefetch`` leaves room for.

Reconnect: nats-py reconnects for ever (RoadRunner's settings); the pull
subscription is resubscribed by the client and the fetch loop asks again.
A deleted consumer only makes fetches time out, so an idle fetch loop checks
both consumers every ``CHECK_INTERVAL`` and after a reconnect; when they are
gone (a server that lost its storage) the driver declares them again. When
fetching, checking or forwarding keeps failing for ``RECOVERY_TIMEOUT`` it
asks the runtime to restart the pipeline (``command_handler(pipeline,
"restart")``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import Any, ClassVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, RetentionPolicy, StreamConfig

from rrjobs.core.base import BaseDriver
from rrjobs.core.capabilities import Capabilities
from rrjobs.core.errors import AckLostError, ConfigError, PipelineStateError, RRJobsError
from rrjobs.core.headers import RR_ORIGINAL_PIPELINE, Headers
from rrjobs.core.interfaces import Configurer, Constructor
from rrjobs.core.message import Message
from rrjobs.core.options import options_from_config, options_from_pipeline
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.state import State
from rrjobs.core.tls import client_ssl_context
from rrjobs.drivers.nats import codec
from rrjobs.drivers.nats.config import (
    DEFAULT_DECLARE_PREFETCH,
    NATSOptions,
    NATSSection,
    subject_matches,
)
from rrjobs.drivers.nats.delays import DelayForwarder, due_header, forwarder_config
from rrjobs.drivers.nats.job import NATSJob

log = logging.getLogger("rrjobs.drivers.nats")

#: How long building a driver waits for the server.
CONNECT_TIMEOUT = 10.0
#: How long one fetch waits for the first message.
FETCH_TIMEOUT = 0.5
#: Extra wait for the last messages of an expiring pull request to arrive.
EXPIRY_MARGIN = 0.05
#: How often an idle fetch loop checks that its consumer still exists.
CHECK_INTERVAL = 5.0
#: How long that check waits for the server.
CHECK_TIMEOUT = 2.0
#: How long fetching may keep failing before the pipeline is restarted.
RECOVERY_TIMEOUT = 60.0
#: Pause after a failed fetch.
RETRY_BACKOFF = 0.5
#: nats-py's reconnect buffer (RoadRunner's ``ReconnectBufSize``).
RECONNECT_BUFFER = 20 * 1024 * 1024
#: Message bytes kept free for the headers and the JSON around the payload.
HEADER_RESERVE = 8192
#: Publishes of one ``push_batch`` in flight at once.
PUBLISH_WINDOW = 1024


class NATSUnavailableError(RRJobsError):
    """The NATS server could not be reached or has no JetStream."""


def max_payload_for(server_max: int) -> int:
    """The largest job payload a message of ``server_max`` bytes carries: the JSON
    body holds it in base64 (4 bytes per 3), headers and the JSON around it take
    at most ``HEADER_RESERVE``."""
    return max(0, (server_max - HEADER_RESERVE) * 3 // 4)


def capabilities_for(options: NATSOptions, max_payload: int | None = None) -> Capabilities:
    """What a pipeline with ``options`` can do (``max_payload``: once connected)."""
    return Capabilities(
        delay=True,
        max_delay=None,
        delay_native=True,
        priority=True,
        durable=True,
        max_payload=max_payload,
        lease_extension=True,
        dead_letter=bool(options.dead_letter_subject),
        redelivery_on_crash=True,
        pause=True,
        headers=True,
    )


class NATSDriver(BaseDriver):
    """One pipeline on a JetStream stream.

    Every method runs on the event loop and never blocks it. ``push`` returns
    once JetStream stored the message (its PubAck). Safe to push concurrently.
    """

    name: ClassVar[str] = "nats"

    def __init__(self, pipeline: Pipeline, queue: PriorityQueue, section: NATSSection,
                 options: NATSOptions) -> None:
        pipeline.setdefault("priority", options.priority)
        super().__init__(pipeline, queue)
        self.priority = options.priority
        self.section = section
        self.options = options
        self.capabilities = capabilities_for(options)
        self.subject = options.subject
        self.stream = options.stream
        self.consumer = options.consumer_name()
        self.delay_stream = options.delay_stream_name()
        self.delay_subject = options.delay_subject()
        self.nc: Client | None = None
        self.js: Any = None
        self._sub: Any = None
        self._fetcher: asyncio.Task[None] | None = None
        self._forwarder: DelayForwarder | None = None
        self._outstanding: set[NATSJob] = set()
        self._room = asyncio.Event()
        self._next_fetch = 0.0
        #: When each part ("fetch", "forward") started failing, while it is.
        self._failing_since: dict[str, float] = {}
        self._halt = False
        self._checked = time.monotonic()
        self._fetch_started = 0.0
        self._closing = False
        self._last_error: Exception | None = None
        #: The options' key path (``jobs.pipelines.<name>.config``), for errors.
        self._where = ""

    # -- opening ----------------------------------------------------------------------------

    async def open(self, where: str = "") -> None:
        """Connect and declare the stream, the delay stream and both consumers.

        ``where`` is the options' key path, named by configuration errors. The TLS
        files are read in a worker thread. Raises :class:`NATSUnavailableError` when
        the server does not answer within ``CONNECT_TIMEOUT`` or refuses the
        declarations, :class:`~rrjobs.core.errors.ConfigError` when an explicit
        ``deliver_new`` contradicts the existing consumer.
        """
        self._where = where
        tls_config = self.section.tls
        tls = await asyncio.to_thread(client_ssl_context, tls_config) if tls_config else None
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                self.nc = await nats.connect(
                    servers=self.section.servers(), name=f"rrjobs-{self.pipeline_name}",
                    no_echo=True, tls=tls, connect_timeout=CONNECT_TIMEOUT,
                    max_reconnect_attempts=-1, reconnect_time_wait=1, ping_interval=10,
                    pending_size=RECONNECT_BUFFER, error_cb=self._on_error,
                    disconnected_cb=self._on_disconnect, reconnected_cb=self._on_reconnect)
                self.js = self.nc.jetstream()
                self.capabilities = capabilities_for(
                    self.options, max_payload_for(self.nc.max_payload))
                await self._declare()
        except (TimeoutError, OSError, nats.errors.Error) as exc:
            await self._close_connection()
            last = self._last_error
            cause = f" (last error: {type(last).__name__}: {last})" if last else ""
            raise NATSUnavailableError(
                f"nats: {self.section.addr}: {type(exc).__name__}: {exc}{cause}") from None
        except BaseException:
            await self._close_connection()
            raise

    async def _declare(self) -> None:
        """The stream (created, or ``subject`` added unless one of its subjects covers
        it), the delay stream, the dead-letter stream when needed, and the consumers."""
        js = self.js
        await self._ensure_stream(self.stream, self.subject, RetentionPolicy.LIMITS)
        await self._ensure_stream(self.delay_stream, self.options.delay_subjects(),
                                  RetentionPolicy.WORK_QUEUE)
        o = self.options
        dead = o.dead_letter_subject
        if dead:
            try:
                await js.find_stream_name_by_subject(dead)
            except nats.js.errors.NotFoundError:
                await js.add_stream(StreamConfig(name=f"{self.stream}-dlq", subjects=[dead]))
        config = ConsumerConfig(
            durable_name=self.consumer, name=self.consumer, ack_policy=AckPolicy.EXPLICIT,
            ack_wait=o.ack_wait, max_ack_pending=o.prefetch, filter_subject=self.subject,
            deliver_policy=DeliverPolicy.NEW if o.deliver_new else DeliverPolicy.ALL,
            max_deliver=-1)
        await self._ensure_consumer(self.stream, config, explicit="deliver_new" in
                                    o.model_fields_set)
        await self._ensure_consumer(self.delay_stream, forwarder_config(self.consumer,
                                                                  self.delay_subject))

    async def _ensure_stream(self, name: str, subject: str, retention: RetentionPolicy) -> None:
        """Create stream ``name`` for ``subject``, or add ``subject`` to it when none of
        its subjects covers it."""
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
        """Create the durable consumer, or update it (``ack_wait`` and ``prefetch`` can
        change). Its deliver policy cannot change: when ``deliver_new`` was set
        (``explicit``) and contradicts it, :class:`ConfigError` at ``<where>.deliver_new``;
        otherwise the consumer keeps its own (logged as a warning). Any other refusal (a
        consumer of that name on another subject) is raised."""
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
                                  f"policy {policy!r}, which JetStream "
                                  "cannot change (delete the consumer or leave deliver_new "
                                  "unset)") from None
            log.warning("pipeline %r: consumer %r keeps its deliver policy %s (deliver_new "
                        "applies when the consumer is created)", self.pipeline_name,
                        config.durable_name, policy)
            config.deliver_policy = info.config.deliver_policy
            await self.js.add_consumer(stream, config=config)

    # -- connection events ---------------------------------------------------------------------

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = exc
        log.debug("pipeline %r: nats: %s: %s", self.pipeline_name, type(exc).__name__, exc)

    async def _on_disconnect(self) -> None:
        if self._closing:
            return
        log.warning("pipeline %r: disconnected from nats; reconnecting", self.pipeline_name)

    async def _on_reconnect(self) -> None:
        log.info("pipeline %r: reconnected to nats", self.pipeline_name)
        self._checked = 0.0  # the server may have lost the stream: check at the next idle fetch

    # -- pushing ----------------------------------------------------------------------------

    def _encode(self, job_id: str, name: str, payload: bytes, priority: int, headers: Headers,
                auto_ack: bool, delay: float) -> tuple[str, bytes, dict[str, str]]:
        """Where and what to publish: the subject, or the delay stream with ``rr_due``."""
        nats_headers = codec.encode_headers(headers)
        if delay > 0:
            nats_headers.update(due_header(delay))
            subject = self.delay_subject
        else:
            subject = self.subject
        # The delay is carried by ``rr_due``: the forwarded copy is due, its body says 0.
        body = codec.encode_body(job_id, name, payload, priority, self.pipeline_name, auto_ack)
        return subject, body, nats_headers

    async def _publish(self, subject: str, body: bytes, headers: dict[str, str]) -> None:
        if self.js is None:
            raise PipelineStateError(f"pipeline {self.pipeline_name!r} is not connected")
        await self.js.publish(subject, body, headers=headers or None)

    async def _send(self, msg: Message) -> None:
        await self._publish(*self._encode(msg.id, msg.name, msg.payload, msg.priority,
                                          msg.headers, msg.auto_ack, msg.delay))

    async def _send_batch(self, msgs: Sequence[Message]) -> None:
        """Publish every message without waiting between them (up to ``PUBLISH_WINDOW``
        in flight), then wait for all PubAcks; the first failure is raised."""
        encoded = [self._encode(m.id, m.name, m.payload, m.priority, m.headers, m.auto_ack,
                                m.delay) for m in msgs]
        for start in range(0, len(encoded), PUBLISH_WINDOW):
            chunk = encoded[start:start + PUBLISH_WINDOW]
            results = await asyncio.gather(*(self._publish(*e) for e in chunk),
                                           return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    # -- consuming ----------------------------------------------------------------------------

    async def _start_consuming(self) -> None:
        if self.js is None:
            raise PipelineStateError(f"pipeline {self.pipeline_name!r} is not connected")
        if self._forwarder is None:
            forwarder = DelayForwarder(self.js, self.delay_stream, self.consumer, self.subject,
                                       self._forwarder_failed)
            await forwarder.start()
            self._forwarder = forwarder
        self._sub = await self.js.pull_subscribe_bind(durable=self.consumer, stream=self.stream)
        self._halt = False
        self._fetcher = asyncio.get_running_loop().create_task(
            self._fetch_loop(self._sub), name=f"rrjobs-nats-{self.pipeline_name}")

    def _forwarder_failed(self, exc: BaseException | None) -> None:
        if exc is None:
            self._failing_since.pop("forward", None)
            return
        log.warning("pipeline %r: delay forwarder: %s: %s", self.pipeline_name,
                    type(exc).__name__, exc)
        self._failing(exc, "forward")

    def _failing(self, exc: BaseException, part: str = "fetch") -> None:
        """Note a failure of ``part``; when it has kept failing for ``RECOVERY_TIMEOUT``
        ask the runtime to restart the pipeline."""
        now = time.monotonic()
        since = self._failing_since.setdefault(part, now)
        if now - since > RECOVERY_TIMEOUT and self.command_handler is not None:
            log.error("pipeline %r: nats %s failing for %.0fs (%s); restarting the pipeline",
                      self.pipeline_name, part, now - since, exc)
            self._failing_since.clear()
            self.command_handler(self.pipeline_name, "restart")

    async def _fetch_loop(self, sub: Any) -> None:
        """Fetch up to the room ``prefetch`` leaves, decode, insert into the priority
        queue; until ``_halt``. Messages fetched once halted are ``-NAK``-ed."""
        prefetch = self.options.prefetch
        rate = self.options.rate_limit
        while not self._halt:
            room = prefetch - len(self._outstanding)
            if room <= 0:
                self._room.clear()
                await self._room.wait()
                continue
            if rate is not None:
                wait = self._next_fetch - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                room = min(room, rate)
            self._fetch_started = time.monotonic()
            try:
                msgs = await sub.fetch(room, timeout=FETCH_TIMEOUT)
            except TimeoutError:
                # A deleted consumer answers nothing at all: look at it now and then.
                if time.monotonic() - self._checked > CHECK_INTERVAL:
                    await self._check_consumer()
                continue
            except asyncio.CancelledError:
                raise
            except nats.js.errors.NotFoundError as exc:
                await self._recover(exc)
                continue
            except Exception as exc:
                log.warning("pipeline %r: fetch failed: %s: %s", self.pipeline_name,
                            type(exc).__name__, exc)
                self._failing(exc)
                await asyncio.sleep(RETRY_BACKOFF)
                continue
            self._failing_since.pop("fetch", None)
            if rate is not None:
                self._next_fetch = time.monotonic() + len(msgs) / rate
            await self._deliver_all(msgs)

    async def _deliver_all(self, msgs: list[Any]) -> None:
        """Insert ``msgs`` as jobs; those not inserted (halted, cancelled) are ``-NAK``-ed."""
        done = 0
        try:
            for msg in msgs:
                if self._halt:
                    break
                d = codec.decode(msg.data, msg.headers, msg.subject, self.priority)
                job = NATSJob(self, msg, self.options.ack_wait, self.pipeline_name, d.id,
                              d.name, d.payload, d.headers, d.priority, d.auto_ack)
                self._outstanding.add(job)
                try:
                    if self.queue.full():
                        await self.queue.insert(job)  # backpressure
                    else:
                        self.queue.insert_nowait(job)
                except BaseException:
                    self._outstanding.discard(job)
                    raise
                done += 1
        finally:
            for msg in msgs[done:]:
                await self._quietly(msg.nak())

    async def _check_consumer(self) -> None:
        """Ask for both consumers' info: gone ⇒ declare again; unreachable ⇒ failing."""
        self._checked = time.monotonic()
        try:
            await self.js.consumer_info(self.stream, self.consumer, timeout=CHECK_TIMEOUT)
            await self.js.consumer_info(self.delay_stream, self.consumer, timeout=CHECK_TIMEOUT)
        except nats.js.errors.NotFoundError as exc:
            await self._recover(exc)
        except (nats.errors.Error, OSError) as exc:
            self._failing(exc)
        else:
            self._failing_since.pop("fetch", None)

    async def _recover(self, exc: BaseException) -> None:
        """The stream or consumer is gone: declare them again."""
        log.warning("pipeline %r: %s; declaring the stream and consumer again",
                    self.pipeline_name, exc)
        self._failing(exc)
        try:
            await self._declare()
        except Exception as again:
            log.warning("pipeline %r: declaring failed: %s", self.pipeline_name, again)
        await asyncio.sleep(RETRY_BACKOFF)

    async def _stop_consuming(self) -> None:
        """Take the queued jobs back and ``-NAK`` them in order; let the running fetch
        finish (cancelling it could lose what it collected until ``ack_wait``) and
        ``-NAK`` what it brings; wait until its pull request expired at the server,
        ``-NAK`` whatever that request delivered meanwhile, then drop the subscription.
        Takes at most about ``FETCH_TIMEOUT``."""
        self._halt = True
        self._room.set()
        taken = self.queue.remove(self.pipeline_name)
        for job in taken:
            if isinstance(job, NATSJob) and job in self._outstanding:
                self._outstanding.discard(job)
                await self._quietly(job.msg.nak())
        fetcher, self._fetcher = self._fetcher, None
        if fetcher is not None:
            try:
                async with asyncio.timeout(FETCH_TIMEOUT + 1.0):
                    await asyncio.shield(fetcher)
            except (TimeoutError, Exception):
                fetcher.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await fetcher
        sub, self._sub = self._sub, None
        if sub is not None:
            # nats-py leaves a fetch's pull request open at the server until it expires
            # (FETCH_TIMEOUT after the fetch began); what it delivers lands in the
            # subscription: give that back too, then unsubscribe.
            left = self._fetch_started + FETCH_TIMEOUT + EXPIRY_MARGIN - time.monotonic()
            if left > 0 and (self.nc is not None and self.nc.is_connected):
                await asyncio.sleep(left)
            await self._give_back_buffered(sub)
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._room.set()

    async def _give_back_buffered(self, sub: Any) -> None:
        """``-NAK`` the messages waiting in a pull subscription's buffer."""
        inner = getattr(sub, "_sub", None)  # nats-py's Subscription behind the pull one
        if inner is None:
            return
        while True:
            try:
                msg = await inner.next_msg(timeout=0.001)
            except Exception:
                return
            if msg.reply and msg.reply.startswith("$JS.ACK."):
                await self._quietly(msg.nak())

    async def _quietly(self, settle: Any) -> None:
        try:
            await settle
        except Exception as exc:
            log.debug("pipeline %r: settle failed: %s", self.pipeline_name, exc)

    # -- settlement (called by NATSJob) ------------------------------------------------------

    def _check(self, job: NATSJob) -> None:
        if job not in self._outstanding:
            if self.stopped:
                raise PipelineStateError(
                    f"pipeline {self.pipeline_name!r} is stopped: job {job.id} was not settled "
                    "and is delivered again")
            raise AckLostError(f"job {job.id}: its delivery was given back to JetStream")
        if self.nc is None or self.nc.is_closed:
            raise AckLostError(f"job {job.id}: the nats connection is closed; JetStream "
                               "redelivers it after ack_wait")

    def _done(self, job: NATSJob) -> None:
        self._outstanding.discard(job)
        if not self._room.is_set():
            self._room.set()

    async def _signal(self, job: NATSJob, signal: Any) -> None:
        """Send an ack-type signal (``+ACK``, ``-NAK``, ``+TERM``, ``+WPI``); a connection
        that closed or cannot buffer it makes it :class:`AckLostError` (JetStream
        redelivers after ``ack_wait``)."""
        try:
            await signal
        except (nats.errors.ConnectionClosedError, nats.errors.OutboundBufferLimitError,
                nats.errors.ConnectionDrainingError) as exc:
            raise AckLostError(f"job {job.id}: {exc}; JetStream redelivers it after "
                               "ack_wait") from None

    async def _ack_msg(self, job: NATSJob) -> None:
        await self._signal(job, job.msg.ack())
        if self.options.delete_after_ack:
            seq = job.msg.metadata.sequence.stream
            try:
                await self.js.delete_msg(self.stream, seq)
            except nats.js.errors.NotFoundError:
                pass  # deleted already (a redelivered copy acked twice)

    async def settle_ack(self, job: NATSJob) -> None:
        """``ack``: ``+ACK`` (and ``DeleteMsg`` with ``delete_after_ack``)."""
        self._check(job)
        self._done(job)
        await self._ack_msg(job)

    async def settle_nak(self, job: NATSJob) -> None:
        """``nack(requeue=True)``: ``-NAK``, redelivered at once."""
        self._check(job)
        self._done(job)
        await self._signal(job, job.msg.nak())

    async def settle_drop(self, job: NATSJob) -> None:
        """``nack()``: to ``dead_letter_subject`` when configured, else dropped; ``+TERM``.
        If JetStream refuses the dead-letter copy the original is ``-NAK``-ed
        (redelivered at once) and the error raised."""
        self._check(job)
        dead = self.options.dead_letter_subject
        if dead:
            headers = dict(job.headers)
            headers.pop(codec.X_NATS_SUBJECT, None)
            headers[RR_ORIGINAL_PIPELINE] = [self.pipeline_name]
            body = codec.encode_body(job.id, job.name, job.payload, job.priority,
                                     self.pipeline_name, job.auto_ack)
            try:
                await self._publish(dead, body, codec.encode_headers(headers))
            except BaseException:
                self._done(job)
                await self._quietly(job.msg.nak())
                raise
        else:
            log.info("pipeline %r: job %s (%s) nacked without requeue: dropped (no "
                     "dead_letter_subject)", self.pipeline_name, job.id, job.name)
        self._done(job)
        await self._signal(job, job.msg.term())
        if self.options.delete_after_ack:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await self.js.delete_msg(self.stream, job.msg.metadata.sequence.stream)

    async def settle_copy(self, job: NATSJob, headers: Headers, delay: float) -> None:
        """``requeue``/``nack(requeue=True, delay)``: publish a copy (to the delay stream
        when ``delay > 0``), then ack the original. If JetStream refuses the copy the
        original is ``-NAK``-ed (redelivered at once) and the error raised."""
        self._check(job)
        try:
            await self._publish(*self._encode(job.id, job.name, job.payload, job.priority,
                                              headers, job.auto_ack, delay))
        except BaseException:
            self._done(job)
            await self._quietly(job.msg.nak())
            raise
        self._done(job)
        await self._ack_msg(job)

    async def progress(self, job: NATSJob) -> None:
        """``+WPI`` for a held job."""
        self._check(job)
        await self._signal(job, job.msg.in_progress())

    # -- lifecycle --------------------------------------------------------------------------------

    async def _close(self) -> None:
        unsettled = list(self._outstanding)
        self._outstanding.clear()
        for job in unsettled:
            await self._quietly(job.msg.nak())
        if unsettled:
            log.info("pipeline %r stopped with %d unsettled jobs; JetStream delivers them "
                     "again", self.pipeline_name, len(unsettled))
        if self._forwarder is not None:
            await self._forwarder.stop()
            self._forwarder = None
        if self.options.delete_stream_on_stop and self.js is not None:
            for stream in (self.stream, self.delay_stream):
                try:
                    await self.js.delete_stream(stream)
                except Exception as exc:
                    log.warning("pipeline %r: deleting stream %r failed: %s",
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

    # -- state ------------------------------------------------------------------------------------

    async def state(self) -> State:
        """Counts from JetStream: ``active`` = not yet delivered, waiting for
        redelivery or in the priority queue; ``reserved`` = delivered and held;
        ``delayed`` = messages in the delay stream."""
        queued = self.queue.count(self.pipeline_name)
        active, delayed, reserved = queued, 0, 0
        if self.js is not None and not self.stopped:
            try:
                info = await self.js.consumer_info(self.stream, self.consumer)
                waiting = info.num_pending + (info.num_redelivered or 0)
                active = waiting + queued
                reserved = max(0, (info.num_ack_pending or 0) - (info.num_redelivered or 0)
                               - queued)
                delayed = (await self.js.stream_info(self.delay_stream)).state.messages
            except (nats.errors.Error, TimeoutError) as exc:
                log.debug("pipeline %r: state: %s", self.pipeline_name, exc)
        return State(
            pipeline=self.pipeline_name,
            driver=self.name,
            queue=self.subject,
            active=active,
            delayed=delayed,
            reserved=reserved,
            ready=self.consuming,
            priority=self.priority,
        )


class NATSConstructor(Constructor):
    """Builds ``nats`` drivers. Registered as the ``nats`` entry point.

    Reads the global ``nats:`` section once; a bad value fails with its key path.
    """

    name: ClassVar[str] = "nats"

    def __init__(self, configurer: Configurer) -> None:
        super().__init__(configurer)
        self.section = configurer.unmarshal_key("nats", NATSSection)

    async def driver_from_config(self, config_key: str, queue: PriorityQueue,
                                 pipeline: Pipeline) -> NATSDriver:
        options = options_from_config(self.configurer, config_key, NATSOptions)
        return await self._open(pipeline, queue, options, config_key)

    async def driver_from_pipeline(self, pipeline: Pipeline, queue: PriorityQueue) -> NATSDriver:
        options = options_from_pipeline(pipeline, NATSOptions)
        if pipeline.driver_options().get("prefetch") in (None, ""):
            options = options.model_copy(update={"prefetch": DEFAULT_DECLARE_PREFETCH})
        return await self._open(pipeline, queue, options, f"declare.{pipeline.name()}")

    async def _open(self, pipeline: Pipeline, queue: PriorityQueue, options: NATSOptions,
                    where: str) -> NATSDriver:
        driver = NATSDriver(pipeline, queue, self.section, options)
        await driver.open(where)
        return driver
