"""The broker connection of one AMQP driver, redialled when it is lost.

A :class:`Link` owns one aio-pika connection at a time (a :class:`Session`).
When it drops, the link redials with backoff for at most ``redial_timeout``
seconds, then hands the fresh session to the driver; when that budget is spent
it reports exhaustion. Event-loop only, never blocks (the TLS context is built
in a thread); not thread-safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
import time
from collections.abc import Sequence
from functools import partial
from random import getrandbits
from typing import Any, Protocol

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection
from aiormq import spec
from aiormq.abc import AbstractChannel as RawChannel
from aiormq.abc import ChannelFrame

from rrjobs.core.errors import RRJobsError
from rrjobs.core.job import Job
from rrjobs.core.outage import Outage
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.resilience import Backoff
from rrjobs.core.secrets import scrub
from rrjobs.core.tls import client_ssl_context
from rrjobs.drivers.amqp.config import AMQPSection, Topology
from rrjobs.drivers.amqp.frames import PublishFrames

#: First pause between two dial attempts; doubled up to :data:`MAX_BACKOFF`.
FIRST_BACKOFF = 0.2
MAX_BACKOFF = 2.0
#: Longest single connection attempt.
CONNECT_TIMEOUT = 10.0


class LinkDownError(RRJobsError):
    """The broker connection is down and was not re-established in time, or the
    driver was stopped."""


#: Errors that mean "the connection (or the socket under it) is gone".
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPConnectionError, aiormq.exceptions.ChannelInvalidStateError,
    ConnectionError, OSError, asyncio.IncompleteReadError)


#: One publish: body, exchange, routing key, properties.
Publish = tuple[bytes, str, str, spec.Basic.Properties]


def publish_frames(channel: Any) -> PublishFrames:
    """The publish encoder of aiormq's ``channel`` (one per channel, kept on it)."""
    encoder: PublishFrames | None = getattr(channel, "_rrjobs_frames", None)
    if encoder is None:
        encoder = PublishFrames(channel.number, channel.max_content_size)
        channel._rrjobs_frames = encoder
    return encoder


class _Confirmed:
    """The confirmations of one write of publishes: plain loop futures (aiormq's
    ``create_future`` hangs three done callbacks on each), with one aiormq future,
    ``guard``, that aiormq rejects when the channel closes, and whose error then
    fails every confirmation still pending. Called as each confirmation is done:
    forgets its message id (``basic.return``'s lookup) and, after the last one,
    settles ``guard`` so that aiormq forgets it too."""

    __slots__ = ("_futures", "guard", "left", "returnable")

    def __init__(self, guard: asyncio.Future[Any], returnable: dict[str, int],
                 count: int) -> None:
        self.guard, self.returnable, self.left = guard, returnable, count
        self._futures: list[asyncio.Future[Any]] = []

    def watch(self, futures: list[asyncio.Future[Any]]) -> None:
        self._futures = futures
        self.guard.add_done_callback(self._closed)

    def __call__(self, mid: str, fut: asyncio.Future[Any]) -> None:
        if not fut.cancelled():
            fut.exception()  # read: no "never retrieved" log when the caller is gone
        self.returnable.pop(mid, None)
        self.left -= 1
        if self.left == 0 and not self.guard.done():
            self.guard.set_result(None)

    def _closed(self, guard: asyncio.Future[Any]) -> None:
        error = (aiormq.exceptions.ChannelInvalidStateError("the channel is closed")
                 if guard.cancelled() else guard.exception())
        if error is None:
            return
        for fut in self._futures:
            if not fut.done():
                fut.set_exception(error)


async def publish_all(channel: Any, items: Sequence[Publish]) -> list[asyncio.Future[Any]]:
    """Publish ``items`` (mandatory) in one write on aiormq's confirm ``channel``,
    taking its lock, delivery tags and confirmation table as ``basic_publish``
    does; the confirmation futures, in order. The frames are written by
    :class:`~rrjobs.drivers.amqp.frames.PublishFrames` (pamqp's bytes)."""
    returnable = channel.message_id_delivery_tag  # how a basic.return finds its publish
    encode = publish_frames(channel).publish
    confirmations = channel.confirmations
    create_future = channel.create_future
    async with channel.lock:
        if channel.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError("the channel is closed")
        mids: list[str] = []
        chunks: list[bytes] = []
        for body, exchange, routing_key, props in items:  # nothing is registered if it raises
            props.message_id = mid = f"{getrandbits(128):032x}"
            mids.append(mid)
            chunks.append(encode(body, exchange, routing_key, props))
        futures: list[asyncio.Future[Any]] = []
        confirmed = _Confirmed(create_future(), returnable, len(mids))
        loop_future = asyncio.get_running_loop().create_future
        tag = channel.delivery_tag
        for mid in mids:
            tag += 1
            returnable[mid] = tag
            fut = confirmations[tag] = loop_future()
            fut.add_done_callback(partial(confirmed, mid))
            futures.append(fut)
        confirmed.watch(futures)
        channel.delivery_tag = tag
        drained = create_future()
        await channel.write_queue.put(ChannelFrame(b"".join(chunks), False, drained))
        await drained
    return futures


class Session:
    """One live connection and its channels (see :meth:`admin`).

    ``number`` grows by one with every (re)connection, so that a job can tell
    whether the channel it was delivered on belongs to the current connection.
    """

    def __init__(self, connection: AbstractConnection, number: int,
                 log: logging.Logger) -> None:
        self.connection = connection
        self.number = number
        self.log = log
        #: set once the connection is known to be gone (or closed by us)
        self.lost = False
        #: the link was told (it redials once per lost session)
        self.reported = False
        self.closing = False
        self._channels: dict[str, RawChannel] = {}
        self._lock = asyncio.Lock()

    @property
    def healthy(self) -> bool:
        if self.lost or self.closing:
            return False
        transport = self.connection.transport
        return transport is not None and not transport.connection.is_closed

    async def channel(self, *, confirms: bool = False) -> tuple[AbstractChannel, RawChannel]:
        """A new channel (aio-pika's and the aiormq channel under it)."""
        chan = self.connection.channel(publisher_confirms=confirms, on_return_raises=confirms)
        await chan.initialize(timeout=CONNECT_TIMEOUT)
        return chan, await chan.get_underlay_channel()

    async def admin(self, purpose: str = "declare") -> RawChannel:
        """The channel for ``"publish"`` (publisher confirms, returns raise),
        ``"declare"`` or passive declares (``"state"``), reopened after RabbitMQ
        closed it (a refused publish or declaration closes its channel).
        Concurrency-safe. Raises :class:`LinkDownError` when the connection is
        gone, or when the publish channel cannot be reopened (the session is
        then lost)."""
        raw = self._channels.get(purpose)
        if raw is not None and not raw.is_closed:
            return raw
        async with self._lock:
            old = self._channels.get(purpose)
            if old is not None and not old.is_closed:
                return old
            if not self.healthy:
                raise LinkDownError("the connection to RabbitMQ is closed")
            publish = purpose == "publish"
            if old is not None and publish:
                reason = old.closing.exception() if not old.closing.cancelled() else None
                self.log.warning("RabbitMQ closed the publish channel (%s); reopening it",
                                 reason)
            try:
                _, raw = await self.channel(confirms=publish)
            except Exception as exc:
                if old is None or not publish:
                    raise
                self.log.warning("reopening the publish channel failed: %r", exc)
                self.lost = True
                await self.close()
                raise LinkDownError("the publish channel cannot be reopened") from exc
            self._channels[purpose] = raw
            return raw

    async def close(self) -> None:
        """Close the connection (idempotent); the broker requeues unacked deliveries."""
        self.closing = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.connection.close(), CONNECT_TIMEOUT)


class Owner(Protocol):
    """The AMQP driver, as its :class:`Link` and its consumers call it (typed here,
    so that neither module imports the driver's)."""

    topology: Topology
    pipeline_name: str
    log: logging.Logger
    queue: PriorityQueue
    #: the broker's outages (``BaseDriver.outage``): the link reports loss and recovery
    outage: Outage

    async def on_session(self, session: Session) -> None:
        """A fresh session, before it is handed out (declare the topology, resume
        consuming); if it raises, the dial counts as failed."""

    def on_down(self) -> None:
        """The connection is known to be lost."""

    def on_exhausted(self, error: BaseException) -> bool:
        """``redial_timeout`` passed without a connection; ``True``: redial again."""

    def accept(self, raw: Any) -> Job | None:
        """The job of a delivery (``BaseDriver.accept``)."""

    async def give_back(self, jobs: Sequence[Job]) -> None:
        """Requeue jobs taken back out of the priority queue."""


class Link:
    """A driver's connection to RabbitMQ, redialled on loss; it calls its driver's
    :class:`Owner` methods on the event loop."""

    def __init__(self, section: AMQPSection, driver: Owner) -> None:
        self.section = section
        self.driver = driver
        self.redial_timeout = driver.topology.redial_timeout
        self.name = f"rrjobs:{driver.pipeline_name}"
        self.log = driver.log
        self.session: Session | None = None
        self._numbers = 0
        self._ssl: ssl.SSLContext | None = None
        self._changed = asyncio.Event()
        self._failure: BaseException | None = None
        self._closed = False
        self._redialer: asyncio.Task[None] | None = None
        #: how many times the link reconnected after a loss (for tests and logs)
        self.reconnects = 0
        driver.outage.retry = (f"redialling {Backoff(FIRST_BACKOFF, MAX_BACKOFF).describe()}, "
                               f"the pipeline is restarted after redial_timeout="
                               f"{self.redial_timeout:g}s")

    @property
    def up(self) -> bool:
        session = self.session
        return session is not None and session.healthy

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def current(self) -> Session:
        """The live session, waiting while the link redials; raises
        :class:`LinkDownError` when the link is closed or gave up."""
        while True:
            session = self.session
            if session is not None and session.healthy:
                return session
            if self._closed:
                raise LinkDownError("the AMQP driver is stopped")
            if self._failure is not None:
                raise LinkDownError(scrub(f"RabbitMQ is unreachable: {self._failure}"))
            if session is not None and not session.reported:
                self.lost(session)
            await self._changed.wait()

    async def _dial(self, connect_timeout: float) -> Session:
        section = self.section
        if section.tls is not None and self._ssl is None:
            self._ssl = await asyncio.to_thread(client_ssl_context, section.tls)
        connection = await aio_pika.connect(section.addr.get_secret_value(), ssl_context=self._ssl,
                                            timeout=connect_timeout,
                                            client_properties={"connection_name": self.name})
        self._numbers += 1
        session = Session(connection, self._numbers, self.log)
        try:
            connection.close_callbacks.add(
                lambda _conn, exc, s=session: self._connection_closed(s, exc))
            await session.admin("publish")
            await self.driver.on_session(session)
        except BaseException:
            session.lost = True
            await session.close()
            raise
        return session

    async def open(self) -> None:
        """The first connection; raises if RabbitMQ cannot be reached or the
        topology cannot be declared."""
        self.session = await self._dial(CONNECT_TIMEOUT)
        self._notify()

    def _connection_closed(self, session: Session, exc: BaseException | None) -> None:
        if not session.closing:
            self.lost(session, exc)

    def lost(self, session: Session, exc: BaseException | None = None) -> None:
        """``session`` is dead: tell the driver (and its outage: the one WARNING) and
        start redialling (once)."""
        session.lost = True
        if session.reported or session is not self.session or self._closed:
            return
        session.reported = True
        self.driver.outage.down(exc or LinkDownError("the connection is closed"),
                                call="the connection to RabbitMQ")
        self.driver.on_down()
        if self._redialer is None or self._redialer.done():
            self._redialer = asyncio.get_running_loop().create_task(
                self._redial(session), name=f"rrjobs-amqp-redial-{self.name}")
        self._notify()

    async def _redial(self, old: Session) -> None:
        await old.close()  # never raises
        while not self._closed:
            deadline = time.monotonic() + self.redial_timeout
            backoff = Backoff(FIRST_BACKOFF, MAX_BACKOFF)
            last: BaseException | None = None
            for attempt in itertools.count(1):
                if self._closed:
                    break
                left = deadline - time.monotonic()
                try:
                    session = await self._dial(max(0.5, min(CONNECT_TIMEOUT, left)))
                except Exception as exc:
                    last = exc
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    pause = min(backoff.next(), left)
                    self.driver.outage.down(exc, call=f"redial {attempt} to RabbitMQ",
                                            note=f"; next in {pause:.2f}s")
                    await asyncio.sleep(pause)
                    continue
                if self._closed:
                    await session.close()
                    return
                self.session = session
                self._failure = None
                self.reconnects += 1
                self.driver.outage.ok()  # the one INFO: how long, how many retries
                self._notify()
                return
            if self._closed:
                return
            failure = last or LinkDownError("no attempt was made")
            self.log.error("could not reconnect to RabbitMQ within redial_timeout=%gs: %r",
                           self.redial_timeout, failure)
            self._failure = failure
            self._notify()
            if not self.driver.on_exhausted(failure):
                return
            self._failure = None

    async def close(self) -> None:
        """Stop redialling and close the connection. Idempotent."""
        self._closed = True
        redialer, self._redialer = self._redialer, None
        if redialer is not None and redialer is not asyncio.current_task():
            redialer.cancel()
            with contextlib.suppress(BaseException):
                await redialer
        session = self.session
        if session is not None:
            await session.close()
        self._notify()
