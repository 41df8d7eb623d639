"""``Job`` and ``Settler``: a received job, settled through its driver.

There is one job class for every driver. A driver gives each job a
:class:`Settler` (usually the driver itself) that maps the four settlements
onto the broker's native operations, and a ``handle``: whatever the broker
needs to settle this one delivery (a delivery tag, a receipt handle, an ack
id, a row id, an offset). A driver whose jobs need more than one value of
their own may subclass :class:`Job` to add ``__slots__`` only; no job class
calls back into a driver except through its settler.

The public methods here add what must be the same on every driver:

* a job is settled exactly once: a second ``ack``/``nack``/``requeue`` raises
  :class:`~rrjobs.core.errors.JobAlreadySettledError`;
* an ``auto_ack`` job was acknowledged on receipt; ``ack`` and ``nack`` on it
  are no-ops (RoadRunner's behaviour);
* a delay is checked against the driver's capabilities before anything is
  sent, so an unsupported delay is an error and never ignored;
* a settlement never overlaps a lease extension of the same job: ``ack``,
  ``nack`` and ``requeue`` wait for an extension in flight, and an extension
  asked for after the job was settled is a no-op. Exactly one settlement
  reaches the broker, after any extension.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from rrjobs.core.errors import JobAlreadySettledError, UnsupportedFeatureError
from rrjobs.core.headers import Headers, attempts_of, dead_letter_headers, merge_headers

if TYPE_CHECKING:
    from rrjobs.core.capabilities import Capabilities
    from rrjobs.core.message import Message


_new = object.__new__


class Settler(Protocol):
    """What a driver implements to settle its jobs (kombu's channel role).

    Every method may wait on a broker round trip and must never block the
    event loop. They are called at most once per job for the three
    settlements (the :class:`Job` guarantees it) and never concurrently with
    ``extend`` for the same job. Different jobs are settled concurrently.
    """

    @property
    def name(self) -> str:
        """The driver's name, equal to the pipeline's ``driver:`` value."""

    @property
    def capabilities(self) -> Capabilities:
        """What the driver can do; jobs check delays against it."""

    @property
    def ack_now(self) -> Callable[[Job], None] | None:
        """``None``, or a synchronous ack for a driver whose ack only updates
        local state or queues the ack for a batch: :meth:`Job.ack` calls it
        without a coroutine. It must not raise for a broker error (a failed
        batched ack means a redelivery; log it)."""

    async def ack(self, job: Job) -> None:
        """The job is done and is never redelivered."""

    async def nack(self, job: Job, requeue: bool, delay: float) -> None:
        """``requeue=False``: never redelivered; dead-lettered natively where the
        broker can, otherwise dropped (logged). The dead letter carries
        ``job.headers``, which :meth:`Job.nack` has just extended with the
        dead-letter headers (:func:`~rrjobs.core.headers.dead_letter_headers`):
        where the broker would move the message itself without them (a DLX, a
        redrive policy), the driver publishes the copy itself and then settles
        the original. ``requeue=True``: redelivered after ``delay`` seconds."""

    async def requeue(self, job: Job, headers: Headers, delay: float) -> None:
        """Put the job back with ``headers`` (already merged) after ``delay`` s."""

    async def extend(self, job: Job, seconds: float) -> None:
        """Keep the job reserved ``seconds`` more (only with ``lease_extension``)."""

    def queue_name(self, job: Job) -> str:
        """The broker queue/topic/stream the job came from (for ``context()``)."""


class Job:
    """A job delivered by a driver.

    Attributes:
        settler: settles this job on the broker (its driver).
        handle: the driver's token for this delivery (opaque to everything else).
        lease: seconds the broker reserves the job, or ``None``. While a
            handler runs, the worker pool extends it every ``lease / 2`` s.
        failure: set when the message could not be read: the reason. The
            runtime dead-letters such a job without calling a handler.

    Concurrency: a job is handled by one task at a time. ``extend_lease`` may
    run concurrently with a settlement (the pool extends leases in the
    background); everything else is sequential per job.
    """

    __slots__ = (
        "_extending",
        "auto_ack",
        "failure",
        "handle",
        "headers",
        "id",
        "lease",
        "name",
        "payload",
        "pipeline",
        "priority",
        "settled",
        "settler",
    )

    def __init__(
        self,
        settler: Settler,
        *,
        id: str,
        name: str,
        payload: bytes,
        headers: Headers,
        pipeline: str,
        priority: int,
        auto_ack: bool = False,
        handle: Any = None,
        lease: float | None = None,
        failure: str | None = None,
    ) -> None:
        self.settler = settler
        self.id = id
        self.name = name
        self.payload = payload
        self.headers = headers
        self.pipeline = pipeline
        self.priority = priority
        self.auto_ack = auto_ack
        self.handle = handle
        self.lease = lease
        self.failure = failure
        #: ``None`` until settled, then one of ``"ack"``, ``"nack"``, ``"requeue"``.
        self.settled: str | None = None
        self._extending: asyncio.Future[None] | None = None

    @classmethod
    def make(cls, settler: Settler, handle: Any, id: str, name: str, payload: bytes,
             headers: Headers, pipeline: str, priority: int, auto_ack: bool,
             lease: float | None = None) -> Job:
        """A new job, positionally and without keyword handling (the hot path of
        drivers that build one job per message)."""
        job = _new(cls)
        job.settler = settler
        job.handle = handle
        job.id = id
        job.name = name
        job.payload = payload
        job.headers = headers
        job.pipeline = pipeline
        job.priority = priority
        job.auto_ack = auto_ack
        job.lease = lease
        job.failure = None
        job.settled = None
        job._extending = None
        return job

    @classmethod
    def take_messages(cls, settler: Settler, msgs: Iterable[Message], pipeline: str,
                      ready: Callable[[Job], object],
                      delayed: Callable[[float, Job], object]) -> None:
        """A job of each message, as a driver that keeps jobs in process memory takes
        them: its headers and a payload other than ``bytes`` copied (the job shares
        nothing mutable with the message); ``ready(job)`` for a job without a delay,
        ``delayed(delay, job)`` for the others. :meth:`make` written out: no Python
        call per job (the memory driver's push)."""
        new = _new
        for msg in msgs:
            job = new(cls)
            job.settler = settler
            job.handle = None
            job.id = msg.id
            job.name = msg.name
            payload = msg.payload
            job.payload = payload if type(payload) is bytes else bytes(payload)
            headers = msg.headers
            job.headers = {k: list(v) for k, v in headers.items()} if headers else {}
            job.pipeline = pipeline
            job.priority = msg.priority
            job.auto_ack = msg.auto_ack
            job.lease = None
            job.failure = None
            job.settled = None
            job._extending = None
            delay = msg.delay
            if delay > 0.0:  # a float literal: a float compare needs no conversion
                delayed(delay, job)
            else:
                ready(job)

    # -- what the settler provides --------------------------------------------------

    @property
    def capabilities(self) -> Capabilities:
        """The capabilities of the driver that delivered this job."""
        return self.settler.capabilities

    @property
    def driver_name(self) -> str:
        return self.settler.name

    def queue_name(self) -> str:
        """The broker queue/topic the job came from (for ``context()``)."""
        return self.settler.queue_name(self)

    # -- the public API ---------------------------------------------------------------

    @property
    def body(self) -> bytes:
        """The payload (RoadRunner's ``Body()``)."""
        return self.payload

    @property
    def attempts(self) -> int:
        """Failed attempts so far, from the ``rr_attempts`` header."""
        return attempts_of(self.headers)

    def context(self, **extra: Any) -> bytes:
        """RoadRunner's context JSON: id, job, driver, queue, headers, pipeline, then
        ``extra`` (a subclass's broker fields: Kafka's topic, partition, offset)."""
        return json.dumps(
            {
                "id": self.id,
                "job": self.name,
                "driver": self.driver_name,
                "queue": self.queue_name(),
                "headers": self.headers,
                "pipeline": self.pipeline,
                **extra,
            },
            separators=(",", ":"),
        ).encode()

    def _settle(self, how: str) -> None:
        if self.settled is not None:
            raise JobAlreadySettledError(
                f"job {self.id} ({self.name}) was already settled with {self.settled}"
            )
        self.settled = how

    async def _after_extension(self) -> None:
        """Wait for a lease extension in flight (it finishes before the settlement)."""
        ext = self._extending
        if ext is not None:
            await asyncio.shield(ext)

    async def ack(self) -> None:
        """Acknowledge the job. A no-op for an ``auto_ack`` job."""
        if self.settled is not None:
            if self.auto_ack and self.settled == "ack":
                return
            self._settle("ack")  # raises JobAlreadySettledError
        self.settled = "ack"
        if self._extending is not None:
            await self._after_extension()
        now = self.settler.ack_now
        if now is not None:
            now(self)
            return
        await self.settler.ack(self)

    def ack_nowait(self) -> bool:
        """Acknowledge an unsettled job at once, without a coroutine, when the
        driver's ack is synchronous (``ack_now``) and no lease extension is in
        flight; return whether it did. Otherwise nothing is done: :meth:`ack`
        it then. The runtime's default outcome, on its hot path."""
        if self.settled is not None or self._extending is not None:
            return False
        now = self.settler.ack_now
        if now is None:
            return False
        self.settled = "ack"
        now(self)
        return True

    async def nack(self, requeue: bool = False, delay: float = 0.0,
                   headers: Headers | None = None) -> None:
        """Negative acknowledgement; ``nack()`` alone never redelivers.

        ``nack(requeue=True, delay=5)`` redelivers after 5 seconds. A no-op for
        an ``auto_ack`` job.

        Without requeue the job is given up: before the driver dead-letters it,
        its headers get ``rr_attempts`` (its failed attempts so far plus this
        one), ``rr_failed_at`` and ``rr_original_pipeline``, then ``headers``
        on top (the runtime adds ``rr_error`` and its own count there), so the
        dead letter says what happened on every driver.
        """
        if self.auto_ack and self.settled == "ack":
            return
        if delay < 0:
            raise ValueError("delay must be >= 0")
        if requeue:
            if headers:
                raise ValueError("headers go with nack(requeue=False) only; "
                                 "requeue(headers) puts a job back with headers")
            self.capabilities.check_delay(delay, self.driver_name)
        elif delay > 0:
            raise ValueError("a delay only makes sense with requeue=True")
        self._settle("nack")
        if not requeue:
            extra = dead_letter_headers(self.pipeline, self.attempts + 1)
            if headers:
                extra.update(headers)
            self.headers = merge_headers(self.headers, extra)
        if self._extending is not None:
            await self._after_extension()
        await self.settler.nack(self, requeue, delay)

    async def requeue(self, headers: Headers | None = None, delay: float = 0.0) -> None:
        """Put the job back, merging ``headers`` into its headers, after ``delay`` s."""
        if delay < 0:
            raise ValueError("delay must be >= 0")
        self.capabilities.check_delay(delay, self.driver_name)
        merged = {k: list(v) for k, v in self.headers.items()}
        if headers:
            for k, v in headers.items():
                merged[k] = list(v)
        self._settle("requeue")
        if self._extending is not None:
            await self._after_extension()
        await self.settler.requeue(self, merged, delay)

    async def extend_lease(self, seconds: float) -> None:
        """Keep the job reserved for ``seconds`` more (lease/visibility/ack deadline).

        A no-op once the job is settled (or while it is being settled). Raises
        :class:`~rrjobs.core.errors.UnsupportedFeatureError` when the driver
        declares no ``lease_extension``.
        """
        if not self.capabilities.lease_extension:
            raise UnsupportedFeatureError(
                f"driver {self.driver_name!r} does not support lease extension"
            )
        if self.settled is not None:
            return
        while self._extending is not None:  # one extension at a time
            await self._after_extension()
            if self.settled is not None:
                return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._extending = done
        try:
            await self.settler.extend(self, seconds)
        finally:
            self._extending = None
            done.set_result(None)

    @staticmethod
    async def extend_together(
        jobs: Sequence[Job],
        extend: Callable[[list[Job]], Awaitable[Sequence[BaseException | None]]],
    ) -> tuple[list[Job], Sequence[BaseException | None]]:
        """Extend the leases of several jobs in one ``extend(taken)`` call (one result per
        job, in order), with :meth:`extend_lease`'s guarantee for each: the jobs taken are
        those not settled and with no extension in flight, and a settlement of one of them
        waits until the call returned. Returns the jobs taken and their results."""
        taken = [job for job in jobs if job.settled is None and job._extending is None]
        if not taken:
            return taken, []
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for job in taken:
            job._extending = done
        try:
            return taken, await extend(taken)
        finally:
            for job in taken:
                job._extending = None
            done.set_result(None)

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} id={self.id} name={self.name!r} "
            f"pipeline={self.pipeline!r} priority={self.priority}>"
        )
