"""``Job``: a received job, as the priority queue holds it and handlers see it.

Each driver subclasses :class:`Job` and implements three primitives,
``_ack``, ``_nack`` and ``_requeue``, with the broker's native operations. The
public methods here add what must be the same on every driver:

* a job is settled exactly once: a second ``ack``/``nack``/``requeue`` raises
  :class:`~rrjobs.core.errors.JobAlreadySettledError`;
* an ``auto_ack`` job was acknowledged on receipt; ``ack`` and ``nack`` on it
  are no-ops (RoadRunner's behaviour);
* a delay is checked against the driver's capabilities before anything is
  sent, so an unsupported delay is an error and never ignored.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from rrjobs.core.errors import JobAlreadySettledError, UnsupportedFeatureError
from rrjobs.core.headers import Headers, attempts_of

if TYPE_CHECKING:
    from rrjobs.core.capabilities import Capabilities


class Job(ABC):
    """A job delivered by a driver.

    Concurrency: a job is handled by one task at a time; its methods are not
    meant to be called concurrently with each other. ``ack``, ``nack`` and
    ``requeue`` may wait on broker round trips (never block the loop).
    """

    __slots__ = (
        "auto_ack",
        "headers",
        "id",
        "name",
        "payload",
        "pipeline",
        "priority",
        "settled",
    )

    #: The driver's name, written into ``context()``.
    driver_name: str = ""
    #: Seconds the broker reserves the job for this consumer (lease, visibility
    #: timeout, ack deadline), or ``None``. While a handler runs, the worker pool
    #: calls :meth:`extend_lease` every ``lease / 2`` seconds. Drivers with
    #: leases set it per job (a slot of their subclass).
    lease: float | None = None

    def __init__(
        self,
        *,
        id: str,
        name: str,
        payload: bytes,
        headers: Headers,
        pipeline: str,
        priority: int,
        auto_ack: bool = False,
    ) -> None:
        self._set_fields(id, name, payload, headers, pipeline, priority, auto_ack)

    def _set_fields(self, id: str, name: str, payload: bytes, headers: Headers, pipeline: str,
                    priority: int, auto_ack: bool) -> None:
        """Set the fields of a new job (what ``__init__`` does, positionally:
        drivers that build a job per message call it from their ``__init__``)."""
        self.id = id
        self.name = name
        self.payload = payload
        self.headers = headers
        self.pipeline = pipeline
        self.priority = priority
        self.auto_ack = auto_ack
        #: ``None`` until settled, then one of ``"ack"``, ``"nack"``, ``"requeue"``.
        self.settled: str | None = None

    # -- what the driver provides -------------------------------------------------

    @property
    @abstractmethod
    def capabilities(self) -> Capabilities:
        """The capabilities of the driver that delivered this job."""

    @abstractmethod
    async def _ack(self) -> None:
        """Acknowledge on the broker: the job is done and never redelivered."""

    @abstractmethod
    async def _nack(self, requeue: bool, delay: float) -> None:
        """Negative acknowledgement.

        ``requeue=False``: the job is never redelivered; it is dead-lettered
        if the pipeline has a dead-letter target, otherwise dropped.
        ``requeue=True``: redelivered, after ``delay`` seconds when > 0.
        """

    @abstractmethod
    async def _requeue(self, headers: Headers, delay: float) -> None:
        """Put the job back with ``headers`` (already merged) after ``delay`` s."""

    def queue_name(self) -> str:
        """The broker queue/topic the job came from (for ``context()``)."""
        return ""

    # -- the public API ---------------------------------------------------------------

    @property
    def body(self) -> bytes:
        """The payload (RoadRunner's ``Body()``)."""
        return self.payload

    @property
    def attempts(self) -> int:
        """Failed attempts so far, from the ``rr_attempts`` header."""
        return attempts_of(self.headers)

    def context(self) -> bytes:
        """RoadRunner's context JSON: id, job, driver, queue, headers, pipeline."""
        return json.dumps(
            {
                "id": self.id,
                "job": self.name,
                "driver": self.driver_name,
                "queue": self.queue_name(),
                "headers": self.headers,
                "pipeline": self.pipeline,
            },
            separators=(",", ":"),
        ).encode()

    def _settle(self, how: str) -> None:
        if self.settled is not None:
            raise JobAlreadySettledError(
                f"job {self.id} ({self.name}) was already settled with {self.settled}"
            )
        self.settled = how

    async def ack(self) -> None:
        """Acknowledge the job. A no-op for an ``auto_ack`` job."""
        if self.settled is not None:
            if self.auto_ack and self.settled == "ack":
                return
            self._settle("ack")  # raises JobAlreadySettledError
        self.settled = "ack"
        await self._ack()

    async def nack(self, requeue: bool = False, delay: float = 0.0) -> None:
        """Negative acknowledgement; ``nack()`` alone never redelivers.

        ``nack(requeue=True, delay=5)`` redelivers after 5 seconds. A no-op for
        an ``auto_ack`` job.
        """
        if self.auto_ack and self.settled == "ack":
            return
        if delay < 0:
            raise ValueError("delay must be >= 0")
        if requeue:
            self.capabilities.check_delay(delay, self.driver_name)
        elif delay > 0:
            raise ValueError("a delay only makes sense with requeue=True")
        self._settle("nack")
        await self._nack(requeue, delay)

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
        await self._requeue(merged, delay)

    async def extend_lease(self, seconds: float) -> None:
        """Keep the job reserved for ``seconds`` more (lease/visibility/ack deadline).

        Drivers whose capabilities declare ``lease_extension`` override this.
        """
        raise UnsupportedFeatureError(
            f"driver {self.driver_name!r} does not support lease extension"
        )

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} id={self.id} name={self.name!r} "
            f"pipeline={self.pipeline!r} priority={self.priority}>"
        )
