"""``BaseDriver``: the lifecycle, checks and plumbing every driver shares.

A driver implements only what touches its broker: ``_start_consuming``,
``_stop_consuming``, ``_send`` (and ``_send_batch``), ``_close`` and
``state``, plus the :class:`~rrjobs.core.job.Settler` methods for its jobs
and, where messages come off a wire, ``decode`` and ``poison``. This class
gives each driver:

* **Settlement defaults**: ``ack`` is ``ack_now`` where the driver has one;
  ``nack`` is ``requeue`` (with the job's headers) when asked to requeue,
  otherwise the driver's ``dead_letter``.

* **Lifecycle.** ``run``/``resume``/``pause``/``stop`` are serialised by a
  :class:`~rrjobs.core.gate.CallGate`: a call made while another is in
  progress (inside or waiting) waits for it, and calls issued together
  (``asyncio.gather``) always see each other, even when the driver's own work
  does not yield. A call issued on its own in the wrong state raises
  RoadRunner's :class:`~rrjobs.core.errors.PipelineStateError` (a double
  pause or resume); a call that had to wait for another one and finds its
  work already done (a pause queued behind a pause, anything behind ``stop``)
  is a no-op. ``stop`` is final and idempotent, and returns only once the
  pipeline is stopped (a ``stop`` during a ``stop`` waits for it).
* **Checks on push**: pipeline name, stopped state, capabilities (delay,
  payload size, headers), the inherited priority.
* **Supervision**: :attr:`supervisor` runs the driver's background tasks;
  ``ready`` is false while one is down (see :mod:`rrjobs.core.supervise`).
* **Guarded decoding**: :meth:`accept` turns any exception of ``decode``
  into a failed job (:meth:`poison_job`) that the runtime dead-letters with
  the reason, so no message can stall a consumer.
* **Restart requests**: :meth:`request_restart` asks the runtime, once per
  episode, to rebuild a pipeline that cannot recover by itself.
* **Serving**: :meth:`serve` starts, once, what a pipeline does while it is
  declared in a server, consuming or not, paused or not (``_serve``: the
  Kafka and NATS delay forwarders); the runtime calls it for every pipeline
  it builds, and ``resume`` calls it too. Until then a delayed push waits in
  the broker (logged once).

Concurrency: ``push`` and ``push_batch`` may be called from many tasks at once
and in any lifecycle state but *stopped*; ``state`` at any time.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from abc import abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from rrjobs.core.batcher import Batcher, SendFn
from rrjobs.core.capabilities import Capabilities
from rrjobs.core.deadletters import DeadLetterStore
from rrjobs.core.errors import AckLostError, PipelineStateError, UnsupportedFeatureError
from rrjobs.core.gate import CallGate
from rrjobs.core.headers import RR_ERROR, UNREADABLE, Headers
from rrjobs.core.interfaces import Driver
from rrjobs.core.job import Job
from rrjobs.core.message import Message, new_id
from rrjobs.core.outage import Outage
from rrjobs.core.outage import describe_error as describe_error  # where drivers import it
from rrjobs.core.pipeline import Pipeline
from rrjobs.core.queue import PriorityQueue
from rrjobs.core.state import State
from rrjobs.core.supervise import Supervisor

T = TypeVar("T")
R = TypeVar("R")

#: Seconds one broker call of a stop may take (``BaseDriver.bounded``), and in a known outage.
STOP_CALL_WAIT, STOP_CALL_WAIT_IN_OUTAGE = 3.0, 1.0

class BaseDriver(Driver):
    """A driver for one pipeline, with the shared lifecycle.

    States: *idle* (built, not consuming) → *consuming* ⇄ *paused* → *stopped*.
    ``run`` and ``resume`` move to consuming; ``pause`` leaves it; ``stop`` is
    final and idempotent. Pushing works in every state but *stopped*.
    """

    def __init__(self, pipeline: Pipeline, queue: PriorityQueue) -> None:
        self.pipeline = pipeline
        self.queue = queue
        self.pipeline_name = pipeline.name()
        self.priority = pipeline.priority()
        self.consuming = False
        self.stopped = False
        self.log = logging.getLogger(f"rrjobs.drivers.{self.name}")
        self.supervisor = Supervisor(f"pipeline {self.pipeline_name!r}", self.log)
        #: false while the broker cannot be reached (drivers set it)
        self.connected = True
        #: the broker's outages: one WARNING, DEBUG, one INFO (see :mod:`rrjobs.core.outage`)
        self.outage = Outage("the broker", self.supervisor.owner, self.log)
        self._lifecycle = CallGate()
        self._restart_asked = False
        #: ``serve`` ran: the pipeline's background work (``_serve``) is started
        self.serving = False
        self._unserved_warned = False

    @classmethod
    def declared(cls, options: Any) -> Capabilities:
        """The capabilities of a pipeline with ``options``, known before it is built or
        opened (``DriverConstructor.declared_capabilities``; ``rrjobs serve --processes``
        reads ``shared_queue`` and ``reserved_per_consumer``): the class's, unless a
        driver whose sharing depends on an option says otherwise. Its instances carry
        the same two values."""
        return cls.capabilities

    # -- for subclasses ------------------------------------------------------------

    @abstractmethod
    async def _start_consuming(self) -> None:
        """Begin delivering jobs into the priority queue."""

    @abstractmethod
    async def _stop_consuming(self) -> None:
        """Stop delivering; jobs already in the priority queue are taken back
        (``queue.remove``) so that nothing is consumed while paused."""

    @abstractmethod
    async def _send(self, msg: Message) -> None:
        """Hand one validated message to the broker and wait for acceptance."""

    async def _send_batch(self, msgs: Sequence[Message]) -> None:
        """Hand several validated messages to the broker; override to batch."""
        for msg in msgs:
            await self._send(msg)

    async def _close(self) -> None:
        """Release connections and resources (after consuming stopped)."""

    async def _serve(self) -> None:
        """Start the supervised tasks that run while the pipeline is declared, consuming or
        not, paused or not, until ``stop`` (a delay forwarder). Called once."""

    #: Where a delayed push waits until :meth:`serve` forwards it (``""``: the broker
    #: delivers delayed jobs itself; the warning of :meth:`prepare` names it).
    forwarded_from = ""

    def decode(self, raw: Any) -> Job | None:
        """The job of one received message, or ``None`` when the driver dealt
        with it itself (a delay hop, a message for later). May raise anything:
        :meth:`accept` turns the error into a failed job."""
        raise NotImplementedError(f"driver {self.name!r} does not decode messages")

    def poison(self, raw: Any, reason: str) -> Job | None:
        """A failed job for ``raw``, which could not be decoded (build it with
        :meth:`poison_job`), or ``None`` when the driver settled it itself."""
        raise NotImplementedError(f"driver {self.name!r} does not decode messages")

    # -- Settler defaults --------------------------------------------------------------

    #: A synchronous ack (see :class:`~rrjobs.core.job.Settler`), or ``None``.
    ack_now: Callable[[Job], None] | None = None

    async def ack(self, job: Job) -> None:
        """:attr:`ack_now` (a driver with a synchronous ack implements only that)."""
        if self.ack_now is None:
            raise NotImplementedError(f"driver {self.name!r} has neither ack nor ack_now")
        self.ack_now(job)

    async def nack(self, job: Job, requeue: bool, delay: float) -> None:
        """``requeue``: :meth:`requeue` with the job's own headers; otherwise
        :meth:`dead_letter`. A driver whose broker redelivers natively overrides it."""
        if requeue:
            await self.requeue(job, job.headers, delay)
        else:
            await self.dead_letter(job)

    async def requeue(self, job: Job, headers: Headers, delay: float) -> None:
        """Put ``job`` back with ``headers`` after ``delay`` s (the Settler's ``requeue``)."""
        raise NotImplementedError(f"driver {self.name!r} does not requeue jobs")

    async def dead_letter(self, job: Job) -> None:
        """``nack`` without requeue: the job is never redelivered; to the dead-letter
        queue where the pipeline has one, otherwise dropped (logged)."""
        raise NotImplementedError(f"driver {self.name!r} does not dead-letter jobs")

    def queue_name(self, job: Job) -> str:
        """The broker queue the job came from (``context()``); by default the pipeline's
        name, for a driver whose pipeline is its queue (memory, sqlite)."""
        return self.pipeline_name

    def check_not_stopped(self, job: Job) -> None:
        """Raise :class:`PipelineStateError` for a settlement of ``job`` once the
        pipeline is stopped: the job is not settled, and the broker delivers it again."""
        if self.stopped:
            raise PipelineStateError(f"pipeline {self.pipeline_name!r} is stopped: job "
                                     f"{job.id} was not settled and is delivered again")

    @staticmethod
    async def copy_or_give_back(send: Awaitable[Any], give_back: Callable[[], object]) -> None:
        """Await ``send``, a copy of a job (requeued, delayed or dead-lettered); when it
        fails, ``give_back()`` the original (awaited if it returns an awaitable), so that
        the broker delivers it again at once, and raise."""
        try:
            await send
        except BaseException:
            back = give_back()
            if inspect.isawaitable(back):
                await back
            raise

    def spawn_hop(self, send: Callable[[], Awaitable[Any]],
                  settle: Callable[[], Awaitable[Any]]) -> None:
        """Move a delayed message on in the background (the supervisor's one-shot
        ``delay hop``): ``send()`` its next hop, then ``settle()`` the one received; a
        failure is logged, and the broker delivers the received one again."""
        async def hop() -> None:
            try:
                await send()
                await settle()
            except Exception as exc:
                self.log.warning("pipeline %r: a delay hop failed (the broker delivers the "
                                 "job again): %s", self.pipeline_name, describe_error(exc))
        self.supervisor.spawn("delay hop", hop())

    def dropped(self, job: Job, store: str) -> None:
        """Log a job ``nack``-ed without requeue on a pipeline without a dead-letter
        ``store`` (the option that would name one): it is gone."""
        self.log.info("pipeline %r: job %s (%s) nacked without requeue: dropped (no %s)",
                      self.pipeline_name, job.id, job.name, store)

    async def extend(self, job: Job, seconds: float) -> None:
        """Extend ``job``'s lease; drivers with ``lease_extension`` override it."""
        raise UnsupportedFeatureError(f"driver {self.name!r} does not support lease extension")

    # -- shared plumbing ---------------------------------------------------------------

    #: The reader of the pipeline's dead letters (``rrjobs dlq``), where it has one.
    dead_letters: DeadLetterStore | None = None

    def dead_letter_store(self) -> DeadLetterStore | None:
        """:attr:`dead_letters` (the runtime asks only when ``dead_letter_read``)."""
        return self.dead_letters

    def state_of(self, queue: str, active: int = 0, delayed: int = 0,
                 reserved: int = 0) -> State:
        """A :class:`State` of this pipeline on ``queue`` with these counts (name,
        driver, readiness and priority filled in)."""
        return State(pipeline=self.pipeline_name, driver=self.name, queue=queue, active=active,
                     delayed=delayed, reserved=reserved, ready=self.ready,
                     priority=self.priority)

    @property
    def ready(self) -> bool:
        """Consuming, connected, in no outage and with no supervised task down."""
        return (self.consuming and self.connected and not self.outage.failing
                and self.supervisor.healthy)

    def accept(self, raw: Any) -> Job | None:
        """``decode(raw)``, with every error turned into a failed job."""
        try:
            return self.decode(raw)
        except Exception as exc:  # RecursionError, MemoryError, UnicodeError, ...
            reason = describe_error(exc)
        self.log.warning("pipeline %r: unreadable message, dead-lettered: %s",
                         self.pipeline_name, reason)
        try:
            return self.poison(raw, reason)
        except Exception:
            self.log.exception("pipeline %r: cannot settle an unreadable message; the "
                               "broker redelivers it", self.pipeline_name)
            return None

    def poison_job(self, handle: Any, payload: bytes, reason: str, *,
                   lease: float | None = None) -> Job:
        """A failed job carrying ``payload`` (the raw body) and the ``reason``
        (also as its ``rr_error`` header)."""
        return Job(self, id=new_id(), name=UNREADABLE, payload=bytes(payload),
                   headers={RR_ERROR: [reason]}, pipeline=self.pipeline_name,
                   priority=self.priority, handle=handle, lease=lease, failure=reason)

    def request_restart(self, reason: str) -> None:
        """Ask the runtime to rebuild this pipeline (once per driver)."""
        if self._restart_asked or self.stopped:
            return
        self._restart_asked = True
        self.connected = False
        if self.command_handler is not None:
            self.log.error("pipeline %r: %s; asking the runtime to restart it",
                           self.pipeline_name, reason)
            self.command_handler(self.pipeline_name, "restart")
        else:
            self.log.error("pipeline %r: %s, and no runtime to restart it",
                           self.pipeline_name, reason)

    def settlement_batcher(self, send: SendFn[T, R], what: str, size: int,
                           concurrency: int) -> Batcher[T, R]:
        """A :class:`~rrjobs.core.batcher.Batcher` of settlements whose failed
        posted batches :meth:`settlement_lost` reports as ``what``."""
        return Batcher(send, size, concurrency, self.settlement_lost(what))

    def settlement_lost(self, what: str) -> Callable[[BaseException], None]:
        """An ``on_error`` for a :class:`~rrjobs.core.batcher.Batcher` of settlements
        (acks, deletes, lease changes): a failed batch is a failure of the broker
        (:attr:`outage`: one WARNING naming the pipeline and ``what`` when it starts an
        outage, DEBUG during one); the broker delivers its jobs again. Event-loop only."""
        def report(exc: BaseException) -> None:
            if self.outage.quiet() and not self.outage.failing:  # the aftermath of one
                self.log.debug("pipeline %r: %s failed after the outage (the broker delivers "
                               "the job again): %s", self.pipeline_name, what,
                               describe_error(exc))
                return
            self.outage.down(exc, call=what, note="; the broker delivers the job again")
        return report

    async def bounded(self, work: Awaitable[Any], what: str,
                      limit: float = STOP_CALL_WAIT) -> None:
        """Await ``work``, a broker call of a stop (a drain of settlements, a final
        commit, leaving a group), for at most ``limit`` seconds: a stop must not hang on
        a broker that is away, whether or not the outage is known yet. A failure or the
        timeout is logged (DEBUG in an outage, else a WARNING without traceback), never
        raised: what the call could not send, the broker delivers again."""
        if self.outage.failing:  # it can hardly succeed: a short look is enough
            limit = min(limit, STOP_CALL_WAIT_IN_OUTAGE)
        task = asyncio.ensure_future(work)
        # retrieved, whenever it ends: no "exception was never retrieved" from asyncio
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        try:
            done, _ = await asyncio.wait({task}, timeout=limit)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:  # cancelled and left: a client may ignore its cancellation for long
            task.cancel()
            error: BaseException | None = TimeoutError()
        else:
            error = None if task.cancelled() else task.exception()
        if error is not None:
            self.log.log(logging.DEBUG if self.outage.quiet() else logging.WARNING,
                         "pipeline %r: %s did not finish (the broker delivers its jobs "
                         "again): %s", self.pipeline_name, what,
                         describe_error(error) if str(error) else type(error).__name__)

    def settlement_failed(self, job: Job, what: str, exc: BaseException) -> bool:
        """The runtime's ``what`` (``"acknowledging"``) of ``job`` raised ``exc``: ``True``
        when that is expected and was logged here (at DEBUG in or just after an outage,
        an :class:`~rrjobs.core.errors.AckLostError` at WARNING without a traceback);
        ``False``: an error the caller logs with its traceback."""
        if self.outage.quiet():
            self.log.debug("pipeline %r: %s job %s failed in or after an outage (the broker "
                           "delivers it again): %s", self.pipeline_name, what, job.id,
                           describe_error(exc))
            return True
        if isinstance(exc, AckLostError):
            self.log.warning("pipeline %r: %s job %s failed: %s", self.pipeline_name, what,
                             job.id, describe_error(exc))
            return True
        return False

    # -- checks ---------------------------------------------------------------------------

    def _check_name(self, pipeline: str) -> None:
        if pipeline != self.pipeline_name:
            raise PipelineStateError(
                f"driver of pipeline {self.pipeline_name!r} was asked about {pipeline!r}"
            )

    def prepare(self, msg: Message) -> Message:
        """Validate ``msg`` for this pipeline and fill in the inherited priority."""
        self._prepare_all((msg,))
        return msg

    def prepare_batch(self, msgs: Sequence[Message]) -> list[Message]:
        """:meth:`prepare` every message of ``msgs``, in one loop; a list of them.

        Raises at the first message that fails a check (those before it are
        prepared). A driver that overrides :meth:`prepare` has it called per message."""
        if type(self).prepare is not BaseDriver.prepare:
            return [self.prepare(m) for m in msgs]
        self._prepare_all(msgs)
        return list(msgs)

    def _prepare_all(self, msgs: Sequence[Message]) -> None:
        if self.stopped:
            raise PipelineStateError(f"pipeline {self.pipeline_name!r} is stopped")
        name, priority, caps = self.pipeline_name, self.priority, self.capabilities
        limit = caps.max_payload
        # Each check is guarded by the condition it starts with, so that a plain
        # job (no delay, no payload limit, no headers) makes no call here.
        for msg in msgs:
            if msg.pipeline != name:
                if msg.pipeline:
                    raise PipelineStateError(
                        f"message for pipeline {msg.pipeline!r} pushed to {name!r}")
                msg.pipeline = name
            if msg.priority == 0:
                msg.priority = priority
            if msg.delay > 0.0:  # a float literal: a float compare needs no conversion
                self._check_delay(msg.delay)
            if limit is not None:
                caps.check_payload(len(msg.payload), self.name)
            if msg.headers:
                caps.check_headers(msg.headers, self.name)

    def _check_delay(self, delay: float) -> None:
        self.capabilities.check_delay(delay, self.name)
        if self.forwarded_from and not self.serving and not self._unserved_warned:
            self._unserved_warned = True
            self.log.warning(
                "pipeline %r: delayed jobs wait in %s until an rrjobs process that "
                "declares the pipeline forwards them (rrjobs serve, rrjobs forward); "
                "this one does not", self.pipeline_name, self.forwarded_from)

    # -- the Driver interface -------------------------------------------------------------

    async def push(self, msg: Message) -> None:
        await self._send(self.prepare(msg))

    async def push_batch(self, msgs: Sequence[Message]) -> None:
        await self._send_batch(self.prepare_batch(msgs))

    async def serve(self) -> None:
        """Start the pipeline's background work (``_serve``) once; idempotent."""
        async with self._lifecycle.call():
            await self._serve_once()

    async def _serve_once(self) -> None:
        if self.serving or self.stopped:
            return
        await self._serve()
        self.serving = True

    async def run(self, pipeline: Pipeline) -> None:
        self._check_name(pipeline.name())
        await self.resume(pipeline.name())

    async def resume(self, pipeline: str) -> None:
        self._check_name(pipeline)
        async with self._lifecycle.call() as waited:
            if self.stopped:
                if waited:
                    return
                raise PipelineStateError(f"pipeline {self.pipeline_name!r} is stopped")
            if self.consuming:
                if waited:
                    return
                raise PipelineStateError(
                    f"pipeline {self.pipeline_name!r} is already in the active state"
                )
            await self._serve_once()
            await self._start_consuming()
            self.consuming = True

    async def pause(self, pipeline: str) -> None:
        self._check_name(pipeline)
        if not self.capabilities.pause:
            raise UnsupportedFeatureError(f"driver {self.name!r} cannot pause a pipeline")
        async with self._lifecycle.call() as waited:
            if not self.consuming:
                if waited:
                    return
                raise PipelineStateError(
                    f"pipeline {self.pipeline_name!r}: no active listeners, nothing to pause"
                )
            self.consuming = False
            await self._stop_consuming()

    async def stop(self) -> None:
        if self.stopped and not self._lifecycle.busy:
            return
        async with self._lifecycle.call():
            if self.stopped:
                return
            try:
                if self.consuming:
                    self.consuming = False
                    await self._stop_consuming()
                self.stopped = True
                await self.supervisor.stop()
            finally:
                self.stopped = True
                self.queue.remove(self.pipeline_name)
                await self._close()
