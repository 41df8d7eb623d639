"""Backoff and failure windows: how every driver waits after an error and when it gives up.

A driver retries a failing broker call with :class:`Backoff` (exponential,
with jitter, capped) and measures how long it has been failing with a
:class:`FailureWindow`. Once the window passes its limit, the driver asks the
runtime to rebuild the pipeline (:meth:`~rrjobs.core.base.BaseDriver.request_restart`).
The same numbers and the same rule hold on every driver.

Neither class blocks or creates tasks; :meth:`Backoff.sleep` is the only
coroutine. Event-loop only, not thread-safe.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable

#: Seconds a broker may keep failing before the runtime is asked to rebuild the pipeline.
DEFAULT_RESTART_AFTER = 60.0


class Backoff:
    """Waits of ``first``, doubling (``factor``) up to ``cap`` seconds.

    Each wait is shortened by up to ``jitter`` (a fraction) at random so that
    many consumers retrying the same broker do not march in step.
    ``reset()`` after a success starts again from ``first``.
    """

    __slots__ = ("_next", "cap", "factor", "first", "jitter")

    def __init__(self, first: float = 0.1, cap: float = 5.0, *, factor: float = 2.0,
                 jitter: float = 0.2) -> None:
        if first <= 0 or cap < first or factor < 1 or not 0 <= jitter < 1:
            raise ValueError("need 0 < first <= cap, factor >= 1 and 0 <= jitter < 1")
        self.first = first
        self.cap = cap
        self.factor = factor
        self.jitter = jitter
        self._next = first

    def next(self) -> float:
        """The next wait in seconds (and advance)."""
        base = self._next
        self._next = min(self.cap, self._next * self.factor)
        return base * (1.0 - random.uniform(0.0, self.jitter)) if self.jitter else base

    def reset(self) -> None:
        self._next = self.first

    def describe(self) -> str:
        """The waits as a log line says them: ``every 0.1-5 s`` (``every 2 s`` when fixed)."""
        if self.cap == self.first or self.factor == 1:
            return f"every {self.first:g} s"
        return f"every {self.first:g}-{self.cap:g} s"

    async def sleep(self) -> None:
        """Sleep for :meth:`next` seconds."""
        await asyncio.sleep(self.next())


class FailureWindow:
    """How long something has been failing without a success in between.

    ``failed()`` records a failure and returns the seconds since the first
    failure of the current run; ``ok()`` ends the run. ``expired`` is true once
    a run lasted longer than ``limit`` seconds. A loop that gives up by this
    rule asks :meth:`give_up` after each failure.
    """

    __slots__ = ("_clock", "_since", "limit")

    def __init__(self, limit: float = DEFAULT_RESTART_AFTER,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._since: float | None = None

    @classmethod
    def until(cls, timeout: float, clock: Callable[[], float] = time.monotonic) -> FailureWindow:
        """The window of an ``error_timeout``-like option: ``timeout`` s, ``0`` never expires."""
        return cls(timeout if timeout > 0 else math.inf, clock)

    @property
    def failing(self) -> bool:
        return self._since is not None

    def failed(self) -> float:
        now = self._clock()
        if self._since is None:
            self._since = now
        return now - self._since

    def ok(self) -> None:
        self._since = None

    def elapsed(self) -> float:
        """Seconds failing so far (0 when not failing)."""
        return 0.0 if self._since is None else self._clock() - self._since

    @property
    def expired(self) -> bool:
        return self._since is not None and self._clock() - self._since > self.limit

    def give_up(self, call: str, fatal: bool = False) -> str | None:
        """Record a failure of ``call``. ``None`` while it may be retried; when ``fatal``, or
        once failing for ``limit`` s or more, why to give up (``"<call> failed"``, or
        ``"<call> failing for <n>s"`` after a second or more), and the window starts again."""
        took = self.failed()
        if took < self.limit and not fatal:
            return None
        self._since = None
        return f"{call} failing for {took:.0f}s" if took >= 1 else f"{call} failed"
