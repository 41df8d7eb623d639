"""``InFlight``: a broker call that pausing lets finish instead of cancelling.

A pull driver's fetch may be a long poll (SQS ``ReceiveMessage`` with
``WaitTimeSeconds``) or a ``Pull`` the broker has already answered. Cancelling
it at pause can strand what the broker handed out: those messages stay leased
to nobody until their visibility or ack deadline passes. A driver wraps the
call in ``with self.in_flight:`` and, before the template stops its loop,
calls :meth:`InFlight.settle` to close the lane's gate and wait (bounded) for
the call to end; the driver then gives back what that last call returned.

Concurrency: event-loop only; one call tracked at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rrjobs.core.lane import Lane


class InFlight:
    """Whether a call is in flight (a context manager around it)."""

    __slots__ = ("_idle",)

    def __init__(self) -> None:
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def busy(self) -> bool:
        return not self._idle.is_set()

    def __enter__(self) -> InFlight:
        self._idle.clear()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._idle.set()

    async def wait(self, within: float) -> bool:
        """Wait up to ``within`` s for the call to end; ``True`` when it did."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._idle.wait()
        return self._idle.is_set()

    async def settle(self, lane: Lane, within: float) -> bool:
        """Close ``lane``'s gate (no new fetch starts; what the call returns
        counts as received while paused), then :meth:`wait`."""
        lane.is_open = False
        return await self.wait(within)
