"""``CallGate``: lifecycle calls serialised, each told whether it was concurrent.

The rule shared by :class:`~rrjobs.core.base.BaseDriver` (per driver) and the
runtime (:class:`~rrjobs.runtime.jobs.Jobs`, per pipeline): a call made while
another one is in progress (inside or waiting) waits for it, and when its work
is then already done it is a no-op instead of the error the same call raises
on its own. Every call stays in progress for at least one pass of the event
loop, so calls issued together (``asyncio.gather``, tasks created in one step)
always see each other, even when the work itself does not yield.

Concurrency: event-loop only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class CallGate:
    """One call at a time; :meth:`call` yields whether another was in progress."""

    def __init__(self) -> None:
        self._lock = asyncio.Lock()
        self._calls = 0

    @property
    def busy(self) -> bool:
        """A call is in progress (inside the gate or waiting for it)."""
        return self._calls > 0

    @asynccontextmanager
    async def call(self) -> AsyncIterator[bool]:
        """Enter once the calls made before this one are done; yields ``True``
        when one was in progress as this call was made. The holder gives the
        loop one pass before it leaves, so a call issued in the same step is
        counted as concurrent."""
        waited = self._calls > 0
        self._calls += 1
        try:
            async with self._lock:
                try:
                    yield waited
                finally:
                    await asyncio.sleep(0)
        finally:
            self._calls -= 1
