"""``LeasingDriver``: a pull driver whose broker leases each message to its consumer.

An SQS receipt handle (until its visibility timeout) and a Pub/Sub ack id (until its
ack deadline) belong to the consumer that received the message: a settlement or a
lease change of a handle whose lease ran out, or that the consumer gave back at pause
or stop, is refused by the broker or lands on a message delivered again meanwhile.
The driver records each handle it delivers in :attr:`LeasingDriver.leases`, with the
``loop.time()`` its lease ends (``math.inf``: the driver keeps it alive itself), and
implements :meth:`LeasingDriver.change_lease`, one broker call; the kit checks the
handle before each settlement and extension, and extends leases: those of handlers'
jobs when the worker pool asks, and, where the driver returns its lease from
``queued_lease()``, those of the jobs waiting in the priority queue every third of it
(:meth:`~rrjobs.core.pull.PullDriver.renew_waiting`).

Jobs taken back at pause stay leased (``hold_at_pause``) until their lease ends (they
are not renewed); resume delivers those whose lease still runs.

Concurrency: event-loop only. Every :class:`Leases` method is O(1).
"""

from __future__ import annotations

import asyncio
import math
from abc import abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar

from rrjobs.core.delays import whole_seconds
from rrjobs.core.errors import AckLostError
from rrjobs.core.job import Job
from rrjobs.core.pull import PullDriver


class Leases:
    """The handles a consumer holds, each with the ``loop.time()`` its lease ends."""

    __slots__ = ("_ends",)

    def __init__(self) -> None:
        self._ends: dict[Any, float] = {}

    def __len__(self) -> int:
        return len(self._ends)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._ends)

    def __contains__(self, handle: object) -> bool:
        return handle in self._ends

    def hold(self, handle: Any, ends: float = math.inf) -> None:
        """The consumer holds ``handle`` until ``ends`` (``inf``: until it lets go)."""
        self._ends[handle] = ends

    def holds(self, handle: Any) -> bool:
        """Whether ``handle``'s lease still runs (one that ran out is forgotten). An
        endless lease is not compared with the clock (a ``loop.time()`` call may cost
        microseconds: this is on the ack path)."""
        ends = self._ends.get(handle)
        if ends is not None and (ends == math.inf or ends > asyncio.get_running_loop().time()):
            return True
        self._ends.pop(handle, None)
        return False

    def extended(self, handle: Any, ends: float) -> None:
        """``handle``'s lease now ends at ``ends``, unless it was let go meanwhile or is
        kept alive by the driver (``inf``)."""
        if self._ends.get(handle, math.inf) < math.inf:
            self._ends[handle] = ends

    def let_go(self, handle: Any) -> None:
        """Forget ``handle`` (settled, or given back to the broker)."""
        self._ends.pop(handle, None)

    def clear(self) -> None:
        self._ends.clear()


class LeasingDriver(PullDriver):
    """A :class:`~rrjobs.core.pull.PullDriver` on a broker that leases messages."""

    hold_at_pause = True  # kept leased for resume; the driver's ``_close`` gives them back
    #: The longest lease one change may set (the broker's limit, in seconds).
    max_lease: ClassVar[int]
    #: Why a job whose handle the consumer no longer holds cannot be settled.
    lease_lost: ClassVar[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: the handles of the jobs this consumer holds (queued, handled or held at pause)
        self.leases = Leases()

    @abstractmethod
    async def change_lease(self, job: Job, seconds: int) -> None:
        """Set the broker's lease of ``job`` to ``seconds`` from now (one broker call,
        batched or not); may raise the broker's refusal."""

    def still_held(self, job: Job) -> bool:
        return self.leases.holds(job.handle)

    def check_held(self, job: Job) -> None:
        """Raise :class:`~rrjobs.core.errors.PipelineStateError` once stopped, and
        :class:`~rrjobs.core.errors.AckLostError` (:attr:`lease_lost`) unless the
        consumer still holds ``job``'s handle."""
        self.check_not_stopped(job)
        if not self.leases.holds(job.handle):
            raise AckLostError(f"{self.name}: job {job.id}: {self.lease_lost}")

    async def extend(self, job: Job, seconds: float) -> None:
        """Lease extension: :meth:`change_lease` to ``seconds`` rounded up to whole
        seconds (1 to :attr:`max_lease`); the lease is then counted from the call."""
        self.check_held(job)
        lease = min(self.max_lease, max(1, whole_seconds(seconds)))
        start = asyncio.get_running_loop().time()
        await self.change_lease(job, lease)
        self.leases.extended(job.handle, start + lease)
